// Opens the database: the configured PostgreSQL, or the embedded one, always through a `pg` Pool
// under kysely, with connect and statement timeouts so no caller waits forever.

import { promises as fs } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Kysely, PostgresDialect } from 'kysely'
import { FileMigrationProvider, Migrator, type MigrationResultSet } from 'kysely/migration'
import pg from 'pg'
import { startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres.ts'
import type { Database } from './schema.ts'

export interface DatabaseSettings {
  databaseUrl: string | undefined
  dataDir: string
  dbPoolMax: number
  dbConnectTimeoutMs: number
  dbStatementTimeoutMs: number
}

export interface DatabaseHandle {
  db: Kysely<Database>
  pool: pg.Pool
  connectionString: string
  /** True when running on the embedded PGlite. */
  embedded: boolean
  close(): Promise<void>
}

interface Logger {
  error(obj: object, msg: string): void
}

export async function openDatabase(settings: DatabaseSettings, log: Logger): Promise<DatabaseHandle> {
  let embeddedServer: EmbeddedPostgres | undefined
  let connectionString = settings.databaseUrl
  if (connectionString === undefined) {
    embeddedServer = await startEmbeddedPostgres(settings.dataDir)
    connectionString = embeddedServer.connectionString
  }
  const embedded = embeddedServer !== undefined

  const pool = new pg.Pool({
    connectionString,
    // The embedded server multiplexes every socket onto ONE backend session: one connection is the
    // only honest size (two would share SET state and interleave transactions).
    max: embedded ? 1 : settings.dbPoolMax,
    connectionTimeoutMillis: settings.dbConnectTimeoutMs,
    idleTimeoutMillis: 30_000,
    // statement_timeout bounds the server side on real PostgreSQL; query_timeout bounds the client
    // side, which is the only bound PGlite honours.
    statement_timeout: settings.dbStatementTimeoutMs,
    query_timeout: settings.dbStatementTimeoutMs + 1_000,
    application_name: 'variant-origin',
  })
  // Related pages are a filtered nearest-neighbour query over the pages' HNSW index: it keeps scanning
  // until enough rows pass the vertical filter (pgvector 0.8 iterative scans), instead of returning
  // fewer links. Variants need no index search: a page's scope is a few rows (migration 0006).
  // Queued before any other query on the new client, so no query runs without it.
  pool.on('connect', (client) => {
    client.query("SET hnsw.iterative_scan = 'strict_order'").catch((err: unknown) => log.error({ err }, 'could not set hnsw.iterative_scan on a new connection'))
  })
  // An idle client losing its connection must not crash the process.
  pool.on('error', (err) => log.error({ err }, 'idle PostgreSQL client failed'))

  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })
  return {
    db,
    pool,
    connectionString,
    embedded,
    async close() {
      if (!pool.ended) await db.destroy() // ends the pool (a test may have ended it to simulate an outage)
      await embeddedServer?.stop()
    },
  }
}

export const MIGRATION_FOLDER = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../migrations')

export function createMigrator(db: Kysely<Database>): Migrator {
  return new Migrator({
    db,
    provider: new FileMigrationProvider({ fs, path, migrationFolder: MIGRATION_FOLDER }),
  })
}

export async function migrateToLatest(db: Kysely<Database>): Promise<MigrationResultSet> {
  const result = await createMigrator(db).migrateToLatest()
  if (result.error !== undefined) {
    const failed = result.results?.find((r) => r.status === 'Error')
    const cause = result.error instanceof Error ? result.error : new Error(String(result.error))
    const hint = /extension "vector"/.test(cause.message)
      ? ' (this PostgreSQL has no pgvector: use a server with the extension installed, such as the pgvector/pgvector image, or unset DATABASE_URL to run the embedded database)'
      : ''
    throw new Error(`migration ${failed?.migrationName ?? '(unknown)'} failed: ${cause.message}${hint}`)
  }
  return result
}

/** Names of migrations in migrations/ that this database has not applied yet. */
export async function pendingMigrations(db: Kysely<Database>): Promise<string[]> {
  const migrations = await createMigrator(db).getMigrations()
  return migrations.filter((m) => m.executedAt === undefined).map((m) => m.name)
}
