// Opens the database: the configured PostgreSQL, or the embedded one, always through a `pg` Pool
// under kysely, with connect and statement timeouts so no caller waits forever; and the read replicas
// of DATABASE_READ_URL, behind the read router (src/db/replica-router.ts).

import { promises as fs } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { Kysely, PostgresDialect } from 'kysely'
import { FileMigrationProvider, Migrator, type MigrationResultSet } from 'kysely/migration'
import pg from 'pg'
import { namePreparedStatements } from './prepared-statements.ts'
import { startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres.ts'
import { describeTarget, ReplicaSet } from './replica-router.ts'
import type { Database } from './schema.ts'

export interface DatabaseSettings {
  databaseUrl: string | undefined
  dataDir: string
  dbPoolMax: number
  dbConnectTimeoutMs: number
  dbStatementTimeoutMs: number
  /** DATABASE_READ_URL: streaming replicas of databaseUrl (never with the embedded database). */
  databaseReadUrls?: readonly string[]
  dbReplicaMaxLagSeconds?: number
  dbReplicaCheckIntervalMs?: number
  /**
   * DB_PREPARED_STATEMENTS: statements marked PREPARED go as named statements (parsed and planned once
   * per connection). Off for a pooler that cannot keep them (PgBouncer in transaction mode before 1.21).
   * Never on the embedded database, whose sockets share one session.
   */
  dbPreparedStatements?: boolean
}

export interface DatabaseHandle {
  /** The primary: every write, and every read that must see a write (admin, ingest, warm-up, migrations). */
  db: Kysely<Database>
  /**
   * The render path's reads (pages, variants, related pages, the index, sitemaps): a healthy replica when
   * DATABASE_READ_URL names any, else the primary. Without replicas it is `db` itself.
   */
  read: Kysely<Database>
  pool: pg.Pool
  connectionString: string
  /** True when running on the embedded PGlite. */
  embedded: boolean
  /** The replicas, their state and the router's counts; undefined without DATABASE_READ_URL. */
  replicas: ReplicaSet | undefined
  /** Queries run on the primary (through either Kysely) since start. */
  primaryQueries(): number
  /**
   * After a write: waits (up to DB_REPLICA_MAX_LAG_SECONDS) until the replicas in use have replayed it,
   * so what is rendered next from them shows it. Nothing to wait for without replicas.
   */
  waitForReplicas(): Promise<void>
  close(): Promise<void>
}

interface Logger {
  error(obj: object, msg: string): void
  warn?(obj: object, msg: string): void
  info?(obj: object, msg: string): void
}

function createPool(connectionString: string, settings: DatabaseSettings, embedded: boolean, log: Logger): pg.Pool {
  const prepare = !embedded && settings.dbPreparedStatements !== false
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
  // Queued before any other query on the new client, so no query runs without it (a replica too: a
  // session setting, allowed on a hot standby).
  pool.on('connect', (client) => {
    // A checked-out client whose server goes away (a restart, a replica stopped under a query) emits
    // 'error' besides failing its query, and pg-pool listens only while a client is idle: unheard, that
    // event would end the process. The query's failure reaches its caller; an idle client's is logged below.
    client.on('error', () => undefined)
    if (prepare) namePreparedStatements(client)
    client.query("SET hnsw.iterative_scan = 'strict_order'").catch((err: unknown) => log.error({ err }, 'could not set hnsw.iterative_scan on a new connection'))
  })
  // An idle client losing its connection must not crash the process.
  pool.on('error', (err) => log.error({ err }, 'idle PostgreSQL client failed'))
  return pool
}

export async function openDatabase(settings: DatabaseSettings, log: Logger): Promise<DatabaseHandle> {
  const readUrls = settings.databaseReadUrls ?? []
  // loadConfig refuses this too; a caller building its own settings gets the same answer.
  if (settings.databaseUrl === undefined && readUrls.length > 0) throw new Error('DATABASE_READ_URL needs DATABASE_URL: the embedded database has no replicas')
  let embeddedServer: EmbeddedPostgres | undefined
  let connectionString = settings.databaseUrl
  if (connectionString === undefined) {
    embeddedServer = await startEmbeddedPostgres(settings.dataDir)
    connectionString = embeddedServer.connectionString
  }
  const embedded = embeddedServer !== undefined

  const pool = createPool(connectionString, settings, embedded, log)
  // Counted here (every query through the primary's Kysely) for variant_origin_db_queries_total.
  let primaryQueries = 0
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool }),
    log: () => {
      primaryQueries++
    },
  })
  let replicas: ReplicaSet | undefined
  if (readUrls.length > 0) {
    replicas = new ReplicaSet({
      primaryPool: pool,
      replicas: readUrls.map((url) => ({ pool: createPool(url, settings, false, log), target: describeTarget(url) })),
      maxLagSeconds: settings.dbReplicaMaxLagSeconds ?? 5,
      checkIntervalMs: settings.dbReplicaCheckIntervalMs ?? 2_000,
      probeTimeoutMs: settings.dbConnectTimeoutMs,
      log,
    })
    // The first probe before anything reads: a replica that is down at start is known down (the
    // origin starts anyway, reading from the primary, and readiness says degraded).
    await replicas.start()
  }
  return {
    db,
    read: replicas?.read ?? db,
    pool,
    connectionString,
    embedded,
    replicas,
    primaryQueries: () => primaryQueries + (replicas?.primaryQueries ?? 0),
    waitForReplicas: async () => {
      await replicas?.waitForReplay()
    },
    async close() {
      await replicas?.close()
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
