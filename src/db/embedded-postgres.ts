// Starts the embedded PostgreSQL in a child process and hands back a connection string, so the
// origin reaches it through the same `pg` + kysely code path as any real PostgreSQL.

import { fork } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { resolve } from 'node:path'
import type { ChildMessage } from './embedded-postgres-child.ts'

export interface EmbeddedPostgres {
  connectionString: string
  stop(): Promise<void>
}

const CHILD_ENTRY = new URL('./embedded-postgres-child.ts', import.meta.url)

export async function startEmbeddedPostgres(dataDir: string, startTimeoutMs = 60_000): Promise<EmbeddedPostgres> {
  const inMemory = dataDir.startsWith('memory://')
  const location = inMemory ? dataDir : resolve(dataDir)
  if (!inMemory) mkdirSync(location, { recursive: true })

  const child = fork(CHILD_ENTRY, [], {
    env: { ...process.env, EMBEDDED_PG_DATA_DIR: location },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'json',
  })

  const port = await new Promise<number>((resolvePort, reject) => {
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
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise<void>((done) => child.once('exit', () => done()))
      child.send('stop')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    },
  }
}
