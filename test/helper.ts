// Builds the real app (the same buildApp the server uses) on a throwaway in-memory embedded
// PostgreSQL and a dedicated Redis database number, and closes it when the test ends.
//
// On the native pass (TEST_DATABASE_URL set, see test/native-pass.ts) the app gets a fresh database on
// that server instead, migrated and loaded with the demo site exactly as the embedded default is, and
// dropped when the test ends: the first app of a file (or the file's synchronous testConfig callers)
// gets the file's database, created when the file imports this helper; every further app its own. An
// app given a DATABASE_URL (a second instance on the first one's database) keeps it.

import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../app.ts'
import { deleteKeysWithPrefix } from './support/redis-keys.ts'
import { createTestDatabase, nativeServerUrl, type TestDatabase } from './support/native-postgres.ts'
import { loadConfig, type Config } from '../src/config.ts'

/** Redis database 13 is this project's test database; tests never touch database 0. */
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/13'

/** The real PostgreSQL of the native pass; undefined on the embedded pass. */
export const NATIVE_DATABASE_SERVER = nativeServerUrl()

/** This file's database on the native pass (dropped last, after every app of the file has closed). */
const fileDatabase: TestDatabase | undefined = NATIVE_DATABASE_SERVER === undefined ? undefined : await createTestDatabase(NATIVE_DATABASE_SERVER)
if (fileDatabase !== undefined) t.teardown(() => fileDatabase.drop()) // the root's first teardown: it runs last
let fileDatabaseTaken = false

/** The database settings an app gets on the native pass when the test names none: as the embedded default, demo site included. */
function nativeDatabaseEnv(env: Record<string, string>, database: TestDatabase): Record<string, string> {
  return { DATABASE_URL: database.url, SEED_DEMO: env.SEED_DEMO ?? 'true' }
}

export function testConfig(env: Record<string, string> = {}): Config {
  let database: Record<string, string> = {}
  if (fileDatabase !== undefined && env.DATABASE_URL === undefined && env.DATA_DIR === undefined) {
    fileDatabaseTaken = true
    database = nativeDatabaseEnv(env, fileDatabase)
  }
  return loadConfig({
    DATA_DIR: 'memory://',
    REDIS_URL: TEST_REDIS_URL,
    LOG_LEVEL: 'silent',
    PUBLIC_BASE_URL: 'https://www.example.test',
    REDIS_KEY_PREFIX: `vo-test-${process.pid}:`,
    // A test drives its app from the same event loop, often in long promise chains that never yield (thousands
    // of injected requests); under CI's load that reads as a stalled loop and the app sheds the next request
    // with a 503. Shedding is load-shedding.test.ts's subject, which sets its own thresholds.
    LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS: '0',
    ...env,
    ...database,
  })
}

interface Teardown {
  teardown(fn: () => unknown): void
}

export async function buildTestApp(t: Teardown, env: Record<string, string> = {}): Promise<FastifyInstance> {
  // Native pass: the file's database for its first app, a fresh one (dropped after the app closes) for every other.
  let own: TestDatabase | undefined
  if (NATIVE_DATABASE_SERVER !== undefined && env.DATABASE_URL === undefined && env.DATA_DIR === undefined) {
    if (!fileDatabaseTaken) {
      fileDatabaseTaken = true
      env = { ...env, ...nativeDatabaseEnv(env, fileDatabase!) }
    } else {
      own = await createTestDatabase(NATIVE_DATABASE_SERVER)
      env = { ...env, ...nativeDatabaseEnv(env, own) }
    }
  }
  let config: Config
  let app: FastifyInstance
  try {
    config = testConfig(env)
    app = await buildApp(config, { logger: false })
  } catch (err) {
    await own?.drop()
    throw err
  }
  t.teardown(async () => {
    await app.close()
    if (config.redisUrl !== undefined) await deleteKeysWithPrefix(config.redisUrl, config.redisKeyPrefix)
    await own?.drop()
  })
  await app.ready()
  return app
}

export interface DirectDatabase {
  /** For openDatabase(): the native database's URL, or undefined (the embedded database in `dataDir`). */
  databaseUrl: string | undefined
  dataDir: string
  /** For a CLI the test runs: DATABASE_URL, or DATA_DIR. */
  env: Record<string, string>
}

/**
 * The database of a test that opens it itself (openDatabase) or hands it to a CLI: on the native pass a
 * fresh, empty database (dropped after `t`, so open it after this call and close it in a later teardown),
 * else the embedded one in `dataDir`.
 */
export async function directDatabase(t: Teardown, dataDir = 'memory://'): Promise<DirectDatabase> {
  if (NATIVE_DATABASE_SERVER === undefined) return { databaseUrl: undefined, dataDir, env: { DATA_DIR: dataDir } }
  const database = await createTestDatabase(NATIVE_DATABASE_SERVER)
  t.teardown(() => database.drop())
  return { databaseUrl: database.url, dataDir, env: { DATABASE_URL: database.url } }
}
