// What only a real PostgreSQL can show about a slow or blocked database (the embedded one enforces no
// statement_timeout and runs one session, so no other session can hold a lock against it): the server
// cancels a statement at DB_STATEMENT_TIMEOUT_MS and the connection lives on; a table lock taken by
// another session costs warm keys the render budget (stale) and cold keys a 503 bounded by the timeouts:
// the first wave holds the pool's connections for at most DB_STATEMENT_TIMEOUT_MS and its queue for at
// most DB_CONNECT_TIMEOUT_MS, the database breaker then opens and refuses renders before they reach the
// pool, and once the lock is gone the pool is whole and the breaker closes. Skipped on the embedded pass
// (npm run test:native runs it).

import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import { sql } from 'kysely'
import { buildTestApp } from '../../helper.ts'
import { metricValue } from '../../support/metrics.ts'
import { skipUnlessNative } from '../../support/native-postgres.ts'
import { until } from '../../support/until.ts'

const skip = skipUnlessNative()
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * An origin with these database settings (short timeouts) on a database that an origin with the default
 * ones has migrated and, with `demo`, loaded with the demo site: on a busy machine the set-up itself
 * could outlast the timeouts under test.
 */
async function originWithTimeouts(t: Test, env: Record<string, string>, demo = true): Promise<FastifyInstance> {
  const setup = await buildTestApp(t, { REDIS_URL: 'off', SEED_DEMO: String(demo) })
  return buildTestApp(t, { REDIS_URL: 'off', ...env, DATABASE_URL: setup.database.connectionString, MIGRATE_ON_START: 'false' })
}

/** Another session on the app's database, holding `tables` in ACCESS EXCLUSIVE mode until release(). */
async function lockTables(connectionString: string, tables: string[]) {
  const client = new pg.Client({ connectionString, application_name: 'variant-origin-tests-blocker' })
  await client.connect()
  await client.query('BEGIN')
  await client.query(`LOCK TABLE ${tables.join(', ')} IN ACCESS EXCLUSIVE MODE`)
  let held = true
  return {
    /** Sessions of the origin (its application_name) waiting on a lock right now. */
    async originSessionsWaitingOnLock(): Promise<number> {
      // Inside this session's transaction the activity view is a snapshot taken at its first read: drop it.
      await client.query('select pg_stat_clear_snapshot()')
      const { rows } = await client.query<{ n: string }>(
        "select count(*) as n from pg_stat_activity where datname = current_database() and application_name = 'variant-origin' and wait_event_type = 'Lock'",
      )
      return Number(rows[0]!.n)
    },
    async release() {
      if (!held) return
      held = false
      await client.query('COMMIT')
      await client.end()
    },
  }
}

t.test('DB_STATEMENT_TIMEOUT_MS is enforced by the server: the statement is cancelled (57014), the connection lives on', { skip }, async (t) => {
  const app = await originWithTimeouts(t, { DB_STATEMENT_TIMEOUT_MS: '300' }, false)
  const { pool, db } = app.database
  t.equal((await pool.query<{ statement_timeout: string }>('show statement_timeout')).rows[0]!.statement_timeout, '300ms', "the server's setting for the origin's sessions")

  const client = await pool.connect()
  try {
    const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid
    const started = Date.now()
    const err = await client.query('select pg_sleep(3)').then(
      () => undefined,
      (e: unknown) => e,
    )
    const ms = Date.now() - started
    t.match(err, { code: '57014', message: 'canceling statement due to statement timeout' }, 'the server cancelled it')
    // The client-side query_timeout is the statement timeout plus 1 s: an answer before it is the server's.
    t.ok(ms >= 250 && ms < 1_300, `at the server's 300 ms, not the client's 1,300 ms (${ms} ms)`)
    t.equal((await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid, pid, 'the same session answers the next query')
  } finally {
    client.release()
  }

  // A query waiting for a lock another session holds is cancelled the same way, through kysely.
  const blocker = await lockTables(app.database.connectionString, ['pages'])
  t.teardown(() => blocker.release())
  const started = Date.now()
  await t.rejects(db.selectFrom('pages').select('id').limit(1).execute(), { code: '57014' }, 'a read blocked by a lock times out on the server')
  t.ok(Date.now() - started < 1_300, `within the statement timeout (${Date.now() - started} ms)`)
  await blocker.release()

  // The pool recovers: three times its size in queries at once, all answered, no connection lost.
  const max = pool.options.max ?? 10
  const pids = await Promise.all(Array.from({ length: max * 3 }, () => pool.query<{ pid: number }>('select pg_backend_pid() as pid').then((r) => r.rows[0]!.pid)))
  t.equal(pids.length, max * 3)
  t.ok(new Set(pids).size <= max, `at most ${max} sessions (${new Set(pids).size})`)
  t.equal(pool.waitingCount, 0, 'nobody left waiting for a connection')
  t.equal(Number((await sql<{ n: string }>`select count(*) as n from pages`.execute(db)).rows[0]!.n), 0, 'the kysely path works too')
})

t.test('a table lock held by another session: warm keys stale within the budget, cold keys a 503 bounded by the timeouts, the breaker opens and spares the pool, then everything recovers', { skip }, async (t) => {
  const STATEMENT_MS = 1_000
  const CONNECT_MS = 1_000
  const app = await originWithTimeouts(t, {
    DB_POOL_MAX: '10',
    DB_STATEMENT_TIMEOUT_MS: String(STATEMENT_MS),
    DB_CONNECT_TIMEOUT_MS: String(CONNECT_MS),
    ORIGIN_FRESH_SECONDS: '1',
    STALE_WHILE_REVALIDATE_SECONDS: '1',
    L1_TTL_SECONDS: '1',
    RENDER_BUDGET_MS: '200',
  })
  const { pool, db } = app.database
  const max = pool.options.max!
  t.equal(max, 10)
  const paths = (await db.selectFrom('pages').select('path').where('kind', '=', 'seo').orderBy('path').limit(75).execute()).map((r) => r.path)
  const warm = paths.slice(0, 5)
  const cold = paths.slice(5, 40)
  const colder = paths.slice(40, 75)
  for (const url of warm) t.equal((await app.inject({ url })).headers['x-cache'], 'MISS', `${url} rendered`)
  // A fixed sleep on purpose: past fresh (1 s) and stale-while-revalidate (1 s), so each warm key needs a render.
  await sleep(2_100)

  const blocker = await lockTables(app.database.connectionString, ['pages', 'content_variants'])
  t.teardown(() => blocker.release())
  const pressure = { total: 0, waiting: 0, lockWaiters: 0 }
  const sampler = setInterval(() => {
    pressure.total = Math.max(pressure.total, pool.totalCount)
    pressure.waiting = Math.max(pressure.waiting, pool.waitingCount)
  }, 5)
  t.teardown(() => clearInterval(sampler))
  const timed = async (url: string) => {
    const started = Date.now()
    const res = await app.inject({ url })
    return { url, res, ms: Date.now() - started }
  }

  // The first wave: 5 warm keys and 35 cold ones at once, every render blocked by the lock.
  const rendersBefore = await metricValue(app, 'variant_origin_renders_total')
  let waveDone = false
  const wave = Promise.all([...warm, ...cold].map(timed)).finally(() => (waveDone = true))
  while (!waveDone) {
    pressure.lockWaiters = Math.max(pressure.lockWaiters, await blocker.originSessionsWaitingOnLock())
    await sleep(50)
  }
  const answers = await wave
  const warmAnswers = answers.slice(0, warm.length)
  const coldAnswers = answers.slice(warm.length)
  const slowest = (list: typeof answers) => Math.max(...list.map((a) => a.ms))
  t.same([...new Set(warmAnswers.map(({ res }) => `${res.statusCode} ${res.headers['x-cache']}`))], ['200 STALE'], 'every warm key is served its stale entry')
  t.ok(slowest(warmAnswers) < STATEMENT_MS, `within the render budget's reach, not after the statement timeout (slowest ${slowest(warmAnswers)} ms)`)
  t.same([...new Set(coldAnswers.map(({ res }) => `${res.statusCode} ${res.headers['cache-control']} retry-after=${res.headers['retry-after']}`))], ['503 no-store retry-after=5'], 'every cold key is a 503, no-store, Retry-After')
  // At worst a render waits CONNECT_MS for a connection and then STATEMENT_MS on the lock.
  t.ok(slowest(coldAnswers) < CONNECT_MS + STATEMENT_MS + 1_000, `bounded by the timeouts, never hung (slowest ${slowest(coldAnswers)} ms)`)
  t.ok(pressure.lockWaiters >= 1 && pressure.lockWaiters <= max, `at most the pool's ${max} sessions waited on the lock (${pressure.lockWaiters})`)
  t.ok(pressure.total <= max, `the pool never opened more than ${max} connections (${pressure.total})`)
  // Those past the pool's size queued for a connection, each for at most CONNECT_MS: the queue is gone with the wave.
  t.comment(`at most ${pressure.waiting} of the ${warm.length + cold.length} renders waited for a connection at once`)
  t.equal(pool.waitingCount, 0, 'nobody is left waiting for a connection once the wave is answered')
  t.ok((await metricValue(app, 'variant_origin_renders_total')) - rendersBefore <= warm.length + cold.length, 'one render per key at most')
  t.equal(await metricValue(app, 'variant_origin_circuit_breaker_state', { breaker: 'database' }), 2, 'the database breaker opened')

  // The second wave, breaker open: refused at once, without a render or a connection.
  pressure.waiting = 0
  const rendersOpen = await metricValue(app, 'variant_origin_renders_total')
  const refused = await Promise.all(colder.map(timed))
  t.same([...new Set(refused.map((r) => r.res.statusCode))], [503], 'every cold key a 503')
  t.ok(slowest(refused) < 500, `refused fast (slowest ${slowest(refused)} ms)`)
  t.equal((await metricValue(app, 'variant_origin_renders_total')) - rendersOpen, 0, 'no render reached the database')
  t.equal(pressure.waiting, 0, 'nobody queued for a connection')
  const stale = await app.inject({ url: warm[0]! })
  t.equal(stale.headers['x-cache'], 'STALE', 'a warm key is still served from its stale entry')

  // The lock goes: the pool is whole at once, and the breaker closes on the first render after its reset timeout.
  await blocker.release()
  const count = Number((await sql<{ n: string }>`select count(*) as n from pages`.execute(db)).rows[0]!.n)
  t.ok(count >= 500, 'the pool answers at once')
  await until('the pool to settle', () => pool.waitingCount === 0 && pool.idleCount === pool.totalCount, { timeoutMs: 5_000 })
  t.ok(pool.totalCount <= max, `${pool.totalCount} connections, all idle`)
  let res = await app.inject({ url: colder[0]! })
  await until('the breaker to let a render through and close (its reset timeout is 5 s)', async () => (res = await app.inject({ url: colder[0]! })).statusCode === 200, { timeoutMs: 10_000, intervalMs: 250 })
  t.equal(res.statusCode, 200)
  t.equal(await metricValue(app, 'variant_origin_circuit_breaker_state', { breaker: 'database' }), 0, 'the breaker closed')
  t.equal((await app.inject({ url: cold[0]! })).statusCode, 200, 'cold keys render again')
})
