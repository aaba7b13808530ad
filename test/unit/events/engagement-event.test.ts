import t from 'tap'
import { decodeStreamEntry, encodeStreamEntry, MAX_EVENTS_PER_REQUEST, validateEventBatch } from '../../../src/events/engagement-event.ts'
import { buildSegmentDirectory } from '../../../src/segments/segment-resolution.ts'

const now = Date.UTC(2026, 10, 23, 12, 0, 0)
const segments = buildSegmentDirectory([
  { slug: 'general', utmSources: [], isDefault: true },
  { slug: 'enterprise', utmSources: ['linkedin'], isDefault: false },
])
const context = { now, segments, requestSegment: 'enterprise' }
const view = { type: 'view', path: '/crm', ts: now - 1000 }

t.test('one event or a batch; segments resolved against the allowlist', async (t) => {
  t.same(validateEventBatch(view, context), { events: [{ type: 'view', path: '/crm', segment: 'enterprise', ts: now - 1000 }], problems: [] }, 'no segment: the request segment')
  const batch = validateEventBatch(
    {
      events: [
        { ...view, segment: 'General' },
        { ...view, segment: 'martians', type: 'scroll_depth', value: 75 },
        { ...view, type: 'cta_click', variant: 12 },
      ],
    },
    context,
  )
  t.same(batch.problems, [])
  t.same(batch.events.map((e) => e.segment), ['general', 'general', 'enterprise'], 'known slug kept (case-folded), unknown one is the default')
  t.equal(batch.events[1]!.value, 75)
  t.equal(batch.events[2]!.variant, 12)
  t.equal(validateEventBatch({ events: Array.from({ length: MAX_EVENTS_PER_REQUEST }, () => view) }, context).events.length, MAX_EVENTS_PER_REQUEST)
})

t.test('every bad event is named by index and field, and none is returned', async (t) => {
  const result = validateEventBatch(
    {
      events: [
        view,
        { ...view, type: 'hover' },
        { ...view, path: '/CRM/' },
        { ...view, ts: now + 10 * 60_000 },
        { ...view, ts: now - 2 * 86_400_000 },
        { ...view, value: Number.MAX_VALUE },
        { ...view, variant: 0 },
        { ...view, extra: 1 },
        { ...view, segment: 5 },
        'view',
        { type: 'view', path: '/crm' },
      ],
    },
    context,
  )
  t.same(result.events, [])
  t.same(
    result.problems.map((p) => [p.record, p.field]),
    [[1, 'type'], [2, 'path'], [3, 'ts'], [4, 'ts'], [5, 'value'], [6, 'variant'], [7, 'extra'], [8, 'segment'], [9, 'event'], [10, 'ts']],
  )
  t.match(result.problems[0]!.message, /"hover": expected one of view, click/)
  t.match(result.problems[2]!.message, /more than 5 minutes in the future/)
  t.match(result.problems[3]!.message, /more than a day old/)
})

t.test('the request shape itself', async (t) => {
  for (const [body, field] of [[null, 'body'], [[view], 'body'], [{ events: [] }, 'events'], [{ events: 'x' }, 'events'], [{ events: Array(MAX_EVENTS_PER_REQUEST + 1).fill(view) }, 'events']] as const) {
    const result = validateEventBatch(body, context)
    t.same(result.problems.map((p) => [p.record, p.field]), [[-1, field]], JSON.stringify(body)?.slice(0, 40))
  }
  t.same(validateEventBatch({ events: [view], more: true }, context).problems.map((p) => [p.record, p.field]), [[-1, 'more']])
})

t.test('stream entries round-trip; a malformed one is an error, never half-read', async (t) => {
  const events = validateEventBatch({ events: [view, { ...view, type: 'conversion', value: 49.5, variant: 3 }] }, context).events
  const fields = encodeStreamEntry(events, now)
  t.same(fields.slice(0, 4), ['v', '1', 'at', String(now)])
  t.same(decodeStreamEntry(fields), { events })
  // Long after intake the consumer still counts what was accepted: no age bound on decode.
  t.same(decodeStreamEntry(encodeStreamEntry([{ ...events[0]!, ts: 1 }], now)), { events: [{ ...events[0]!, ts: 1 }] })
  t.match(decodeStreamEntry(encodeStreamEntry([{ ...events[0]!, ts: 253_402_300_800_000 }], now)), { error: /event 0 ts/ }, 'no day bucket after year 9999')
  t.match(decodeStreamEntry(['v', '2', 'events', '[]']), { error: /unknown entry version "2"/ })
  t.match(decodeStreamEntry(['events', '[]']), { error: /unknown entry version null/ })
  t.match(decodeStreamEntry(['v', '1', 'events', '{oops']), { error: 'events is not JSON' })
  t.match(decodeStreamEntry(['v', '1', 'events', '[]']), { error: /not an array of 1 to 100/ })
  t.match(decodeStreamEntry(['v', '1', 'events', JSON.stringify([{ ...view, segment: 'Not A Slug' }])]), { error: /event 0 segment/ })
  t.match(decodeStreamEntry(['v', '1', 'events', JSON.stringify([{ ...view, segment: 'general', type: 'hover' }])]), { error: /event 0 type/ })
})
