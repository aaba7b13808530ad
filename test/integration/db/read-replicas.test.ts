// Read replicas (DATABASE_READ_URL) against a real streaming replica built here from a local primary
// (initdb on a free port, pg_basebackup -R to a second port, both with pgvector; test/support/pg-replica-cluster.ts):
// the render path reads from the replica (its own statistics count the scans), writes go to the primary
// and are on the replica before the admin call answers, a lagging replica and a lost one are skipped
// (the primary serves, readiness says degraded, the gauges say why), and with the primary stopped the
// pages keep rendering from the replica while admin writes get a 503.

import { spawnSync } from 'node:child_process'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { sql } from 'kysely'
import { buildTestApp } from '../../helper.ts'
import { metricValue } from '../../support/metrics.ts'
import { pgReplicaCluster, replicaClusterUnavailable, type PgNode } from '../../support/pg-replica-cluster.ts'
import { until } from '../../support/until.ts'

const TOKEN = 'replica-test-admin-token-0123456789'
const auth = { authorization: `Bearer ${TOKEN}` }
const MAX_LAG_SECONDS = 2

const unavailable = replicaClusterUnavailable()
if (unavailable !== undefined) {
  if (process.env.CI) t.fail(`read replicas cannot be tested: ${unavailable} (CI must have PostgreSQL's server binaries with pgvector installed into them)`)
  else t.plan(0, `skipped: ${unavailable}`)
} else {
  t.test('the render path reads from a streaming replica; writes and read-your-writes on the primary; failures fall back', async (t) => {
    const cluster = await pgReplicaCluster(t)
    const { primary, replica } = cluster
    const app = await buildTestApp(t, {
      DATABASE_URL: primary.url,
      DATABASE_READ_URL: replica.url,
      SEED_DEMO: 'true',
      REDIS_URL: 'off',
      ADMIN_TOKEN: TOKEN,
      DB_POOL_MAX: '4',
      DB_CONNECT_TIMEOUT_MS: '1000',
      DB_REPLICA_MAX_LAG_SECONDS: String(MAX_LAG_SECONDS),
      DB_REPLICA_CHECK_INTERVAL_MS: '100',
    })

    await until('the replica to have replayed the seed', async () => (await ready(app)).json().status === 'ok', { timeoutMs: 10_000 })
    t.match((await ready(app)).json(), { status: 'ok', checks: { database: { status: 'ok' }, replicas: [{ replica: '0', target: `127.0.0.1:${replica.port}/origin`, status: 'ok', lagSeconds: 0 }] } })
    t.equal(await metricValue(app, 'variant_origin_db_replica_up', { replica: '0' }), 1)

    await t.test('renders, the index and the sitemaps read from the replica (its statistics show the scans)', async (t) => {
      const scansBefore = await scans(replica)
      const replicaQueries = await metricValue(app, 'variant_origin_db_queries_total', { target: 'replica' })
      const primaryQueries = await metricValue(app, 'variant_origin_db_queries_total', { target: 'primary' })
      for (const url of ['/crm/dentists/austin', '/payroll/gyms/denver', '/crm', '/']) {
        const res = await app.inject({ url, headers: { 'x-segment': 'enterprise' } })
        t.equal(res.statusCode, 200, url)
        t.equal(res.headers['x-cache'], 'MISS', `${url} rendered`)
      }
      t.equal((await app.inject({ url: '/sitemap.xml' })).statusCode, 200)
      t.match((await app.inject({ url: '/sitemaps/0.xml' })).body, /<loc>https:\/\/www\.example\.test\/crm\/dentists\/austin<\/loc>/)
      t.ok((await metricValue(app, 'variant_origin_db_queries_total', { target: 'replica' })) - replicaQueries >= 10, 'the queries ran on the replica')
      t.equal(await metricValue(app, 'variant_origin_db_replica_fallbacks_total'), 0, 'none went to the primary instead')
      t.ok((await metricValue(app, 'variant_origin_db_queries_total', { target: 'primary' })) - primaryQueries < 5, 'the primary saw only background work (outbox, segments), not the renders')
      // A backend flushes its statistics when it goes idle, at most once a second: wait for them.
      await until('the replica to count the scans', async () => (await scans(replica)) > scansBefore, { timeoutMs: 15_000, intervalMs: 200 })
      t.pass('the replica scanned pages for them')
    })

    await t.test('a transaction on the read handle runs on the primary', async (t) => {
      const { read } = app.database
      const replicaQueries = await metricValue(app, 'variant_origin_db_queries_total', { target: 'replica' })
      const pid = async (db: typeof read) => (await sql<{ port: number }>`SELECT inet_server_port() AS port`.execute(db)).rows[0]?.port
      t.equal(await read.transaction().execute((trx) => pid(trx)), primary.port, 'committed on the primary')
      await t.rejects(read.transaction().execute(async (trx) => {
        t.equal(await pid(trx), primary.port)
        throw new Error('rolled back')
      }), /rolled back/)
      t.equal(await pid(read), replica.port, 'a plain read still goes to the replica')
      t.equal((await metricValue(app, 'variant_origin_db_queries_total', { target: 'replica' })) - replicaQueries, 1)
    })

    await t.test('an admin write goes to the primary and is on the replica when the call answers (read-your-writes)', async (t) => {
      const res = await app.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { pages: [{ path: '/crm/replicas/one', kind: 'seo', title: 'Replicated one', vertical: 'crm' }] } })
      t.equal(res.statusCode, 200, res.body)
      t.match(res.json(), { inserted: 1 })
      const onReplica = await replica.query('SELECT title FROM pages WHERE path = $1', ['/crm/replicas/one'])
      t.same(onReplica.rows, [{ title: 'Replicated one' }], 'replayed before the admin call answered')
      const replicaQueries = await metricValue(app, 'variant_origin_db_queries_total', { target: 'replica' })
      const page = await app.inject({ url: '/crm/replicas/one' })
      t.equal(page.statusCode, 200)
      t.match(page.body, /Replicated one/)
      t.ok((await metricValue(app, 'variant_origin_db_queries_total', { target: 'replica' })) > replicaQueries, 'rendered from the replica')
      // A standby applies WAL; it executes no write of its own (any would fail: it is read-only).
      const written = await replica.query<{ n: string }>('SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::text AS n FROM pg_stat_user_tables')
      t.equal(written.rows[0]?.n, '0', 'no write executed on the replica')
      t.match((await replica.query('SHOW transaction_read_only')).rows, [{ transaction_read_only: 'on' }])
    })

    await t.test('a lagging replica is skipped: the primary serves, readiness is degraded', async (t) => {
      await replica.query('SELECT pg_wal_replay_pause()')
      const started = Date.now()
      const res = await app.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { pages: [{ path: '/crm/replicas/one', kind: 'seo', title: 'Replicated two', vertical: 'crm' }] } })
      t.equal(res.statusCode, 200, res.body)
      // It waits for the replica at most DB_REPLICA_MAX_LAG_SECONDS (or not at all once the probe saw it behind).
      t.ok(Date.now() - started < (MAX_LAG_SECONDS + 8) * 1000, 'the admin call did not wait for the paused replica beyond its bound')
      t.same((await replica.query('SELECT title FROM pages WHERE path = $1', ['/crm/replicas/one'])).rows, [{ title: 'Replicated one' }], 'the replica still has the old title')
      const fallbacks = await metricValue(app, 'variant_origin_db_replica_fallbacks_total', { reason: 'unavailable' })
      const page = await app.inject({ url: '/crm/replicas/one' })
      t.match(page.body, /Replicated two/, 'the new title, from the primary (the replica has not replayed it)')
      t.ok((await metricValue(app, 'variant_origin_db_replica_fallbacks_total', { reason: 'unavailable' })) > fallbacks)
      const health = await ready(app)
      t.equal(health.statusCode, 200)
      t.match(health.json(), { status: 'degraded', checks: { database: { status: 'ok' }, replicas: [{ status: 'lagging' }] } })
      await until('the lag to exceed the limit', async () => (await metricValue(app, 'variant_origin_db_replica_lag_seconds', { replica: '0' })) > MAX_LAG_SECONDS, { timeoutMs: 5_000 })
      t.match((await ready(app)).json().checks.replicas[0].detail, /over DB_REPLICA_MAX_LAG_SECONDS/)
      await replica.query('SELECT pg_wal_replay_resume()')
      await until('the replica to catch up and be used again', async () => (await ready(app)).json().status === 'ok', { timeoutMs: 5_000 })
      t.pass('back in use once caught up')
    })

    await t.test('a replica that is lost: reads fall back to the primary; readiness degraded; the gauges say so', async (t) => {
      // A query running on the replica when it goes: answered by the primary instead.
      const inFlight = sql<{ port: number }>`SELECT inet_server_port() AS port FROM pg_sleep(3)`.execute(app.database.read)
      await until('the query to run on the replica', async () => (await replica.query("SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(3)%' AND pid <> pg_backend_pid()")).rowCount === 1, { timeoutMs: 5_000, intervalMs: 20 })
      await replica.stop()
      t.same((await inFlight).rows, [{ port: primary.port }], 'the primary answered the query the replica dropped')
      t.equal(await metricValue(app, 'variant_origin_db_replica_fallbacks_total', { reason: 'error' }), 1, 'counted as an error fallback')
      const primaryQueries = await metricValue(app, 'variant_origin_db_queries_total', { target: 'primary' })
      const res = await app.inject({ url: '/helpdesk/schools/dallas' })
      t.equal(res.statusCode, 200, 'rendered from the primary')
      t.equal(res.headers['x-cache'], 'MISS')
      t.ok((await metricValue(app, 'variant_origin_db_queries_total', { target: 'primary' })) > primaryQueries)
      t.ok((await metricValue(app, 'variant_origin_db_replica_fallbacks_total')) > 0)
      await until('readiness to report the replica down', async () => (await ready(app)).json().checks.replicas[0].status === 'down', { timeoutMs: 5_000 })
      const health = await ready(app)
      t.equal(health.statusCode, 200, 'degraded, not down')
      t.match(health.json(), { status: 'degraded', checks: { database: { status: 'ok' }, replicas: [{ status: 'down', lagSeconds: null, detail: String }] } })
      t.equal(await metricValue(app, 'variant_origin_db_replica_up', { replica: '0' }), 0)
      t.ok(Number.isNaN(await metricValue(app, 'variant_origin_db_replica_lag_seconds', { replica: '0' })), 'lag unknown')
      const scrape = await app.inject({ url: '/metrics' })
      t.match(scrape.body, /^variant_origin_db_replica_up\{replica="0"\} 0$/m)
      t.match(scrape.body, /^variant_origin_db_replica_lag_seconds\{replica="0"\} Nan$/m)
      const promtool = spawnSync('promtool', ['check', 'metrics'], { input: scrape.body, encoding: 'utf8' })
      if (promtool.error === undefined) t.equal(promtool.status, 0, `promtool check metrics: ${promtool.stdout}${promtool.stderr}`)
      else t.comment('promtool is not installed: the scrape is not linted')

      await replica.start()
      await until('the replica to be back in use', async () => (await ready(app)).json().status === 'ok', { timeoutMs: 30_000, intervalMs: 100 })
      t.equal(await metricValue(app, 'variant_origin_db_replica_up', { replica: '0' }), 1)
    })

    await t.test('with the primary stopped, pages keep rendering from the replica and admin writes get a 503', async (t) => {
      t.equal((await app.inject({ url: '/crm/dentists/austin' })).headers['x-cache'], 'HIT-L1', 'a page rendered before')
      await primary.stop()
      const replicaQueries = await metricValue(app, 'variant_origin_db_queries_total', { target: 'replica' })
      for (const url of ['/crm/agencies/boston', '/payroll', '/helpdesk/gyms/austin']) {
        const res = await app.inject({ url })
        t.equal(res.statusCode, 200, `${url}: a cold page, rendered from the replica`)
        t.equal(res.headers['x-cache'], 'MISS')
      }
      t.equal((await app.inject({ url: '/crm/dentists/austin' })).headers['x-cache'], 'HIT-L1', 'a warm page')
      t.equal((await app.inject({ url: '/sitemaps/0.xml' })).statusCode, 200, 'the sitemaps')
      t.ok((await metricValue(app, 'variant_origin_db_queries_total', { target: 'replica' })) > replicaQueries)

      const write = await app.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { pages: [{ path: '/crm/replicas/two', kind: 'seo', title: 'Nowhere to go', vertical: 'crm' }] } })
      t.equal(write.statusCode, 503, write.body)
      t.equal(write.headers['cache-control'], 'no-store')
      t.equal(write.headers['retry-after'], '5')
      t.match(write.json(), { statusCode: 503, error: 'Service Unavailable', message: /primary database is unavailable, so writes cannot be made; retry shortly/ })
      // Without PURGE_TARGETS a purge writes nothing: it drops the cached copies, the replica re-renders them.
      const purge = await app.inject({ method: 'POST', url: '/admin/purge', headers: auth, payload: { paths: ['/crm'] } })
      t.equal(purge.statusCode, 202, purge.body)
      t.equal((await app.inject({ url: '/crm' })).headers['x-cache'], 'MISS', 'rendered again, from the replica')

      const vcl = await app.inject({ url: '/admin/cdn/varnish.vcl', headers: auth })
      t.equal(vcl.statusCode, 503, 'an admin read of the primary: 503 too')
      t.match(vcl.json(), { message: 'the database is unavailable; retry shortly' })

      const health = await ready(app)
      t.equal(health.statusCode, 503, 'the primary down fails readiness, as without replicas')
      t.match(health.json(), { status: 'fail', checks: { database: { status: 'fail' }, replicas: [{ status: 'ok' }] } })
    })
  })
}

function ready(app: FastifyInstance) {
  return app.inject({ url: '/health/ready' })
}

/** Sequential and index scans of the pages and variants on one server, as its statistics count them. */
async function scans(node: PgNode): Promise<number> {
  const result = await node.query<{ n: string }>("SELECT coalesce(sum(seq_scan + coalesce(idx_scan, 0)), 0)::text AS n FROM pg_stat_user_tables WHERE relname IN ('pages', 'content_variants', 'sitemap_version')")
  return Number(result.rows[0]?.n ?? 0)
}
