// Purge: the adapters against a server speaking the CDNs' APIs, the outbox surviving a CDN outage,
// and POST /admin/purge reaching L1 on every instance, L2 and the CDNs.

import t from 'tap'
import { buildTestApp } from '../../helper.ts'
import { startFakeCdn } from '../../support/fake-cdn.ts'
import { privateRedis } from '../../support/redis-server.ts'
import { CloudflareAdapter, FastlyAdapter, VarnishAdapter, type CdnSettings } from '../../../src/purge/cdn-adapters.ts'
import { backoffMs, deliverDuePurges, enqueuePurge, outboxDepth } from '../../../src/purge/purge-outbox.ts'
import { until } from '../../support/until.ts'

const cdn = await startFakeCdn()
t.teardown(() => cdn.close())
const settings: CdnSettings = {
  publicBaseUrl: 'https://www.example.test',
  varnishPurgeUrl: cdn.url,
  fastlyApiUrl: cdn.url,
  fastlyServiceId: 'svc1',
  fastlyApiToken: 'fastly-token',
  cloudflareApiUrl: cdn.url,
  cloudflareZoneId: 'zone1',
  cloudflareApiToken: 'cf-token',
}
t.beforeEach(() => {
  cdn.requests.length = 0
  cdn.failNext = 0
})

t.test('Varnish: xkey purge and soft purge by tag, PURGE per path', async (t) => {
  await new VarnishAdapter(cdn.url).purge({ paths: ['/crm'], tags: ['v-crm', 'p-1'], soft: false })
  await new VarnishAdapter(`${cdn.url}/`).purge({ paths: [], tags: ['t-seo'], soft: true })
  t.same(cdn.requests.map((r) => [r.method, r.url, r.headers['xkey-purge'] ?? r.headers['xkey-softpurge'] ?? null]), [
    ['PURGE', '/', 'v-crm p-1'],
    ['PURGE', '/crm', null],
    ['PURGE', '/', 't-seo'],
  ])
  t.equal(cdn.requests[2]!.headers['xkey-softpurge'], 't-seo')
})

t.test('Fastly: surrogate keys in batches of 256, soft purge header, URL purge', async (t) => {
  const tags = Array.from({ length: 300 }, (_, i) => `p-${i}`)
  await new FastlyAdapter(settings).purge({ paths: ['/crm/a'], tags, soft: true })
  const keyed = cdn.requests.filter((r) => r.url === '/service/svc1/purge')
  t.same(keyed.map((r) => String(r.headers['surrogate-key']).split(' ').length), [256, 44])
  t.ok(keyed.every((r) => r.headers['fastly-soft-purge'] === '1' && r.headers['fastly-key'] === 'fastly-token'))
  t.same(cdn.requests.filter((r) => r.url.startsWith('/purge/')).map((r) => r.url), ['/purge/www.example.test/crm/a'])
  await t.rejects(new FastlyAdapter({ ...settings, fastlyApiToken: 'wrong' }).purge({ paths: [], tags: ['x'], soft: false }), /fastly surrogate-key purge: 401/)
})

t.test('Cloudflare: tags and files in batches of 30, bearer token', async (t) => {
  const tags = Array.from({ length: 65 }, (_, i) => `p-${i}`)
  await new CloudflareAdapter(settings).purge({ paths: ['/a', '/b'], tags, soft: false })
  const bodies = cdn.requests.map((r) => JSON.parse(r.body) as { tags?: string[]; files?: string[] })
  t.same(bodies.map((b) => (b.tags ?? b.files)!.length), [30, 30, 5, 2])
  t.same(bodies[3], { files: ['https://www.example.test/a', 'https://www.example.test/b'] })
  t.ok(cdn.requests.every((r) => r.url === '/zones/zone1/purge_cache'))
})

t.test('POST /admin/purge: every instance, L2 and the CDNs, through a durable outbox', async (t) => {
  const redis = await privateRedis(t)
  const env = {
    ADMIN_TOKEN: 'purge-test-token-0123456789',
    REDIS_URL: redis.url,
    PURGE_TARGETS: 'varnish,fastly,cloudflare',
    VARNISH_PURGE_URL: cdn.url,
    FASTLY_API_URL: cdn.url,
    FASTLY_SERVICE_ID: 'svc1',
    FASTLY_API_TOKEN: 'fastly-token',
    CLOUDFLARE_API_URL: cdn.url,
    CLOUDFLARE_ZONE_ID: 'zone1',
    CLOUDFLARE_API_TOKEN: 'cf-token',
  }
  const a = await buildTestApp(t, env)
  const b = await buildTestApp(t, { ...env, DATABASE_URL: a.database.connectionString, DB_POOL_MAX: '1' })
  const auth = { authorization: `Bearer ${env.ADMIN_TOKEN}` }
  for (const app of [a, b]) {
    await app.inject({ url: '/crm/gyms/boston' })
    t.equal((await app.inject({ url: '/crm/gyms/boston' })).headers['x-cache'], 'HIT-L1')
  }

  const bad = await a.inject({ method: 'POST', url: '/admin/purge', headers: auth, payload: { paths: ['//x'], tags: ['A B'] } })
  t.equal(bad.statusCode, 400)
  t.equal(bad.json().details.length, 2)
  t.equal((await a.inject({ method: 'POST', url: '/admin/purge', headers: auth, payload: {} })).statusCode, 400)

  // The CDN APIs are down for the first attempts: the purge waits in the outbox, nothing is lost.
  cdn.failNext = 3
  const res = await a.inject({ method: 'POST', url: '/admin/purge', headers: auth, payload: { tags: ['v-crm'] } })
  t.equal(res.statusCode, 202)
  t.match(res.json(), { queued: 3 })
  t.ok(res.json().evicted >= 1, 'evicted here')
  t.not((await a.inject({ url: '/crm/gyms/boston' })).headers['x-cache'], 'HIT-L1')
  // The eviction reaches the other instance through Redis pub/sub: poll b until its L1 copy is gone.
  let onB = await b.inject({ url: '/crm/gyms/boston' })
  await until(
    'the purge to evict the L1 copy on the other instance',
    async () => {
      if (onB.headers['x-cache'] !== 'HIT-L1') return true
      onB = await b.inject({ url: '/crm/gyms/boston' })
      return onB.headers['x-cache'] !== 'HIT-L1'
    },
    { timeoutMs: 5_000, intervalMs: 25 },
  )
  t.not(onB.headers['x-cache'], 'HIT-L1', 'evicted on the other instance too')
  t.equal((await b.inject({ url: '/payroll/gyms/boston' })).statusCode, 200)

  // Wait for the first (failing) delivery, then make the retries due now rather than in seconds.
  const { db } = a.database
  await until('the first delivery attempt to reach all three CDNs', () => cdn.requests.length >= 3, { timeoutMs: 10_000, intervalMs: 50 })
  const pending = await db.selectFrom('purge_outbox').selectAll().where('status', '=', 'pending').execute()
  t.equal(pending.length, 3, 'all three still pending after the CDN outage')
  t.ok(pending.every((p) => p.attempts >= 1 && /503/.test(p.last_error ?? '')), 'each attempt and its error recorded')
  await db.updateTable('purge_outbox').set({ next_attempt_at: new Date(0) }).execute()
  t.equal(await deliverDuePurges(db, (await import('../../../src/purge/cdn-adapters.ts')).createAdapters(['varnish', 'fastly', 'cloudflare'], { ...settings }), { warn: () => {}, error: () => {} }), 3)
  t.equal(await outboxDepth(db), 0)
  const delivered = cdn.requests.slice(-3)
  t.same(delivered.map((r) => r.method + ' ' + r.url).sort(), ['POST /service/svc1/purge', 'POST /zones/zone1/purge_cache', 'PURGE /'])
})

t.test('outbox backoff and give-up', async (t) => {
  t.same([1, 2, 3, 10, 30].map(backoffMs), [1000, 2000, 4000, 512_000, 600_000])
  const app = await buildTestApp(t, { REDIS_URL: 'off' })
  const { db } = app.database
  t.equal(await enqueuePurge(db, [], { paths: ['/x'], tags: [], soft: false }), 0, 'no targets, nothing queued')
  await enqueuePurge(db, ['cloudflare'], { paths: [], tags: ['p-1'], soft: false })
  await db.updateTable('purge_outbox').set({ attempts: 19 }).execute()
  cdn.failNext = 1
  let errors = 0
  await deliverDuePurges(db, [new CloudflareAdapter(settings)], { warn: () => {}, error: () => errors++ })
  const row = await db.selectFrom('purge_outbox').selectAll().executeTakeFirstOrThrow()
  t.equal(row.status, 'failed', 'kept as failed after the last attempt, never deleted')
  t.equal(errors, 1, 'logged as an error')
})
