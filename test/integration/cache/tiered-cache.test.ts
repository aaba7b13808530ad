// The tiered cache across two app instances sharing one Redis: L2 hits, pub/sub invalidation,
// one render per key across instances, stale-while-revalidate, stale-if-error, fast 503s.

import t from 'tap'
import { buildTestApp } from '../../helper.ts'
import { privateRedis } from '../../support/redis-server.ts'
import { Redis } from 'ioredis'
import { pageCacheKey } from '../../../src/pages/page-service.ts'
import { metricValue } from '../../support/metrics.ts'
import { until } from '../../support/until.ts'
import { warmAndWait } from '../../support/admin-jobs.ts'

// A dozen apps, each on its own embedded PostgreSQL with the demo site: past tap's 180 s per file on a
// loaded 2-core machine (seen once, with a benchmark running beside the suite).
t.setTimeout(400_000)
const redis = await privateRedis(t)
// The tiers are the subject, not Redis timeouts (redis-faults.test.ts): on a busy machine, and with the
// concurrency a real PostgreSQL's pool allows (the native pass), a command can outlast the default 50 ms,
// and a read that times out is a miss, a write that does a key the warm-up counts as skipped.
const shared = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'vo-tier:', REDIS_COMMAND_TIMEOUT_MS: '2000' }

t.test('two instances share L2 and invalidations', async (t) => {
  const a = await buildTestApp(t, shared)
  // Both instances on one database, as in production: the second reaches the first's embedded server.
  const b = await buildTestApp(t, { ...shared, DATABASE_URL: a.database.connectionString, DB_POOL_MAX: '1' })
  const first = await a.inject({ url: '/crm/gyms/austin' })
  t.equal(first.headers['x-cache'], 'MISS')
  const fromB = await b.inject({ url: '/crm/gyms/austin' })
  t.equal(fromB.headers['x-cache'], 'HIT-L2', 'the other instance answers from Redis')
  t.equal(fromB.body, first.body)
  t.equal(fromB.headers.etag, first.headers.etag)
  t.equal(fromB.headers['cache-control'], first.headers['cache-control'])
  t.equal((await b.inject({ url: '/crm/gyms/austin' })).headers['x-cache'], 'HIT-L1')

  await a.database.db.updateTable('pages').set({ title: 'CRM for Gyms in Austin, revised', updated_at: new Date() }).where('path', '=', '/crm/gyms/austin').execute()
  await a.pages.invalidatePaths(['/crm/gyms/austin'])
  let after: Awaited<ReturnType<typeof b.inject>> | undefined
  await until('the invalidation to reach the other instance', async () => ((after = await b.inject({ url: '/crm/gyms/austin' })).headers['x-cache'] !== 'HIT-L1'), { timeoutMs: 1_000, intervalMs: 25 })
  t.not(after!.headers['x-cache'], 'HIT-L1', 'the invalidation reached the other instance over pub/sub')
  t.match(after!.body, 'CRM for Gyms in Austin, revised')
})

t.test('a stampede on one cold key renders once across two instances', async (t) => {
  const a = await buildTestApp(t, shared)
  // Both instances on one database, as in production: the second reaches the first's embedded server.
  const b = await buildTestApp(t, { ...shared, DATABASE_URL: a.database.connectionString, DB_POOL_MAX: '1' })
  const renders = async () => (await metricValue(a, 'variant_origin_renders_total')) + (await metricValue(b, 'variant_origin_renders_total'))
  const before = await renders()
  const url = '/payroll/plumbers/miami'
  const responses = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? a : b).inject({ url })))
  t.ok(responses.every((r) => r.statusCode === 200))
  t.equal(new Set(responses.map((r) => r.headers.etag)).size, 1, 'one body for everyone')
  t.equal((await renders()) - before, 1, 'one render in all')
})

t.test('stale-while-revalidate, then stale-if-error and fast 503s when PostgreSQL fails', async (t) => {
  const app = await buildTestApp(t, { ...shared, REDIS_KEY_PREFIX: 'vo-tier-stale:', ORIGIN_FRESH_SECONDS: '1', L1_TTL_SECONDS: '1' })
  const url = '/helpdesk/schools/boston'
  const warm = await app.inject({ url })
  t.equal(warm.headers['x-cache'], 'MISS')
  await new Promise((resolve) => setTimeout(resolve, 1100)) // the 1 s fresh window passing is the point
  const stale = await app.inject({ url })
  t.equal(stale.headers['x-cache'], 'STALE', 'past the fresh window: served stale')
  t.ok(Number(stale.headers.age) >= 1, `a stale answer carries its Age (${stale.headers.age})`)
  t.notOk('age' in warm.headers, 'a fresh render has none')
  t.equal(stale.body, warm.body)
  let refreshed: Awaited<ReturnType<typeof app.inject>> | undefined
  await until('the background refresh', async () => ((refreshed = await app.inject({ url })).headers['x-cache'] === 'HIT-L1'), { timeoutMs: 1_000, intervalMs: 25 })
  t.equal(refreshed!.headers['x-cache'], 'HIT-L1', 'the background refresh replaced it')

  // PostgreSQL goes away.
  await app.database.pool.end()
  await new Promise((resolve) => setTimeout(resolve, 1100)) // past the fresh window again: a refresh is due, and fails
  const fromStale = await app.inject({ url })
  t.equal(fromStale.statusCode, 200, 'a warm key is still served')
  t.equal(fromStale.headers['x-cache'], 'STALE')
  t.equal(fromStale.body, warm.body, 'the failed refresh did not replace the good entry')
  const cold = (i: number) => app.inject({ url: `/helpdesk/gyms/city-${i}` })
  for (let i = 0; i < 8; i++) {
    const res = await cold(i)
    t.equal(res.statusCode, 503, 'a cold key is a 503')
    t.equal(res.headers['cache-control'], 'no-store')
    t.equal(res.headers['retry-after'], '5')
  }
  t.equal(await metricValue(app, 'variant_origin_circuit_breaker_state', { breaker: 'database' }), 2, 'the database circuit opened')
  const attempts = await metricValue(app, 'variant_origin_renders_total')
  const refused = await Promise.all([8, 9, 10].map(cold))
  t.same(
    { statuses: refused.map((r) => r.statusCode), renders: (await metricValue(app, 'variant_origin_renders_total')) - attempts },
    { statuses: [503, 503, 503], renders: 0 },
    'once open, cold keys are refused without a render reaching the database',
  )
  const again = await app.inject({ url })
  t.equal(again.statusCode, 200, 'the warm key stays served with the circuit open')
})

t.test('warm-up renders the top pages into L2 (per segment only where a page differs by segment), never over live entries', async (t) => {
  const a = await buildTestApp(t, { ...shared, REDIS_KEY_PREFIX: 'vo-tier-warm:', ADMIN_TOKEN: 'warm-test-token-0123456789' })
  const b = await buildTestApp(t, { ...shared, REDIS_KEY_PREFIX: 'vo-tier-warm:', DATABASE_URL: a.database.connectionString, DB_POOL_MAX: '1' })
  const auth = { authorization: 'Bearer warm-test-token-0123456789' }
  const top = await a.database.db.selectFrom('pages').select(['path', 'kind']).where('status', '=', 'published').orderBy('crawl_weight', 'desc').orderBy('id').limit(20).execute()
  const landing = top.filter((p) => p.kind === 'landing').length
  t.equal(landing, 3, 'the demo: three landing pages (a variant per segment) and the heaviest SEO pages')
  await a.inject({ url: top[0]!.path }) // live traffic got there first for one key
  const renders = await metricValue(a, 'variant_origin_renders_total')
  const res = await warmAndWait(a, auth, { top: 20, concurrency: 4 })
  t.equal(res.statusCode, 202, res.body)
  t.equal(res.job?.state, 'done', res.job?.error ?? '')
  const entries = landing * 4 + (20 - landing)
  t.match(res.job?.result, { pages: 20, segments: 4, attempted: entries, warmed: entries - 1, skipped: 1, failed: 0, successRate: 1 }, 'an SEO page is one entry; a landing page one per segment')
  t.equal((await metricValue(a, 'variant_origin_renders_total')) - renders, entries - 1, 'one render per entry: an SEO page is rendered once, not once per segment')
  for (const { path, kind } of [...top.slice(0, 3), ...top.slice(-3)]) {
    const results = []
    for (const segment of ['smb', 'developer']) results.push((await b.inject({ url: path, headers: { 'x-segment': segment } })).headers['x-cache'])
    // Another instance: a landing page's entries are per segment in L2; an SEO page's one entry, once in L1, answers every segment.
    t.same(results, kind === 'landing' ? ['HIT-L2', 'HIT-L2'] : ['HIT-L2', 'HIT-L1'], `${path} warm for another instance`)
  }
  const again = await warmAndWait(a, auth, { top: 20 })
  t.match(again.job?.result, { warmed: 0, skipped: entries, successRate: 1 }, 'a second run finds everything fresh')
  t.equal((await a.inject({ method: 'POST', url: '/admin/warm', headers: auth, payload: { top: 0 } })).statusCode, 400)
})

t.test('concurrent lookups of one key share one Redis read; an invalidation splits them and keeps L1 clean', async (t) => {
  const app = await buildTestApp(t, { ...shared, REDIS_KEY_PREFIX: 'vo-tier-coalesce:' })
  const path = '/crm/dentists/austin'
  t.equal((await app.inject({ url: path })).headers['x-cache'], 'MISS')
  const key = pageCacheKey(path, undefined, app.pages.generation) // an SEO page: one entry for every segment
  const direct = new Redis(redis.url)
  t.teardown(() => direct.disconnect())
  // A page's two keys (its entry for every segment, the segment's own) are read with one MGET.
  const gets = async () => {
    const stats = await direct.info('commandstats')
    return Number(/cmdstat_get:calls=(\d+)/.exec(stats)?.[1] ?? 0) + Number(/cmdstat_mget:calls=(\d+)/.exec(stats)?.[1] ?? 0)
  }

  app.pageCache.evictLocal([key]) // L1 forgets it; L2 still holds it
  const before = await gets()
  const lookups = await Promise.all(Array.from({ length: 20 }, () => app.pages.lookup(path, 'general')))
  t.ok(lookups.every((l) => l.hit?.cacheResult === 'HIT-L2'))
  t.equal(new Set(lookups.map((l) => l.hit!.response)).size, 1, 'one decoded entry for all of them')
  t.equal(await gets(), before + 1, 'one Redis read for twenty lookups')
  t.equal(await metricValue(app, 'variant_origin_l2_reads_coalesced_total'), 19)
  t.ok(app.pages.freshLocal(path, 'general'), 'the L2 hit refilled L1')
  t.match((await app.inject({ url: '/metrics' })).body, /variant_origin_l2_reads_coalesced_total 19\n/)

  // A purge lands while a read is in flight: later lookups send their own read, and the read that
  // straddled the purge answers the lookups that were already waiting but never refills L1.
  app.pageCache.evictLocal([key])
  const straddling = app.pages.lookup(path, 'general')
  app.pageCache.evictLocal([key])
  const after = app.pages.lookup(path, 'general')
  t.equal(await metricValue(app, 'variant_origin_l2_reads_coalesced_total'), 19, 'the lookup after the purge did not join the earlier read')
  const [first, second] = await Promise.all([straddling, after])
  t.equal(first.hit?.cacheResult, 'HIT-L2')
  t.equal(second.hit?.cacheResult, 'HIT-L2')
  t.not(first.hit!.response, second.hit!.response, 'two reads')
  t.equal(app.pageCache.peekLocal(key)?.response, second.hit!.response, 'L1 holds what the read after the purge got')
})

t.test('an entry rendered under other header settings is never served: CDN_FLAVOUR switched against the same Redis', async (t) => {
  const generic = await buildTestApp(t, { ...shared, REDIS_KEY_PREFIX: 'vo-tier-flavour:', CDN_FLAVOUR: 'generic' })
  const path = '/payroll/gyms/boston'
  const first = await generic.inject({ url: path })
  t.ok(first.headers['surrogate-key'], 'generic: Surrogate-Key')
  t.equal((await generic.inject({ url: path })).headers['x-cache'], 'HIT-L1')
  const varnish = await buildTestApp(t, { ...shared, REDIS_KEY_PREFIX: 'vo-tier-flavour:', CDN_FLAVOUR: 'varnish', DATABASE_URL: generic.database.connectionString, DB_POOL_MAX: '1' })
  const switched = await varnish.inject({ url: path })
  t.equal(switched.headers['x-cache'], 'MISS', 'not the generic entry from L2')
  t.equal(switched.headers.xkey, first.headers['surrogate-key'], 'the tags in the header Varnish purges by')
  t.notOk('surrogate-key' in switched.headers)
  t.not(varnish.pages.generation, generic.pages.generation, 'the settings are part of every key')
  const sameSettings = await buildTestApp(t, { ...shared, REDIS_KEY_PREFIX: 'vo-tier-flavour:', CDN_FLAVOUR: 'varnish', DATABASE_URL: generic.database.connectionString, DB_POOL_MAX: '1' })
  t.equal((await sameSettings.inject({ url: path })).headers['x-cache'], 'HIT-L2', 'instances configured alike still share entries')
})

t.test('a miss answers from L1, then writes L2, its tag indexes and the unlock; a close right after loses none of them', async (t) => {
  const prefix = 'vo-tier-after:'
  const app = await buildTestApp(t, { ...shared, REDIS_KEY_PREFIX: prefix })
  const direct = new Redis(redis.url)
  t.teardown(() => direct.disconnect())
  const calls = async (command: string) => Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(await direct.info('commandstats'))?.[1] ?? 0)
  const path = '/helpdesk/dentists/denver'
  const key = prefix + pageCacheKey(path, undefined, app.pages.generation)
  const [multisBefore, evalsBefore, pipelinedBefore] = [await calls('multi'), await calls('eval'), await calls('zadd')]
  const res = await app.inject({ url: path })
  t.equal(res.headers['x-cache'], 'MISS')
  const tags = String(res.headers['surrogate-key'] ?? res.headers.xkey ?? res.headers['cache-tag']).split(/[ ,]+/).filter(Boolean)
  t.ok(tags.length >= 3, `the entry carries its tags (${tags.join(' ')})`)
  // Redis holds every client's commands for 300 ms: whatever the origin sends after its answer is
  // still waiting when the app closes.
  await direct.client('PAUSE', 300, 'ALL')
  await app.close()
  t.ok(await direct.exists(key), 'the close waited for the L2 write')
  for (const tag of tags) t.ok((await direct.zscore(`${prefix}ztag:${tag}`, key.slice(prefix.length))) !== null, `tag index ${tag} lists the key`)
  t.equal((await direct.keys(`${prefix}lock:*`)).length, 0, 'the render lock was released')
  t.equal((await calls('eval')) - evalsBefore, 1, 'one unlock')
  t.equal((await calls('zadd')) - pipelinedBefore, tags.length, 'one ZADD per tag')
  t.equal((await calls('multi')) - multisBefore, 0, 'pipelined with the entry, no transaction')
})
