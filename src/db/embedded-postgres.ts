// Starts the embedded PostgreSQL in a child process and hands back a connection string, so the
// origin reaches it through the same `pg` + kysely code path as any real PostgreSQL.

import { fork } from 'node:child_process'
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import path, { resolve } from 'node:path'
import type { ChildMessage } from './embedded-postgres-child.ts'

export interface EmbeddedPostgres {
  connectionString: string
  stop(): Promise<void>
}

const CHILD_ENTRY = new URL('./embedded-postgres-child.ts', import.meta.url)

const LOCK_FILE = 'variant-origin.lock'

/**
 * Two processes opening one PGlite directory would corrupt it: the first one holds a lock file with
 * its pid; a lock whose process is gone is taken over.
 */
function acquireLock(dir: string): void {
  const lockPath = path.join(dir, LOCK_FILE)
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lockPath, 'wx')
      writeSync(fd, String(process.pid))
      closeSync(fd)
      return
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const holder = Number(readFileSync(lockPath, 'utf8').trim())
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isAlive(holder)) {
        throw new Error(
          `the embedded database in ${dir} is in use by process ${holder} (a running npm start?); stop it first, or send the work to its admin API (npm run ingest -- FILE --url http://127.0.0.1:3000)`,
        )
      }
      rmSync(lockPath, { force: true })
    }
  }
  throw new Error(`could not lock the embedded database directory ${dir}`)
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function releaseLock(dir: string): void {
  const lockPath = path.join(dir, LOCK_FILE)
  try {
    if (Number(readFileSync(lockPath, 'utf8').trim()) === process.pid) rmSync(lockPath, { force: true })
  } catch {
    // already gone
  }
}

export async function startEmbeddedPostgres(dataDir: string, startTimeoutMs = 60_000): Promise<EmbeddedPostgres> {
  const inMemory = dataDir.startsWith('memory://')
  const location = inMemory ? dataDir : resolve(dataDir)
  if (!inMemory) {
    mkdirSync(location, { recursive: true })
    acquireLock(location)
  }

  const child = fork(CHILD_ENTRY, [], {
    env: { ...process.env, EMBEDDED_PG_DATA_DIR: location },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'json',
  })

  const port = await new Promise<number>((resolvePort, reject) => {
    if (!inMemory) child.once('exit', () => releaseLock(location))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`embedded PostgreSQL did not start within ${startTimeoutMs} ms (data dir ${location})`))
    }, startTimeoutMs)
    child.once('message', (message: ChildMessage) => {
      clearTimeout(timer)
      if (message.type === 'ready') resolvePort(message.port)
      else reject(new Error(`embedded PostgreSQL failed to start (data dir ${location}): ${message.message}`))
    })
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`embedded PostgreSQL exited during start (code ${code}, signal ${signal}, data dir ${location})`))
    })
  })

  return {
    connectionString: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((done) => child.once('exit', () => done()))
        child.send('stop')
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
        await exited
        clearTimeout(timer)
      }
      if (!inMemory) releaseLock(location)
    },
  }
}
