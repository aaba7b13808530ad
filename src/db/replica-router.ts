// Read replicas (DATABASE_READ_URL). `ReplicaSet.read` is a Kysely for the render path: each query it
// runs goes to a replica that answered its last probe, lags by at most DB_REPLICA_MAX_LAG_SECONDS and has
// replayed this instance's last write (round robin among those), else to the primary; a replica that fails
// under a query with a connection error is marked down and the query is asked of the primary once. Every
// write, and every read that must see a write (admin, ingest, warm-up, migrations), uses the primary's own
// Kysely (`DatabaseHandle.db`), never this one.
//
// Why not kysely-replication (0.3.0, the Kysely organization's package): it routes by the kind of query,
// not by the caller, and sends every raw `sql` query to the primary (the sitemaps, related pages and
// variant lookups are raw SQL, so most of the render path would stay on the primary); its strategy must
// name a replica (no "none is healthy: use the primary"), it has no lag or health checks and no retry on
// the primary; and its peer range is kysely ^0.28 (this project runs 0.29). What it would contribute (a
// driver that picks a connection per query) is the ~100 lines of RoutedConnection below.

import { type CompiledQuery, type DatabaseConnection, type Driver, type QueryResult, type TransactionSettings, Kysely, PostgresAdapter, PostgresDriver, PostgresIntrospector, PostgresQueryCompiler } from 'kysely'
import type pg from 'pg'
import { isConnectionError } from './connection-errors.ts'
import type { Database } from './schema.ts'
import { withTimeout } from '../timeout.ts'

export type ReplicaStatus = 'ok' | 'lagging' | 'down'

/** One replica as /health/ready and /metrics report it. */
export interface ReplicaReport {
  /** Its position in DATABASE_READ_URL, from 0 (the `replica` label of the metrics). */
  replica: string
  /** host:port/database, never the credentials. */
  target: string
  status: ReplicaStatus
  /** Replay lag at the last probe, in seconds; null when unknown (down, or no transaction replayed yet). */
  lagSeconds: number | null
  detail?: string
}

interface Logger {
  error(obj: object, msg: string): void
  warn?(obj: object, msg: string): void
  info?(obj: object, msg: string): void
}

export interface ReplicaSetOptions {
  primaryPool: pg.Pool
  replicas: ReadonlyArray<{ pool: pg.Pool; target: string }>
  maxLagSeconds: number
  checkIntervalMs: number
  /** Bound on one probe (connect included). */
  probeTimeoutMs: number
  log: Logger
}

interface Replica {
  name: string
  target: string
  pool: pg.Pool
  driver: Driver
  /** Answered its last probe (and no query failed on it with a connection error since). */
  up: boolean
  lagSeconds: number | null
  /** WAL position replayed, at the last probe or catch-up check. */
  replayLsn: bigint | null
  detail: string | undefined
  queries: number
  status: ReplicaStatus | undefined
}

/**
 * Seconds the replica's replay is behind: 0 when it has replayed all it received (an idle primary, or a
 * primary that is gone: what the replica holds is all there is), else the age of the last transaction it
 * replayed. Its replayed position, for read-your-writes. A server that is not in recovery (a promoted
 * replica) lags by nothing.
 */
const PROBE_SQL = `SELECT pg_is_in_recovery() AS recovery,
  CASE WHEN NOT pg_is_in_recovery() THEN 0
       WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
       ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END::float8 AS lag,
  (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS lsn`
const REPLAYED_SQL = 'SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS lsn'
/** How often a write's catch-up wait asks the replicas how far they have replayed. */
const CATCH_UP_POLL_MS = 10

/** A pg_lsn ("16/B374D848") as a number that compares. */
export function parseLsn(text: string | null | undefined): bigint | null {
  const match = /^([0-9A-F]{1,8})\/([0-9A-F]{1,8})$/i.exec(text ?? '')
  return match === null ? null : (BigInt(`0x${match[1]}`) << 32n) + BigInt(`0x${match[2]}`)
}

/** host:port/database of a connection string, without user or password. */
export function describeTarget(connectionString: string): string {
  try {
    const url = new URL(connectionString)
    return `${url.hostname}${url.port === '' ? '' : `:${url.port}`}${url.pathname}`
  } catch {
    return '(unparsable URL)'
  }
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err))

export class ReplicaSet {
  /** The render path's Kysely: a healthy replica, else the primary. */
  readonly read: Kysely<Database>
  /** Reads the router sent to the primary: no replica eligible, or retried there after a connection error. */
  readonly fallbacks = { unavailable: 0, error: 0 }
  /** Queries the router ran on the primary (its fallbacks). */
  primaryQueries = 0
  private readonly replicas: Replica[]
  private readonly primaryDriver: Driver
  private readonly primaryPool: pg.Pool
  private readonly maxLagSeconds: number
  private readonly checkIntervalMs: number
  private readonly probeTimeoutMs: number
  private readonly log: Logger
  /** The primary's WAL position after this instance's last write: a replica serves only once it has replayed it. */
  private requiredLsn = 0n
  private next = 0
  private timer: NodeJS.Timeout | undefined
  private probing: Promise<void> | undefined
  private closed = false

  constructor(options: ReplicaSetOptions) {
    this.primaryPool = options.primaryPool
    this.maxLagSeconds = options.maxLagSeconds
    this.checkIntervalMs = options.checkIntervalMs
    this.probeTimeoutMs = options.probeTimeoutMs
    this.log = options.log
    this.primaryDriver = new PostgresDriver({ pool: options.primaryPool })
    this.replicas = options.replicas.map(({ pool, target }, i) => ({
      name: String(i),
      target,
      pool,
      driver: new PostgresDriver({ pool }),
      up: false,
      lagSeconds: null,
      replayLsn: null,
      detail: 'not probed yet',
      queries: 0,
      status: undefined,
    }))
    const driver = new RoutingDriver(this, this.primaryDriver, this.replicas.map((r) => r.driver))
    this.read = new Kysely<Database>({
      dialect: {
        createAdapter: () => new PostgresAdapter(),
        createDriver: () => driver,
        createIntrospector: (db) => new PostgresIntrospector(db),
        createQueryCompiler: () => new PostgresQueryCompiler(),
      },
    })
  }

  /** Probes every replica once, then every checkIntervalMs (never two probes at once). */
  async start(): Promise<void> {
    await this.probe()
    const loop = (): void => {
      this.timer = setTimeout(() => {
        void this.probe().finally(() => {
          if (!this.closed) loop()
        })
      }, this.checkIntervalMs)
      this.timer.unref()
    }
    loop()
  }

  /** Stops the probes and ends the replicas' pools (not the primary's: its own Kysely owns it). */
  async close(): Promise<void> {
    this.closed = true
    clearTimeout(this.timer)
    await this.probing?.catch(() => undefined)
    await this.read.destroy()
    // A pool the read Kysely never used (no read reached it) is ended here.
    await Promise.all(this.replicas.map((r) => (r.pool.ended ? undefined : r.pool.end())))
  }

  /** Measures every replica now (joins a probe already running). */
  probe(): Promise<void> {
    this.probing ??= Promise.all(this.replicas.map((r) => this.probeOne(r))).then(() => {
      this.probing = undefined
    })
    return this.probing
  }

  private async probeOne(r: Replica): Promise<void> {
    try {
      const result = await withTimeout(r.pool.query<{ recovery: boolean; lag: number | null; lsn: string | null }>(PROBE_SQL), this.probeTimeoutMs, () => new Error(`no answer within ${this.probeTimeoutMs} ms`))
      const row = result.rows[0]
      r.up = true
      r.lagSeconds = row?.lag === null || row?.lag === undefined ? null : Math.max(0, Number(row.lag))
      r.replayLsn = parseLsn(row?.lsn)
      r.detail = row?.recovery === false ? 'not in recovery: this server is not a standby' : undefined
    } catch (err) {
      r.up = false
      r.lagSeconds = null
      r.detail = message(err)
    }
    this.noteStatus(r)
  }

  /** A replica failed under a query: down until a probe answers again. */
  markDown(r: Replica | undefined, err: unknown): void {
    if (r === undefined) return
    r.up = false
    r.lagSeconds = null
    r.detail = message(err)
    this.noteStatus(r)
  }

  private statusOf(r: Replica): { status: ReplicaStatus; detail?: string } {
    if (!r.up) return { status: 'down', detail: r.detail }
    if (r.lagSeconds === null) return { status: 'lagging', detail: 'lag unknown: no transaction replayed yet' }
    if (r.lagSeconds > this.maxLagSeconds) return { status: 'lagging', detail: `replay lag ${r.lagSeconds.toFixed(1)} s is over DB_REPLICA_MAX_LAG_SECONDS (${this.maxLagSeconds})` }
    if (r.replayLsn === null || r.replayLsn < this.requiredLsn) return { status: 'lagging', detail: 'has not replayed the last write of this instance yet' }
    return r.detail === undefined ? { status: 'ok' } : { status: 'ok', detail: r.detail }
  }

  /** Logs a replica's change of state (down, lagging, back), once per change. */
  private noteStatus(r: Replica): void {
    const { status, detail } = this.statusOf(r)
    if (status === r.status) return
    const first = r.status === undefined
    r.status = status
    const fields = { replica: r.name, target: r.target, status, detail }
    if (status === 'ok') {
      if (!first) this.log.info?.(fields, 'read replica is back in use')
    } else {
      ;(this.log.warn ?? this.log.error).call(this.log, fields, status === 'down' ? 'read replica is down; its reads go to the primary' : 'read replica is lagging; its reads go to the primary')
    }
  }

  /** The replica the next read goes to (round robin among the eligible), or undefined: the primary. */
  pick(): Replica | undefined {
    for (let i = 0; i < this.replicas.length; i++) {
      const r = this.replicas[(this.next + i) % this.replicas.length]!
      if (this.statusOf(r).status === 'ok') {
        this.next = (this.next + i + 1) % this.replicas.length
        return r
      }
    }
    return undefined
  }

  /** A query ran: on a replica, or (undefined) on the primary. */
  counted(r: Replica | undefined): void {
    if (r === undefined) this.primaryQueries++
    else r.queries++
  }

  /**
   * Read-your-writes after a write on the primary: waits (at most DB_REPLICA_MAX_LAG_SECONDS) until every
   * replica that is up has replayed the primary's current WAL position. Called by the admin routes after
   * their write and before they drop cached pages, so the re-render that follows (on this instance or
   * another one reading the same replicas) sees the write. A replica that has not replayed it by then is
   * skipped here until it has (and the others' lag probes see it behind too).
   */
  async waitForReplay(): Promise<void> {
    let target: bigint | null
    try {
      const result = await this.primaryPool.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')
      target = parseLsn(result.rows[0]?.lsn)
    } catch (err) {
      // The write committed and the primary went away since: its position is unknown, so nothing is waited for.
      this.log.error({ err }, 'could not read the primary\'s WAL position after a write; not waiting for the replicas')
      return
    }
    if (target === null) return
    // Only the replicas in use: one already down or lagging is skipped by every instance, and once it is
    // back this instance uses it only after it has replayed `target` (requiredLsn).
    const inUse = this.replicas.filter((r) => this.statusOf(r).status === 'ok')
    if (target > this.requiredLsn) this.requiredLsn = target
    const deadline = Date.now() + this.maxLagSeconds * 1000
    await Promise.all(
      inUse.map(async (r) => {
        while (r.replayLsn === null || r.replayLsn < target) {
          try {
            const replayed = await withTimeout(r.pool.query<{ lsn: string | null }>(REPLAYED_SQL), this.probeTimeoutMs, () => new Error(`no answer within ${this.probeTimeoutMs} ms`))
            const lsn = parseLsn(replayed.rows[0]?.lsn)
            if (lsn !== null && (r.replayLsn === null || lsn > r.replayLsn)) r.replayLsn = lsn
          } catch (err) {
            this.markDown(r, err)
            return
          }
          if (r.replayLsn !== null && r.replayLsn >= target) break
          if (Date.now() >= deadline) {
            this.noteStatus(r)
            return
          }
          await new Promise((resolve) => setTimeout(resolve, CATCH_UP_POLL_MS))
        }
        this.noteStatus(r)
      }),
    )
  }

  reports(): ReplicaReport[] {
    return this.replicas.map((r) => {
      const { status, detail } = this.statusOf(r)
      return { replica: r.name, target: r.target, status, lagSeconds: r.lagSeconds, ...(detail === undefined ? {} : { detail }) }
    })
  }

  /** Queries each replica ran, by its `replica` label. */
  replicaQueries(): Array<{ replica: string; queries: number }> {
    return this.replicas.map((r) => ({ replica: r.name, queries: r.queries }))
  }
}

/**
 * One logical connection of the read Kysely: the server is chosen at its first query (a replica, else the
 * primary) and kept for the rest (a `db.connection()` callback stays on one server). A transaction goes to
 * the primary. A replica that fails the first query with a connection error is marked down and the query
 * runs once more, on the primary; later queries (the replica answered before) are not retried, as the
 * session they belong to is gone.
 */
class RoutedConnection implements DatabaseConnection {
  private readonly set: ReplicaSet
  private readonly primary: Driver
  private inner: DatabaseConnection | undefined
  private driver: Driver | undefined
  private replica: Replica | undefined
  private answered = false
  private inTransaction = false

  constructor(set: ReplicaSet, primary: Driver) {
    this.set = set
    this.primary = primary
  }

  private async acquire(forPrimary: boolean): Promise<DatabaseConnection> {
    if (this.inner !== undefined) return this.inner
    const replica = forPrimary ? undefined : this.set.pick()
    if (replica === undefined && !forPrimary) this.set.fallbacks.unavailable++
    this.replica = replica
    this.driver = replica?.driver ?? this.primary
    this.inner = await this.driver.acquireConnection()
    return this.inner
  }

  async executeQuery<R>(compiledQuery: CompiledQuery, options?: Parameters<DatabaseConnection['executeQuery']>[1]): Promise<QueryResult<R>> {
    try {
      const connection = await this.acquire(false)
      const result = await connection.executeQuery<R>(compiledQuery, options)
      this.set.counted(this.replica)
      this.answered = true
      return result
    } catch (err) {
      const replica = this.replica
      if (replica === undefined || this.answered || this.inTransaction || !isConnectionError(err)) throw err
      // The replica refused the connection or went away under this query: down until a probe answers,
      // and the primary answers this one.
      this.set.markDown(replica, err)
      this.set.fallbacks.error++
      await this.release()
      const primary = await this.acquire(true)
      const result = await primary.executeQuery<R>(compiledQuery, options)
      this.set.counted(undefined)
      this.answered = true
      return result
    }
  }

  async *streamQuery<R>(compiledQuery: CompiledQuery, chunkSize: number, options?: Parameters<DatabaseConnection['streamQuery']>[2]): AsyncIterableIterator<QueryResult<R>> {
    const connection = await this.acquire(false)
    this.set.counted(this.replica)
    this.answered = true
    yield* connection.streamQuery<R>(compiledQuery, chunkSize, options)
  }

  async begin(settings: TransactionSettings): Promise<void> {
    const connection = await this.acquire(true)
    this.inTransaction = true
    await this.driver!.beginTransaction(connection, settings)
  }

  async commit(): Promise<void> {
    this.inTransaction = false
    await this.driver!.commitTransaction(this.inner!)
  }

  async rollback(): Promise<void> {
    this.inTransaction = false
    await this.driver!.rollbackTransaction(this.inner!)
  }

  async release(): Promise<void> {
    const { inner, driver } = this
    this.inner = this.driver = this.replica = undefined
    if (inner !== undefined) await driver!.releaseConnection(inner)
  }
}

class RoutingDriver implements Driver {
  private readonly set: ReplicaSet
  private readonly primary: Driver
  private readonly replicaDrivers: Driver[]

  constructor(set: ReplicaSet, primary: Driver, replicaDrivers: Driver[]) {
    this.set = set
    this.primary = primary
    this.replicaDrivers = replicaDrivers
  }

  async init(): Promise<void> {
    await Promise.all([this.primary, ...this.replicaDrivers].map((d) => d.init()))
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    return new RoutedConnection(this.set, this.primary)
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    await (connection as RoutedConnection).begin(settings)
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as RoutedConnection).commit()
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await (connection as RoutedConnection).rollback()
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    await (connection as RoutedConnection).release()
  }

  /** Ends the replicas' pools; the primary's belongs to the primary's Kysely. */
  async destroy(): Promise<void> {
    await Promise.all(this.replicaDrivers.map((d) => d.destroy()))
  }
}
