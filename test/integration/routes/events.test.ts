// POST /events: 202 only once the events are in the stream, 400 naming each bad event (and nothing
// written), 429 past the per-address limit, 503 (never 202) when Redis is off or down.

import t from 'tap'
import { Redis } from 'ioredis'
import { buildTestApp, TEST_REDIS_URL } from '../../helper.ts'
import { privateRedis } from '../../support/redis-server.ts'
import { EVENTS_BODY_LIMIT } from '../../../routes/events.ts'
import { until as waitUntil } from '../../support/until.ts'

const prefix = `vo-test-${process.pid}-events-route:`
// The consumer is off here: these tests read what the route wrote, before anything consumes it.
// inject() connects from 127.0.0.1, named the trusted proxy, so each test's X-Forwarded-For is its client.
const app = await buildTestApp(t, { REDIS_KEY_PREFIX: prefix, EVENTS_CONSUMER: 'false', EVENTS_RATE_LIMIT_PER_MINUTE: '5', SEED_DEMO: 'false', TRUST_PROXY: '127.0.0.1' })
// Further instances use the same (embedded) database: one PostgreSQL start per file, not three.
const sharedDatabase = { DATABASE_URL: app.database.connectionString, DB_POOL_MAX: '1', SEED_DEMO: 'false' }
const raw = new Redis(TEST_REDIS_URL)
t.teardown(() => raw.disconnect())
const streamLength = () => raw.xlen(app.events.keys.stream)

const until = (what: string, check: () => boolean | Promise<boolean>) => waitUntil(what, check, { timeoutMs: 10_000 })

let address = 0
/** A fresh client address per test, so the rate limit of one test does not spill into another. */
const client = () => ({ 'x-forwarded-for': `203.0.113.${++address}` })
const post = (payload: unknown, headers: Record<string, string> = client()) => app.inject({ method: 'POST', url: '/events', headers, payload: payload as object })
const event = (extra: Record<string, unknown> = {}) => ({ type: 'view', path: '/crm', ts: Date.now() - 1000, ...extra })

t.test('a batch is written to the stream as one entry: 202, no-store', async (t) => {
  const before = await streamLength()
  const res = await post({ events: [event({ segment: 'enterprise' }), event({ type: 'scroll_depth', value: 80 }), event({ type: 'cta_click', variant: 7 })] }, { ...client(), 'x-segment': 'general' })
  t.equal(res.statusCode, 202)
  t.equal(res.headers['cache-control'], 'no-store')
  const body = res.json()
  t.equal(body.accepted, 3)
  t.match(body.id, /^\d+-\d+$/)
  t.equal(await streamLength(), before + 1)
  const [id, fields] = ((await raw.xrange(app.events.keys.stream, body.id, body.id)) as Array<[string, string[]]>)[0]!
  t.equal(id, body.id)
  const events = JSON.parse(fields[fields.indexOf('events') + 1]!)
  // No segment table is seeded: every slug but the default one is unknown, and counts as the default.
  t.same(events.map((e: { segment: string }) => e.segment), ['general', 'general', 'general'])
  t.same(events.map((e: { type: string }) => e.type), ['view', 'scroll_depth', 'cta_click'])

  const single = await post(event())
  t.equal(single.statusCode, 202)
  t.equal(single.json().accepted, 1)
  t.equal(app.events.counters().accepted, 4)
})

t.test('sendBeacon bodies (text/plain) are read as JSON', async (t) => {
  const res = await app.inject({ method: 'POST', url: '/events', headers: { ...client(), 'content-type': 'text/plain;charset=UTF-8' }, payload: JSON.stringify(event()) })
  t.equal(res.statusCode, 202)
  const bad = await app.inject({ method: 'POST', url: '/events', headers: { ...client(), 'content-type': 'text/plain' }, payload: 'not json' })
  t.equal(bad.statusCode, 400)
  t.equal(bad.headers['cache-control'], 'no-store')
})

t.test('one bad event refuses the whole batch, names its index and field, writes nothing', async (t) => {
  const before = await streamLength()
  const res = await post({ events: [event(), event({ type: 'hover' }), event(), event({ path: '/CRM/', ts: Date.now() + 3_600_000 })] })
  t.equal(res.statusCode, 400)
  t.equal(res.headers['cache-control'], 'no-store')
  const body = res.json()
  t.equal(body.error, 'VALIDATION_FAILED')
  t.match(body.message, /3 problem\(s\) in the events batch; nothing was written/)
  t.same(body.details.map((d: { record: number; field: string }) => [d.record, d.field]), [[1, 'type'], [3, 'path'], [3, 'ts']])
  t.equal(await streamLength(), before, 'nothing written')
})

t.test('too large a body: 413, nothing written', async (t) => {
  const before = await streamLength()
  const res = await post({ events: [event({ path: `/${'a'.repeat(EVENTS_BODY_LIMIT)}` })] })
  t.equal(res.statusCode, 413)
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(await streamLength(), before)
})

t.test('rate limit per client address: 429 with Retry-After, other addresses unaffected', async (t) => {
  const headers = client()
  for (let i = 0; i < 5; i++) t.equal((await post(event(), headers)).statusCode, 202, `request ${i + 1} of 5`)
  const limited = await post(event(), headers)
  t.equal(limited.statusCode, 429)
  t.equal(limited.headers['cache-control'], 'no-store')
  t.ok(Number(limited.headers['retry-after']) > 0 && Number(limited.headers['retry-after']) <= 60, `retry-after ${limited.headers['retry-after']}`)
  t.match(limited.json(), { statusCode: 429, error: 'RATE_LIMITED', message: /more than 5 event requests a minute/ })
  t.equal((await post(event())).statusCode, 202, 'another address is not limited')
  // The count lives in Redis, under the origin's key prefix: every instance shares it.
  t.equal(Number(await raw.get(`${prefix}events-rate-limit:POST/events-${headers['x-forwarded-for']}`)), 6)
})

t.test('other pages are not rate limited', async (t) => {
  const headers = client()
  for (let i = 0; i < 7; i++) t.not((await app.inject({ url: '/health/live', headers })).statusCode, 429)
})

t.test('Redis down: 503 with Retry-After, never 202', async (t) => {
  const redis = await privateRedis(t)
  const down = await buildTestApp(t, { REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'vo-events-down:', EVENTS_CLAIM_IDLE_MS: '200', ...sharedDatabase })
  t.equal((await down.inject({ method: 'POST', url: '/events', payload: event() })).statusCode, 202, 'accepted while Redis is up')
  await until('the consumer to count it', async () => down.events.counters().processedMessages === 1)
  t.same(await down.events.stats(), { length: 1, lag: 0, pending: 0 }, 'consumed by the group')
  t.equal(down.events.counters().unknownPathEvents, 1, 'no pages seeded: counted, not stored')
  await redis.kill()
  const res = await down.inject({ method: 'POST', url: '/events', payload: event() })
  t.equal(res.statusCode, 503)
  t.equal(res.headers['retry-after'], '5')
  t.equal(res.headers['cache-control'], 'no-store')
  t.match(res.json().message, /not accepted: the event stream is unavailable; retry shortly/)
  await t.rejects(down.events.stats(), { code: 'UNAVAILABLE' })
  const started = Date.now()
  await down.close()
  t.ok(Date.now() - started < 2_000, `closes without waiting on the dead Redis (${Date.now() - started} ms)`)
})

t.test('Redis switched off: 503, and no consumer', async (t) => {
  const off = await buildTestApp(t, { REDIS_URL: 'off', ...sharedDatabase })
  const res = await off.inject({ method: 'POST', url: '/events', payload: event() })
  t.equal(res.statusCode, 503)
  t.equal(res.headers['retry-after'], '5')
  t.match(res.json().message, /switched off/)
  t.equal(off.events.consuming, false)
  await t.rejects(off.events.stats(), { code: 'UNAVAILABLE', message: /REDIS_URL=off/ })
})

t.test('EVENTS_REDIS_URL: the stream lives in a Redis of its own, apart from the cache', async (t) => {
  const streamRedis = await privateRedis(t)
  const eventsPrefix = `vo-test-${process.pid}-events-own:`
  const own = await buildTestApp(t, { REDIS_KEY_PREFIX: eventsPrefix, EVENTS_REDIS_URL: streamRedis.url, EVENTS_CLAIM_IDLE_MS: '200', ...sharedDatabase })
  t.not(own.eventsRedis, own.redis, 'a client of its own')
  const direct = new Redis(streamRedis.url)
  t.teardown(() => direct.disconnect())

  const res = await own.inject({ method: 'POST', url: '/events', headers: client(), payload: event() })
  t.equal(res.statusCode, 202)
  t.equal(await direct.xlen(own.events.keys.stream), 1, 'written to the events Redis')
  t.equal(await raw.exists(own.events.keys.stream), 0, 'not to the cache Redis')
  await until('the consumer to count it', async () => own.events.counters().processedMessages === 1)
  t.same(await own.events.stats(), { length: 1, lag: 0, pending: 0 })
  t.match((await own.inject({ url: '/metrics' })).body, /variant_origin_events_stream_length 1\n/, 'the gauges read the events Redis')

  const ready = await own.inject({ url: '/health/ready' })
  t.equal(ready.statusCode, 200)
  t.match(ready.json(), { status: 'ok', checks: { redis: { status: 'ok' }, events: { status: 'ok' } } })

  // The events Redis going away takes events down (503, never 202), not pages; readiness says degraded.
  await streamRedis.kill()
  const refused = await own.inject({ method: 'POST', url: '/events', headers: client(), payload: event() })
  t.equal(refused.statusCode, 503)
  t.equal(refused.headers['retry-after'], '5')
  const degraded = await own.inject({ url: '/health/ready' })
  t.equal(degraded.statusCode, 200)
  t.match(degraded.json(), { status: 'degraded', checks: { redis: { status: 'ok' }, events: { status: 'degraded', detail: /POST \/events answers 503/ } } })
  t.equal((await own.inject({ url: '/health/ready' })).json().checks.redis.status, 'ok')
})

t.test('the stream shares the cache Redis unless EVENTS_REDIS_URL is set: readiness has no events check', async (t) => {
  t.equal(app.eventsRedis, app.redis)
  const ready = await app.inject({ url: '/health/ready' })
  t.notOk('events' in ready.json().checks)
})

t.test('events on their own Redis while the cache Redis is off', async (t) => {
  const streamRedis = await privateRedis(t)
  const only = await buildTestApp(t, { REDIS_URL: 'off', EVENTS_REDIS_URL: streamRedis.url, EVENTS_CONSUMER: 'false', ...sharedDatabase })
  t.equal(only.redis, null)
  t.equal((await only.inject({ method: 'POST', url: '/events', headers: client(), payload: event() })).statusCode, 202)
  t.match((await only.inject({ url: '/health/ready' })).json(), { status: 'ok', checks: { redis: { status: 'off' }, events: { status: 'ok' } } })
})
