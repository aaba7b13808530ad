// Experiments end to end on one instance: a second variant in scope starts one at the next
// reallocation; buckets see their variant (one origin entry per variant, a CDN tag per bucket); the
// beacon's events count only from visitors with a bucket and only for competing variants; the bandit
// moves buckets to the variant that converts and purges what it moved; pin, pause, resume; the
// experiment ends when a variant leaves.

import t from 'tap'
import { sql } from 'kysely'
import { buildTestApp } from '../../helper.ts'
import { pageCacheKey } from '../../../src/pages/page-service.ts'
import { until } from '../../support/until.ts'
import { listExperiments, readExperimentCounts } from '../../../src/experiments/experiment-repository.ts'
import { experimentReports, formatReports } from '../../../src/experiments/experiment-report.ts'

const TOKEN = 'experiments-test-token-0123456789'
const auth = { authorization: `Bearer ${TOKEN}` }
const app = await buildTestApp(t, {
  ADMIN_TOKEN: TOKEN,
  REDIS_KEY_PREFIX: `vo-test-${process.pid}-experiments:`,
  EXPERIMENT_BUCKETS: '4',
  EXPERIMENT_REALLOCATE_SECONDS: '0',
  EXPERIMENT_MIN_SHARE: '0.25',
  EVENTS_RATE_LIMIT_PER_MINUTE: '100000',
  PURGE_TARGETS: 'varnish',
  VARNISH_PURGE_URL: 'http://127.0.0.1:9',
})
const { db } = app.database
const page = await db.selectFrom('pages').select(['id', 'path']).where('path', '=', '/crm').executeTakeFirstOrThrow()
const pageId = Number(page.id)
const original = await db.selectFrom('content_variants').selectAll().where('page_id', '=', pageId).where('segment', '=', 'smb').executeTakeFirstOrThrow()
const first = Number(original.id)
const { id: _id, embedding_text: _text, updated_at: _updated, features, metadata, ...copy } = original
const second = Number(
  (
    await db
      .insertInto('content_variants')
      .values({ ...copy, features: JSON.stringify(features), metadata: JSON.stringify(metadata), variant_key: `${original.variant_key}-b`, headline: 'The second headline', content_hash: 'second' })
      .returning('id')
      .executeTakeFirstOrThrow()
  ).id,
)

const get = (headers: Record<string, string>, url = '/crm') => app.inject({ url, headers: { 'x-segment': 'smb', ...headers } })
const variantOf = (body: string) => Number(/data-variant="(\d+)"/.exec(body)?.[1])
const tagsOf = (res: Awaited<ReturnType<typeof get>>) => String(res.headers['surrogate-key']).split(' ')
const report = async () => (await app.inject({ url: '/admin/experiments?page=/crm', headers: auth })).json().experiments as Array<{ segment: string; status: string; bestVariant: number; variants: Array<{ variant: number; views: number; conversions: number; share: number; probabilityBest: number; interval95: [number, number] }> }>
const outboxTags = async () => (await db.selectFrom('purge_outbox').select('tags').execute()).flatMap((r) => r.tags)

t.test('a segment with two variants in scope becomes an experiment at the next reallocation', async (t) => {
  const before = await get({ 'x-bucket': '1' })
  t.notMatch(before.headers.vary, /X-Bucket/, 'not yet: the bucket is ignored')
  t.equal(variantOf(before.body), first, 'the nearest variant (its own, then lowest id) as before')
  const result = await app.experiments.reallocate()
  t.match(result, { started: 1, ended: 0 })
  t.ok((await outboxTags()).includes(`p-${pageId}`), 'the page is purged at the CDN: its objects were rendered without buckets')
  const [experiment, ...others] = await report()
  t.equal(others.length, 0, 'only /crm for smb competes')
  t.match(experiment, { segment: 'smb', status: 'running' })
  t.same(experiment!.variants.map((v) => [v.variant, v.share]), [[first, 0.5], [second, 0.5]], 'an even split to start')
})

t.test('warm-up fills each competing variant\'s entry', async (t) => {
  t.match(await app.pages.warm('/crm', ['smb', 'enterprise']), { warmed: 3, failed: 0 }, 'two variants of smb, and enterprise\'s entry')
  const keys = [first, second].map((variantId) => pageCacheKey('/crm', 'smb', app.pages.generation, variantId))
  const stored = await app.pageCache.readShared(keys)
  t.same(stored.map((entry) => (entry === undefined ? undefined : variantOf(entry.body.toString()))), [first, second], 'in L2, each under its variant\'s key')
  t.match(stored[0]!.headers.vary, 'X-Bucket', 'rendered as under experiment')
})

t.test('each bucket sees its variant; the origin keeps one entry per variant, the CDN one object per bucket', async (t) => {
  const seen = []
  for (const bucket of ['0', '1', '2', '3']) {
    const res = await get({ 'x-bucket': bucket })
    t.equal(res.statusCode, 200)
    t.equal(res.headers.vary, 'X-Segment, X-Bucket, Accept-Encoding')
    t.ok(tagsOf(res).includes(`b-${pageId}_smb_${bucket}`), `bucket ${bucket} carries its own purge tag`)
    t.match(res.body, '<script src="/assets/vo-beacon.js" defer></script>')
    t.match(res.body, 'data-experiment')
    seen.push(variantOf(res.body))
  }
  t.same(seen, [first, second, first, second], 'buckets interleaved over the two variants')
  const again = await get({ 'x-bucket': '2' })
  t.equal(again.headers['x-cache'], 'HIT-L1', "bucket 2 is answered from bucket 0's entry: the same variant")
  t.ok(tagsOf(again).includes(`b-${pageId}_smb_2`) && !tagsOf(again).includes(`b-${pageId}_smb_0`), 'with its own tag, not the other bucket')
  const none = await get({})
  t.ok(tagsOf(none).includes(`b-${pageId}_smb_none`), 'no bucket (a crawler): the none tag')
  t.equal(variantOf(none.body), first, 'and the current best (no evidence yet: the lower id)')
  for (const bad of ['4', '99', 'x', '-1', '1.5']) t.equal(variantOf((await get({ 'x-bucket': bad })).body), first, `bucket ${bad} is the no-bucket case`)
  const other = await get({ 'x-segment': 'enterprise', 'x-bucket': '1' })
  t.equal(other.headers.vary, 'X-Segment, Accept-Encoding', 'a segment not under experiment ignores the bucket')
  t.notMatch(other.body, 'vo-beacon.js')
  const beacon = await app.inject({ url: '/assets/vo-beacon.js' })
  t.equal(beacon.statusCode, 200)
  t.match(beacon.headers['content-type'], 'text/javascript')
  t.match(beacon.headers['cache-control'], 'public, max-age=86400')
  t.match(beacon.body, "navigator.sendBeacon('/events'")
})

t.test('events: only visitors with a bucket and competing variants count; the bandit moves buckets and purges them', async (t) => {
  const ts = Date.now()
  const events = [
    ...Array.from({ length: 200 }, (_, i) => ({ type: 'view', path: '/crm', segment: 'smb', variant: i % 2 === 0 ? first : second, bucket: i % 4, ts })),
    ...Array.from({ length: 5 }, () => ({ type: 'cta_click', path: '/crm', segment: 'smb', variant: first, bucket: 0, ts })),
    ...Array.from({ length: 40 }, () => ({ type: 'cta_click', path: '/crm', segment: 'smb', variant: second, bucket: 1, ts })),
  ]
  for (let i = 0; i < events.length; i += 100) t.equal((await app.inject({ method: 'POST', url: '/events', payload: { events: events.slice(i, i + 100) } })).statusCode, 202)
  // Counted for nothing: a crawler, no bucket, an unknown bucket, a variant outside the experiment, a segment not under one.
  const ignored = [
    { type: 'cta_click', path: '/crm', segment: 'smb', variant: first, bucket: 0, ts },
    { type: 'cta_click', path: '/crm', segment: 'smb', variant: first, ts },
    { type: 'cta_click', path: '/crm', segment: 'smb', variant: first, bucket: 7, ts },
    { type: 'cta_click', path: '/crm', segment: 'smb', variant: 99_999, bucket: 0, ts },
    { type: 'cta_click', path: '/crm', segment: 'enterprise', variant: first, bucket: 0, ts },
  ]
  t.equal((await app.inject({ method: 'POST', url: '/events', headers: { 'user-agent': 'Mozilla/5.0 (compatible; Googlebot/2.1)' }, payload: ignored[0] })).statusCode, 202)
  t.equal((await app.inject({ method: 'POST', url: '/events', payload: { events: ignored.slice(1) } })).statusCode, 202)
  t.equal((await app.inject({ method: 'POST', url: '/events', payload: { type: 'view', path: '/crm', bucket: 1000, ts } })).statusCode, 400, 'a bucket that is not one is a 400')
  await until('the consumer to count the events', async () => (await report())[0]!.variants.reduce((n, v) => n + v.views, 0) === 200, { timeoutMs: 20_000 })
  await new Promise((resolve) => setTimeout(resolve, 300)) // the ignored events' batch, if it were counted
  const counted = (await report())[0]!
  t.same(counted.variants.map((v) => [v.views, v.conversions]), [[100, 5], [100, 40]], 'only the bucketed events of competing variants')

  const purgedBefore = (await outboxTags()).length
  const result = await app.experiments.reallocate()
  const after = (await report())[0]!
  t.same(after.variants.map((v) => v.share), [0.25, 0.75], 'three buckets of four to the variant that converts, one kept by the floor')
  t.ok(after.variants[1]!.probabilityBest > 0.99, `P(best) ${after.variants[1]!.probabilityBest}`)
  t.equal(after.bestVariant, second)
  t.equal(result.moved, 1, 'one bucket moved')
  const purged = (await outboxTags()).slice(purgedBefore)
  t.same(purged.sort(), [`b-${pageId}_smb_2`, `b-${pageId}_smb_none`], 'the moved bucket and the no-bucket objects (the best changed) are purged, nothing else')
  t.equal(variantOf((await get({ 'x-bucket': '2' })).body), second, 'bucket 2 now sees the second variant')
  t.equal(variantOf((await get({})).body), second, 'so does a visitor without a bucket')
  const metrics = (await app.inject({ url: '/metrics' })).body
  t.match(metrics, `variant_origin_experiment_bucket_share{page="/crm",segment="smb",variant="${second}"} 0.75`, 'the dashboard gauges')
  t.match(metrics, `variant_origin_experiment_conversion_rate{page="/crm",segment="smb",variant="${second}"} 0.4`)
  const table = formatReports(experimentReports(await listExperiments(db), await readExperimentCounts(db)))
  t.match(table, new RegExp(`/crm\\s+smb\\s+running\\s+${second}\\*\\s+100\\s+40\\s+40\\.0%\\s+30\\.\\d%-49\\.\\d%`), `npm run experiments' table:\n${table}`)
  const [low, high] = after.variants[1]!.interval95
  t.ok(low < 0.4 && high > 0.4, `the 95% interval [${low}, ${high}] holds the observed rate`)
})

t.test('pin, pause and resume; clear errors', async (t) => {
  const post = (payload: object) => app.inject({ method: 'POST', url: '/admin/experiments', headers: auth, payload })
  const pinned = await post({ page: '/crm', segment: 'smb', action: 'pin', variant: first })
  t.equal(pinned.statusCode, 200)
  t.match(pinned.json(), { status: 'pinned', pinnedVariant: first, bestVariant: first })
  for (const bucket of ['0', '1', '2', '3']) t.equal(variantOf((await get({ 'x-bucket': bucket })).body), first, `pinned: bucket ${bucket} sees the pin`)
  t.same((await report())[0]!.variants.map((v) => v.share), [1, 0])
  t.equal((await post({ page: '/crm', segment: 'smb', action: 'pause' })).json().status, 'paused')
  const paused = await app.experiments.reallocate()
  t.equal(paused.moved, 0, 'a paused split does not move')
  t.equal((await post({ page: '/crm', segment: 'smb', action: 'resume' })).json().status, 'running')

  const cases: Array<[object, number, RegExp]> = [
    [{ page: '/crm', segment: 'smb', action: 'pin' }, 400, /pin needs the variant/],
    [{ page: '/crm', segment: 'smb', action: 'pause', variant: first }, 400, /takes no variant/],
    [{ page: '/crm', segment: 'smb', action: 'pin', variant: 99_999 }, 400, /is not competing/],
    [{ page: '/crm', segment: 'enterprise', action: 'pause' }, 404, /no experiment on \/crm for segment enterprise/],
    [{ page: 'crm', segment: 'smb', action: 'pause' }, 400, /not a canonical page path/],
    [{ page: '/crm', segment: 'smb', action: 'stop' }, 400, /action/],
  ]
  for (const [payload, status, message] of cases) {
    const res = await post(payload)
    t.equal(res.statusCode, status, JSON.stringify(payload))
    t.match(res.body, message)
    t.match(res.headers['cache-control'] ?? 'no-store', /no-store|private/, 'an error is never cacheable')
  }
  t.equal((await app.inject({ method: 'POST', url: '/admin/experiments', payload: { page: '/crm', segment: 'smb', action: 'pause' } })).statusCode, 401, 'admin only')
})

t.test('events still in the stream count at reallocation, before the consumer has aggregated them', async (t) => {
  // Another instance on the same database with a stream of its own that no consumer reads.
  const idle = await buildTestApp(t, {
    ADMIN_TOKEN: TOKEN,
    DATABASE_URL: app.database.connectionString,
    DB_POOL_MAX: '1',
    REDIS_KEY_PREFIX: `vo-test-${process.pid}-experiments-idle:`,
    EVENTS_CONSUMER: 'false',
    EXPERIMENT_BUCKETS: '4',
    EXPERIMENT_REALLOCATE_SECONDS: '0',
    EXPERIMENT_MIN_SHARE: '0.25',
    EVENTS_RATE_LIMIT_PER_MINUTE: '100000',
  })
  const ts = Date.now()
  const events = [
    ...Array.from({ length: 200 }, () => ({ type: 'view', path: '/crm', segment: 'smb', variant: first, bucket: 0, ts })),
    ...Array.from({ length: 200 }, () => ({ type: 'cta_click', path: '/crm', segment: 'smb', variant: first, bucket: 0, ts })),
  ]
  for (let i = 0; i < events.length; i += 100) t.equal((await idle.inject({ method: 'POST', url: '/events', payload: { events: events.slice(i, i + 100) } })).statusCode, 202)
  const before = (await report())[0]!
  await idle.experiments.reallocate()
  const after = (await report())[0]!
  t.same(after.variants.map((v) => [v.views, v.conversions]), before.variants.map((v) => [v.views, v.conversions]), 'the aggregates are unchanged: the events are still in the stream')
  t.ok(after.variants[0]!.probabilityBest > 0.99, `but the first variant (205 of 300 against 40 of 100) now looks best: P(best) ${after.variants[0]!.probabilityBest}`)
  t.same(after.variants.map((v) => v.share), [0.75, 0.25], 'and gets the buckets')
})

t.test('a variant leaves: the experiment ends and the page stops varying by bucket', async (t) => {
  await db.deleteFrom('content_variants').where('id', '=', second).execute()
  const result = await app.experiments.reallocate()
  t.match(result, { ended: 1 })
  t.same(await report(), [])
  t.equal(Number((await sql<{ n: string }>`SELECT count(*) AS n FROM experiment_counts`.execute(db)).rows[0]!.n), 0, 'its counts went with it')
  const res = await get({ 'x-bucket': '1' })
  t.equal(res.headers.vary, 'X-Segment, Accept-Encoding')
  t.equal(variantOf(res.body), first)
  t.notMatch(res.body, 'vo-beacon.js')
})
