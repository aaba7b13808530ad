// The native PostgreSQL pass (test/native-pass.ts): whether a real PostgreSQL with pgvector answers at
// TEST_DATABASE_URL, and the throwaway databases the tests get on it (one per app or direct use, each
// created empty and dropped with FORCE when its test ends, so no file sees another's rows).

import { basename } from 'node:path'
import pg from 'pg'

/** Where the native pass looks when TEST_DATABASE_URL is unset. */
export const DEFAULT_TEST_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/postgres'

/** pgvector releases before this lack `hnsw.iterative_scan`, which every connection of the origin sets. */
const MIN_PGVECTOR = [0, 8] as const

/** Names of the databases the tests create: `vo_test_<pid>_<n>_<file>`. The pid tells a leftover of a dead process. */
const PREFIX = 'vo_test_'

/**
 * The server the native pass runs on: TEST_DATABASE_URL, or undefined on the embedded pass (unset or
 * empty). `npm test` runs the embedded pass with it removed from the environment.
 */
export function nativeServerUrl(): string | undefined {
  const url = process.env.TEST_DATABASE_URL
  return url === undefined || url === '' ? undefined : url
}

/** Why a test that only a real server can show is skipped on the embedded pass (tap's `skip` option), or false on the native pass. */
export function skipUnlessNative(): string | false {
  return nativeServerUrl() === undefined ? 'needs a real PostgreSQL: TEST_DATABASE_URL is unset (npm run test:native)' : false
}

/** Why a test that needs the embedded database (pausing or killing its child process...) is skipped on the native pass, or false on the embedded pass. */
export function skipOnNative(why: string): string | false {
  return nativeServerUrl() === undefined ? false : `embedded database only: ${why}`
}

/** A connection string with the password masked, for messages. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password !== '') parsed.password = '***'
    return parsed.toString()
  } catch {
    return '(not a URL)'
  }
}

/** The same server and credentials, another database. */
export function databaseUrlFor(serverUrl: string, database: string): string {
  const url = new URL(serverUrl)
  url.pathname = `/${database}`
  return url.toString()
}

export type NativeProbe = { ok: true; server: string; pgvector: string } | { ok: false; reason: string }

/**
 * Whether the native pass can run at `serverUrl`: PostgreSQL answers within `timeoutMs`, pgvector 0.8+
 * is installed (available to CREATE EXTENSION, which each test database's first migration runs), and
 * the role may create databases. `reason` says what is missing and how to get it.
 */
export async function probeNativePostgres(serverUrl: string, timeoutMs = 3_000): Promise<NativeProbe> {
  if (!/^postgres(ql)?:\/\//.test(serverUrl) || redactUrl(serverUrl) === '(not a URL)') {
    return { ok: false, reason: 'TEST_DATABASE_URL is not a postgres:// URL' }
  }
  const client = new pg.Client({ connectionString: serverUrl, connectionTimeoutMillis: timeoutMs, query_timeout: timeoutMs, application_name: 'variant-origin-tests' })
  client.on('error', () => undefined)
  try {
    await client.connect()
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    const why = [e.code, e.message].filter((part) => part !== undefined && part !== '').join(': ')
    return { ok: false, reason: `cannot connect to PostgreSQL at ${redactUrl(serverUrl)} (${why}; see README, "Tests on a native PostgreSQL")` }
  }
  try {
    const { rows } = await client.query<{ server: string; vector: string | null; createdb: boolean }>(
      `select current_setting('server_version') as server,
              (select default_version from pg_available_extensions where name = 'vector') as vector,
              (select rolcreatedb or rolsuper from pg_roles where rolname = current_user) as createdb`,
    )
    const { server, vector, createdb } = rows[0]!
    if (vector === null) {
      return { ok: false, reason: `PostgreSQL ${server} at ${redactUrl(serverUrl)} has no pgvector (install it: bash ../shared/scripts/install-pgvector.sh, see README "Tests on a native PostgreSQL")` }
    }
    const [major = 0, minor = 0] = vector.split('.').map(Number)
    if (major < MIN_PGVECTOR[0] || (major === MIN_PGVECTOR[0] && minor < MIN_PGVECTOR[1])) {
      return { ok: false, reason: `pgvector ${vector} at ${redactUrl(serverUrl)} is older than ${MIN_PGVECTOR.join('.')} (the origin sets hnsw.iterative_scan)` }
    }
    if (!createdb) return { ok: false, reason: `the role of ${redactUrl(serverUrl)} may not create databases (each test app gets one of its own)` }
    return { ok: true, server, pgvector: vector }
  } catch (err) {
    return { ok: false, reason: `PostgreSQL at ${redactUrl(serverUrl)} failed the probe: ${(err as Error).message}` }
  } finally {
    await client.end().catch(() => undefined)
  }
}

async function onServer<T>(serverUrl: string, work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: serverUrl, connectionTimeoutMillis: 10_000, application_name: 'variant-origin-tests' })
  client.on('error', () => undefined)
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end().catch(() => undefined)
  }
}

let created = 0

export interface TestDatabase {
  name: string
  url: string
  drop(): Promise<void>
}

/**
 * An empty database on the server, named after this process, a counter and `label` (the test file),
 * for one app or one direct use; `drop()` removes it, whoever is still connected (WITH (FORCE)), once.
 */
export async function createTestDatabase(serverUrl: string, label = basename(process.argv[1] ?? 'test')): Promise<TestDatabase> {
  const slug = label.replace(/\.test\.ts$|\.ts$/, '').toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_+|_+$/g, '')
  // PostgreSQL truncates identifiers at 63 bytes; the slug is only a reader's hint.
  const name = `${PREFIX}${process.pid}_${++created}_${slug}`.slice(0, 63)
  await onServer(serverUrl, (client) => client.query(`CREATE DATABASE "${name}"`))
  let dropped: Promise<void> | undefined
  return {
    name,
    url: databaseUrlFor(serverUrl, name),
    drop: () => (dropped ??= onServer(serverUrl, async (client) => void (await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)))),
  }
}

/** A fresh database for `t`'s duration (dropped in its teardown). */
export async function testDatabase(serverUrl: string, t: { teardown(fn: () => unknown): void }, label?: string): Promise<TestDatabase> {
  const database = await createTestDatabase(serverUrl, label)
  t.teardown(() => database.drop())
  return database
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Drops the test databases whose process is gone (a test file killed by its timeout never ran its
 * teardown); those of running processes, another pass's included, are left alone. Returns the names dropped.
 */
export async function dropLeftoverTestDatabases(serverUrl: string): Promise<string[]> {
  return onServer(serverUrl, async (client) => {
    const { rows } = await client.query<{ datname: string }>(`select datname from pg_database where datname like $1`, [`${PREFIX.replace(/_/g, '\\_')}%`])
    const gone = rows
      .map((r) => ({ name: r.datname, pid: Number(/^vo_test_(\d+)_\d+_/.exec(r.datname)?.[1]) }))
      .filter(({ pid }) => Number.isInteger(pid) && pid > 0 && !alive(pid))
      .map(({ name }) => name)
    for (const name of gone) await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
    return gone
  })
}
