// A private PostgreSQL primary and a streaming replica of it, from the PostgreSQL binaries on this machine:
// `initdb` on a free port (wal_level=replica, trust on 127.0.0.1), `pg_basebackup -R` of it to a second
// directory started on another port (hot standby), pgvector created on the primary. Both are stopped with
// `pg_ctl stop -m immediate` and their directories removed at teardown. initdb and postgres refuse to
// run as root, so as root they run as the `postgres` OS user (runuser) in a directory it owns.

import { spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { appendFile, chown, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import pg from 'pg'
import { freePort } from './net.ts'

/** Where the PostgreSQL binaries are (PG_BIN overrides; the Debian layout of PostgreSQL 15 by default). */
export const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin'
const RUN_AS = 'postgres'
const BINARIES = ['initdb', 'pg_ctl', 'pg_basebackup', 'postgres', 'pg_config']

export interface PgNode {
  port: number
  dataDir: string
  /** postgres://postgres@127.0.0.1:<port>/origin */
  url: string
  /** A query as the superuser on this node's `origin` database (its own short-lived connection). */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>
  start(): Promise<void>
  /** pg_ctl stop -m immediate: the server is gone at once, no shutdown checkpoint (a crash, as far as clients see). */
  stop(): Promise<void>
}

export interface PgReplicaCluster {
  primary: PgNode
  replica: PgNode
}

/** Why a replica cluster cannot be built here (binaries, pgvector, no `postgres` user to run them as root), or undefined. */
export function replicaClusterUnavailable(): string | undefined {
  const missing = BINARIES.filter((name) => !existsSync(path.join(PG_BIN, name)))
  if (missing.length > 0) return `PostgreSQL binaries missing in ${PG_BIN} (set PG_BIN): ${missing.join(', ')}`
  const sharedir = spawnSync(path.join(PG_BIN, 'pg_config'), ['--sharedir'], { encoding: 'utf8' }).stdout?.trim()
  if (sharedir === undefined || !existsSync(path.join(sharedir, 'extension', 'vector.control'))) return `pgvector is not installed into the PostgreSQL of ${PG_BIN} (no extension/vector.control under ${sharedir ?? 'its share directory'})`
  if (process.getuid?.() === 0 && spawnSync('id', ['-u', RUN_AS]).status !== 0) return `running as root, and there is no ${RUN_AS} user to run initdb and postgres as`
  return undefined
}

function ids(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const uid = Number(spawnSync('id', ['-u', RUN_AS], { encoding: 'utf8' }).stdout.trim())
  const gid = Number(spawnSync('id', ['-g', RUN_AS], { encoding: 'utf8' }).stdout.trim())
  return { uid, gid }
}

/** Runs a PostgreSQL binary to its exit (as the postgres user when this process is root); throws with its output on failure. */
function run(binary: string, args: string[], timeoutMs = 60_000): Promise<string> {
  const command = path.join(PG_BIN, binary)
  const [file, argv] = process.getuid?.() === 0 ? ['runuser', ['-u', RUN_AS, '--', command, ...args]] : [command, args]
  return new Promise((resolve, reject) => {
    // LC_ALL=C: initdb wants a locale the machine has; PG* variables of the caller must not redirect the tools.
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PG')))
    const child = spawn(file as string, argv as string[], { env: { ...env, LC_ALL: 'C' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (c) => (output += c))
    child.stderr.on('data', (c) => (output += c))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      if (code === 0) resolve(output)
      else reject(new Error(`${binary} ${args.join(' ')} failed (${signal ?? `exit ${code}`}):\n${output}`))
    })
  })
}

function node(root: string, name: string, port: number): PgNode {
  const dataDir = path.join(root, name)
  const url = `postgres://postgres@127.0.0.1:${port}/origin`
  let running = false
  return {
    port,
    dataDir,
    url,
    async query(text, values) {
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000 })
      client.on('error', () => undefined) // a server stopped under the query: the query fails, the process goes on
      await client.connect()
      try {
        return await client.query(text, values)
      } finally {
        await client.end()
      }
    },
    async start() {
      await run('pg_ctl', ['-D', dataDir, '-l', path.join(root, `${name}.log`), '-w', '-t', '60', 'start'])
      running = true
    },
    async stop() {
      if (!running) return
      running = false
      await run('pg_ctl', ['-D', dataDir, '-m', 'immediate', '-w', '-t', '30', 'stop']).catch(() => undefined)
    },
  }
}

/** Settings of both servers: small, quick, local only. `fsync=off`: a test cluster survives nothing anyway. */
const serverConfig = (port: number, socketDir: string): string =>
  [
    '',
    `port = ${port}`,
    "listen_addresses = '127.0.0.1'",
    `unix_socket_directories = '${socketDir}'`,
    'wal_level = replica',
    'max_wal_senders = 5',
    'hot_standby = on',
    'hot_standby_feedback = on',
    'wal_receiver_status_interval = 1s',
    'fsync = off',
    'full_page_writes = off',
    'shared_buffers = 16MB',
    'max_connections = 60',
    "log_min_messages = 'warning'",
    '',
  ].join('\n')

/**
 * Builds the pair and registers its teardown. The `origin` database (with pgvector) exists on the
 * primary before the base backup, so the replica starts with it.
 */
export async function pgReplicaCluster(t: { teardown(fn: () => unknown): void }): Promise<PgReplicaCluster> {
  const root = await mkdtemp(path.join(tmpdir(), 'vo-pg-replica-'))
  const owner = ids()
  if (owner !== undefined) await chown(root, owner.uid, owner.gid)
  const [primaryPort, replicaPort] = [await freePort(), await freePort()]
  const primary = node(root, 'primary', primaryPort)
  const replica = node(root, 'replica', replicaPort)
  t.teardown(async () => {
    await Promise.all([replica.stop(), primary.stop()])
    await rm(root, { recursive: true, force: true })
  })

  await run('initdb', ['-D', primary.dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions'])
  // initdb's pg_hba.conf already admits replication connections from 127.0.0.1 (with --auth=trust).
  await appendFile(path.join(primary.dataDir, 'postgresql.conf'), serverConfig(primaryPort, root))
  await primary.start()
  const admin = new pg.Client({ connectionString: `postgres://postgres@127.0.0.1:${primaryPort}/postgres` })
  await admin.connect()
  await admin.query('CREATE DATABASE origin')
  await admin.end()
  await primary.query('CREATE EXTENSION vector')

  // -R writes standby.signal and primary_conninfo; -c fast does not wait for a spread checkpoint.
  await run('pg_basebackup', ['-D', replica.dataDir, '-h', '127.0.0.1', '-p', String(primaryPort), '-U', 'postgres', '-R', '-X', 'stream', '-c', 'fast', '--no-sync'])
  // The copied postgresql.conf names the primary's port; a later line wins.
  await appendFile(path.join(replica.dataDir, 'postgresql.conf'), `\nport = ${replicaPort}\n`)
  await replica.start()
  const recovery = await replica.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')
  if (recovery.rows[0]?.r !== true) throw new Error(`the replica on port ${replicaPort} is not in recovery:\n${await readFile(path.join(root, 'replica.log'), 'utf8').catch(() => '')}`)
  return { primary, replica }
}
