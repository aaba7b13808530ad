// The consumer group across instances: an instance that dies before XACK loses nothing (another one
// claims its entries), nothing is counted twice, poison and unreadable entries go to the dead-letter
// stream, and the stream's numbers say what is waiting.

import tap from 'tap'
import { Redis } from 'ioredis'
import { sql } from 'kysely'
import { buildTestApp, TEST_REDIS_URL } from '../../helper.ts'
import { encodeStreamEntry, type EngagementEvent } from '../../../src/events/engagement-event.ts'
import { pruneStreamReceipts, recordEngagement } from '../../../src/events/engagement-repository.ts'
import { CONSUMER_GROUP, eventStreamKeys, streamStats } from '../../../src/events/event-stream.ts'
import { until as waitUntil } from '../../support/until.ts'

const prefix = `vo-test-${process.pid}-consumer:`
const keys = eventStreamKeys(prefix)
const raw = new Redis(TEST_REDIS_URL)
tap.teardown(() => raw.disconnect())

const until = (what: string, check: () => boolean | Promise<boolean>) => waitUntil(what, check, { timeoutMs: 15_000, errorsMeanNotYet: true })

// One database (with the demo pages) for every instance, as in production; this instance only accepts.
const host = await buildTestApp(tap, { REDIS_KEY_PREFIX: prefix, EVENTS_CONSUMER: 'false' })
const { db } = host.database
const instanceEnv = { REDIS_KEY_PREFIX: prefix, DATABASE_URL: host.database.connectionString, DB_POOL_MAX: '1', EVENTS_CLAIM_IDLE_MS: '300', EVENTS_MAX_DELIVERIES: '2' }
const variant = Number((await db.selectFrom('content_variants').select('id').orderBy('id').executeTakeFirstOrThrow()).id)
const now = Date.now()
const ts = now - 1000
const today = new Date(ts).toISOString().slice(0, 10)
const post = (app: typeof host, payload: unknown, headers: Record<string, string> = {}) => app.inject({ method: 'POST', url: '/events', headers, payload: payload as object })

async function aggregates() {
  const rows = await db
    .selectFrom('engagement_daily')
    .innerJoin('pages', 'pages.id', 'engagement_daily.page_id')
    // pg reads a date as local midnight: the text form does not depend on the machine's time zone.
    .select(['pages.path', sql<string>`to_char(day, 'YYYY-MM-DD')`.as('day'), 'segment', 'event_type', 'variant_id', 'event_count', 'value_count', 'value_sum'])
    .orderBy('pages.path')
    .orderBy('event_type')
    .execute()
  return rows.map((r) => [r.path, r.day, r.segment, r.event_type, Number(r.variant_id), Number(r.event_count), Number(r.value_count), Number(r.value_sum)])
}

// Instances live for the whole file (their teardown deletes the prefix's keys, so it runs last).
let survivor: typeof host

tap.test('an instance dies before XACK: another claims its entries; poison and unreadable entries are dead-lettered', async (t) => {
  const crashing = await buildTestApp(tap, instanceEnv)
  // Its database is gone: it reads entries and cannot commit them, so it never acknowledges them.
  await crashing.database.pool.end()
  t.equal((await post(crashing, { events: [{ type: 'view', path: '/crm', ts }, { type: 'scroll_depth', path: '/crm', ts, value: 50 }, { type: 'scroll_depth', path: '/crm', ts, value: 70 }] }, { 'x-segment': 'enterprise' })).statusCode, 202)
  t.equal((await post(crashing, { events: [{ type: 'cta_click', path: '/crm/dentists/boston', segment: 'smb', variant, ts }, { type: 'view', path: '/no-such-page', ts }, { type: 'conversion', path: '/crm', variant: 99_999_999, value: 99.5, ts }] })).statusCode, 202)
  await until('the crashing instance to hold both entries', async () => ((await raw.xpending(keys.stream, CONSUMER_GROUP)) as [number])[0] === 2)
  await crashing.close()

  // A poison entry: two consumers already died on it (delivery count 2).
  const poison: EngagementEvent = { type: 'share', path: '/crm', segment: 'general', ts }
  const poisonId = (await raw.xadd(keys.stream, '*', ...encodeStreamEntry([poison], now)))!
  await raw.xreadgroup('GROUP', CONSUMER_GROUP, 'dead-1', 'COUNT', 1, 'STREAMS', keys.stream, '>')
  await raw.xclaim(keys.stream, CONSUMER_GROUP, 'dead-2', 0, poisonId)
  // An entry no consumer can read (a future format), and one written while no consumer runs.
  const unreadableId = (await raw.xadd(keys.stream, '*', 'v', '9', 'events', '[]'))!
  await raw.xadd(keys.stream, '*', ...encodeStreamEntry([{ type: 'click', path: '/crm', segment: 'developer', ts }], now))
  t.same(await host.events.stats(), { length: 5, lag: 2, pending: 3 }, 'two entries never delivered, three delivered and not acknowledged')

  survivor = await buildTestApp(tap, instanceEnv)
  await until('the survivor to count three entries and dead-letter two', () => survivor.events.counters().processedMessages === 3 && survivor.events.counters().deadLettered === 2)
  t.match(survivor.events.counters(), { processedEvents: 7, unknownPathEvents: 1, unknownVariantEvents: 1, duplicateMessages: 0, claimed: 3 })
  t.same(await aggregates(), [
    ['/crm', today, 'developer', 'click', 0, 1, 0, 0],
    ['/crm', today, 'general', 'conversion', 0, 1, 1, 99.5], // a made-up variant id: counted without a variant
    ['/crm', today, 'enterprise', 'scroll_depth', 0, 2, 2, 120],
    ['/crm', today, 'enterprise', 'view', 0, 1, 0, 0],
    ['/crm/dentists/boston', today, 'smb', 'cta_click', variant, 1, 0, 0],
  ], 'everything the dead instance held is counted once; the poison entry is not counted')

  const dead = (await raw.xrange(keys.dead, '-', '+')) as Array<[string, string[]]>
  const fields = dead.map(([, f]) => Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i], f[2 * i + 1]])))
  t.same(fields.map((f) => [f.source_id, f.deliveries]).sort(), [[poisonId, '3'], [unreadableId, '1']].sort())
  t.match(fields.find((f) => f.source_id === poisonId), { reason: 'delivered 3 times (EVENTS_MAX_DELIVERIES=2)', events: JSON.stringify([poison]) })
  t.match(fields.find((f) => f.source_id === unreadableId), { reason: 'unreadable entry: unknown entry version "9"' })
  t.same(await survivor.events.stats(), { length: 5, lag: 0, pending: 0 }, 'nothing waiting, nothing pending')
})

tap.test('a re-delivered entry counts nothing twice', async (t) => {
  const [id, fields] = ((await raw.xrevrange(keys.stream, '+', '-', 'COUNT', 1)) as Array<[string, string[]]>)[0]!
  const events = JSON.parse(fields[fields.indexOf('events') + 1]!) as EngagementEvent[]
  const before = await aggregates()
  t.same(await recordEngagement(db, keys.stream, [{ id, events }]), { messages: 0, duplicates: 1, events: 0, unknownPathEvents: 0, unknownVariantEvents: 0, experimentEvents: 0, outsideExperimentEvents: 0 })
  t.same(await aggregates(), before)
})

tap.test('an entry the database refuses fails alone: the rest of its batch is counted', async (t) => {
  await sql`alter table engagement_daily add constraint test_refuses_video check (event_type <> 'video_play')`.execute(db)
  t.teardown(() => sql`alter table engagement_daily drop constraint test_refuses_video`.execute(db))
  const counted = survivor.events.counters()
  // One MULTI: the blocked reader gets both entries in one batch.
  await raw
    .multi()
    .xadd(keys.stream, '*', ...encodeStreamEntry([{ type: 'video_play', path: '/crm', segment: 'smb', ts }], now))
    .xadd(keys.stream, '*', ...encodeStreamEntry([{ type: 'form_submit', path: '/crm', segment: 'smb', ts }], now))
    .exec()
  await until('the refused entry to be dead-lettered', () => survivor.events.counters().deadLettered === counted.deadLettered + 1)
  t.equal(survivor.events.counters().processedMessages, counted.processedMessages + 1, 'its neighbour was counted')
  t.ok(survivor.events.counters().failedBatches > counted.failedBatches)
  t.same((await aggregates()).filter((r) => r[2] === 'smb' && r[0] === '/crm'), [['/crm', today, 'smb', 'form_submit', 0, 1, 0, 0]])
  t.same(await survivor.events.stats(), { length: 7, lag: 0, pending: 0 })
})

tap.test('receipts are pruned; closing does not wait on a blocked read', async (t) => {
  t.equal(await pruneStreamReceipts(db, 0), 4, 'receipts of the four counted entries dropped')
  t.equal(await pruneStreamReceipts(db, 0), 0)
  const started = Date.now()
  await survivor.close()
  t.ok(Date.now() - started < 1_000, `closed in ${Date.now() - started} ms`)
  const consumers = (await raw.xinfo('CONSUMERS', keys.stream, CONSUMER_GROUP)) as unknown[][]
  t.ok(consumers.length >= 1, 'consumers stay known to the group until housekeeping forgets idle ones')
  const empty = new Redis(TEST_REDIS_URL, { keyPrefix: 'vo-test-nothing-here:' })
  t.teardown(() => empty.disconnect())
  t.same(await streamStats(empty, eventStreamKeys('vo-test-nothing-here:')), { length: 0, lag: 0, pending: 0 }, 'no stream yet: zeros')
})
