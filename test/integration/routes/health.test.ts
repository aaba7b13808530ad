import t from 'tap'
import { buildTestApp } from '../../helper.ts'
import { freePort } from '../../support/net.ts'


t.test('live and ready with PostgreSQL and Redis up', async (t) => {
  const app = await buildTestApp(t)
  const live = await app.inject({ url: '/health/live' })
  t.equal(live.statusCode, 200)
  t.same(live.json(), { status: 'ok' })
  t.equal(live.headers['cache-control'], 'no-store')
  const ready = await app.inject({ url: '/health/ready' })
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ok', checks: { database: { status: 'ok' }, migrations: { status: 'ok' }, redis: { status: 'ok' } } })
  t.equal(ready.headers['cache-control'], 'no-store')
})

t.test('Redis unreachable: degraded, still serving pages', async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: `redis://127.0.0.1:${await freePort()}` })
  const ready = await app.inject({ url: '/health/ready' })
  t.equal(ready.statusCode, 200)
  const body = ready.json()
  t.equal(body.status, 'degraded')
  t.equal(body.checks.redis.status, 'degraded')
  t.equal((await app.inject({ url: '/crm' })).statusCode, 200, 'pages still served')
})

t.test('Redis switched off on purpose', async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off' })
  const body = (await app.inject({ url: '/health/ready' })).json()
  t.equal(body.status, 'ok')
  t.same(body.checks.redis, { status: 'off', detail: 'REDIS_URL=off' })
})

t.test('pending migrations: not ready, and the answer says what to run', async (t) => {
  const app = await buildTestApp(t, { MIGRATE_ON_START: 'false', SEED_DEMO: 'false', REDIS_URL: 'off' })
  const ready = await app.inject({ url: '/health/ready' })
  t.equal(ready.statusCode, 503)
  const body = ready.json()
  t.equal(body.status, 'fail')
  t.same(body.checks.database, { status: 'ok' })
  t.same(body.checks.migrations, { status: 'fail', detail: 'pending: 0001_initial_schema, 0002_ingest_and_versions, 0003_purge_outbox, 0004_search_console, 0005_engagement, 0006_variant_scope, 0007_experiments; run npm run migrate' })
  t.equal(ready.headers['cache-control'], 'no-store')
  const page = await app.inject({ url: '/crm' })
  t.equal(page.statusCode, 503, 'no schema: pages answer 503, not a crash')
  t.equal(page.headers['cache-control'], 'no-store')
  t.equal(page.headers['retry-after'], '5')
  t.same(page.json(), { statusCode: 503, error: 'Service Unavailable', message: 'the page store is unavailable; retry shortly' })
  const sitemap = await app.inject({ url: '/sitemap.xml' })
  t.equal(sitemap.statusCode, 503, 'no schema: the sitemaps answer 503 too')
  t.equal(sitemap.headers['cache-control'], 'no-store')
})
