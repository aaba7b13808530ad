// Engagement events as browsers send them and as the stream carries them. One validator serves both
// the route (every problem named by event index and field) and the consumer (a stream entry is
// checked again before it is counted, so a malformed entry is dead-lettered instead of counted).

import { isCanonicalPagePath } from '../http/url-normalize.ts'
import type { Problem } from '../errors.ts'
import { unstorableText } from '../storable-text.ts'
import type { SegmentDirectory } from '../segments/segment-resolution.ts'

export const EVENT_TYPES = ['view', 'click', 'cta_click', 'scroll_depth', 'conversion', 'form_submit', 'video_play', 'share'] as const
export type EventType = (typeof EVENT_TYPES)[number]

export const MAX_EVENTS_PER_REQUEST = 100
/** A client clock may run ahead this much. */
export const MAX_CLOCK_SKEW_MS = 5 * 60_000
/** Events older than this are refused: the browser held them too long to be worth a day bucket. */
export const MAX_EVENT_AGE_MS = 86_400_000
export const MAX_EVENT_VALUE = 1_000_000_000
const MAX_PATH_LENGTH = 1024
/** 9999-12-31T23:59:59.999Z: later times have no YYYY-MM-DD day bucket. */
const LAST_DAY_MS = 253_402_300_799_999
const SEGMENT_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/
const EVENT_FIELDS = new Set(['type', 'path', 'segment', 'variant', 'bucket', 'value', 'ts'])
/** Buckets the intake can name: EXPERIMENT_BUCKETS is at most this. */
const MAX_BUCKET = 999

export interface EngagementEvent {
  type: EventType
  /** Canonical page path. */
  path: string
  /** A known segment slug (an unknown one was replaced by the default at intake). */
  segment: string
  /** content_variants.id of the variant the page showed (the hero's data-variant), when known. */
  variant?: number
  value?: number
  /**
   * The visitor's experiment bucket (the CDN's vo_bucket cookie, read by the beacon): only set for a
   * visitor with a bucket below EXPERIMENT_BUCKETS whose user agent is not a crawler. Experiments count
   * only these.
   */
  bucket?: number
  /** Client time of the event, ms since the epoch. */
  ts: number
}


export interface IntakeContext {
  now: number
  segments: SegmentDirectory
  /** The segment of the request (X-Segment header or cookie): used when an event names none. */
  requestSegment: string
  /** EXPERIMENT_BUCKETS: a bucket at or above it is no bucket (absent: buckets are kept as sent, the consumer's case). */
  buckets?: number
  /** The request's user agent looks like a crawler: its events carry no bucket, so experiments never count them. */
  crawler?: boolean
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

const isEventType = (value: unknown): value is EventType => typeof value === 'string' && (EVENT_TYPES as readonly string[]).includes(value)

/**
 * Checks one event's fields. Time bounds apply at intake only (`now` given): a consumer catching up
 * after an outage must still count what was accepted a day ago.
 */
function checkEvent(raw: unknown, record: number, now: number | undefined, problems: Problem[]): Omit<EngagementEvent, 'segment'> & { segment: unknown } | undefined {
  const problem = (field: string, message: string) => problems.push({ record, field, message })
  if (!isRecord(raw)) {
    problem('event', 'expected an object with type, path and ts')
    return undefined
  }
  const before = problems.length
  for (const key of Object.keys(raw)) if (!EVENT_FIELDS.has(key)) problem(key, `unknown field; an event has ${[...EVENT_FIELDS].join(', ')}`)
  // A string the database cannot store is named as such, in place of the field's other checks.
  const unstorable = new Set<string>()
  for (const field of ['type', 'path', 'segment']) {
    const text = raw[field]
    const message = typeof text === 'string' ? unstorableText(text) : undefined
    if (message === undefined) continue
    problem(field, message)
    unstorable.add(field)
  }
  const { type, path, segment, variant, bucket, value, ts } = raw
  if (!unstorable.has('type') && !isEventType(type)) problem('type', `${JSON.stringify(type) ?? 'missing'}: expected one of ${EVENT_TYPES.join(', ')}`)
  if (!unstorable.has('path') && (typeof path !== 'string' || path.length > MAX_PATH_LENGTH || !isCanonicalPagePath(path))) {
    problem('path', `${JSON.stringify(path) ?? 'missing'}: expected a canonical page path (lower case, no trailing slash, no query), such as /pricing`)
  }
  if (segment !== undefined && typeof segment !== 'string') problem('segment', 'expected a segment slug (a string)')
  if (variant !== undefined && (typeof variant !== 'number' || !Number.isSafeInteger(variant) || variant < 1)) problem('variant', 'expected the variant id shown on the page (a positive integer)')
  if (bucket !== undefined && (typeof bucket !== 'number' || !Number.isSafeInteger(bucket) || bucket < 0 || bucket > MAX_BUCKET)) problem('bucket', `expected the visitor's bucket (the vo_bucket cookie: an integer from 0 to ${MAX_BUCKET})`)
  if (value !== undefined && (typeof value !== 'number' || !Number.isFinite(value) || Math.abs(value) > MAX_EVENT_VALUE)) problem('value', `expected a number from -${MAX_EVENT_VALUE} to ${MAX_EVENT_VALUE}`)
  if (typeof ts !== 'number' || !Number.isSafeInteger(ts) || ts < 0 || ts > LAST_DAY_MS) {
    problem('ts', 'expected the event time in milliseconds since the epoch (Date.now())')
  } else if (now !== undefined && ts > now + MAX_CLOCK_SKEW_MS) {
    problem('ts', `${new Date(ts).toISOString()} is more than ${MAX_CLOCK_SKEW_MS / 60_000} minutes in the future`)
  } else if (now !== undefined && ts < now - MAX_EVENT_AGE_MS) {
    problem('ts', `${new Date(ts).toISOString()} is more than a day old`)
  }
  if (problems.length > before) return undefined
  return {
    type: type as EventType,
    path: path as string,
    segment,
    ts: ts as number,
    ...(variant === undefined ? {} : { variant: variant as number }),
    ...(bucket === undefined ? {} : { bucket: bucket as number }),
    ...(value === undefined ? {} : { value: value as number }),
  }
}

/**
 * Validates a request body: one event, or `{ events: [...] }` with up to MAX_EVENTS_PER_REQUEST.
 * Either every event is valid and returned (segments resolved), or nothing is and every problem is listed.
 */
export function validateEventBatch(body: unknown, context: IntakeContext): { events: EngagementEvent[]; problems: [] } | { events: []; problems: Problem[] } {
  const problems: Problem[] = []
  let items: unknown[]
  if (isRecord(body) && 'events' in body) {
    const extra = Object.keys(body).filter((k) => k !== 'events')
    if (extra.length > 0) problems.push({ record: -1, field: extra[0]!, message: 'unknown field; a batch is { "events": [...] }' })
    if (!Array.isArray(body.events) || body.events.length === 0 || body.events.length > MAX_EVENTS_PER_REQUEST) {
      return { events: [], problems: [...problems, { record: -1, field: 'events', message: `expected an array of 1 to ${MAX_EVENTS_PER_REQUEST} events` }] }
    }
    items = body.events
  } else if (isRecord(body)) {
    items = [body]
  } else {
    return { events: [], problems: [{ record: -1, field: 'body', message: 'expected one event object or { "events": [...] }' }] }
  }
  const events: EngagementEvent[] = []
  items.forEach((item, index) => {
    const checked = checkEvent(item, index, context.now, problems)
    if (checked === undefined) return
    const slug = typeof checked.segment === 'string' ? checked.segment.trim().toLowerCase() : undefined
    // An unknown segment is the default one, as on the page path: never a new bucket.
    const segment = slug === undefined ? context.requestSegment : context.segments.slugs.has(slug) ? slug : context.segments.defaultSlug
    // An unknown bucket is no bucket, and a crawler has none: such events count for engagement, never for an experiment.
    const { bucket, ...rest } = checked
    const keepBucket = bucket !== undefined && context.crawler !== true && (context.buckets === undefined || bucket < context.buckets)
    events.push({ ...rest, segment, ...(keepBucket ? { bucket } : {}) })
  })
  return problems.length > 0 ? { events: [], problems } : { events, problems: [] }
}

/** Stream entry format version: a consumer refuses (dead-letters) a version it does not know. */
export const STREAM_ENTRY_VERSION = '1'

/** The stream entry's fields (XADD field value ...). */
export function encodeStreamEntry(events: readonly EngagementEvent[], receivedAt: number): string[] {
  return ['v', STREAM_ENTRY_VERSION, 'at', String(receivedAt), 'events', JSON.stringify(events)]
}

/** Reads a stream entry back; a malformed one is reported, never half-counted. */
export function decodeStreamEntry(fields: readonly string[]): { events: EngagementEvent[] } | { error: string } {
  const map = new Map<string, string>()
  for (let i = 0; i + 1 < fields.length; i += 2) map.set(fields[i]!, fields[i + 1]!)
  if (map.get('v') !== STREAM_ENTRY_VERSION) return { error: `unknown entry version ${JSON.stringify(map.get('v') ?? null)}` }
  let parsed: unknown
  try {
    parsed = JSON.parse(map.get('events') ?? '')
  } catch {
    return { error: 'events is not JSON' }
  }
  if (!Array.isArray(parsed) || parsed.length === 0 || parsed.length > MAX_EVENTS_PER_REQUEST) return { error: 'events is not an array of 1 to 100 events' }
  const problems: Problem[] = []
  const events: EngagementEvent[] = []
  parsed.forEach((item, index) => {
    const checked = checkEvent(item, index, undefined, problems)
    if (checked === undefined) return
    if (typeof checked.segment !== 'string' || !SEGMENT_PATTERN.test(checked.segment)) {
      problems.push({ record: index, field: 'segment', message: 'expected a segment slug' })
      return
    }
    events.push({ ...checked, segment: checked.segment })
  })
  if (problems.length > 0) return { error: problems.map((p) => `event ${p.record} ${p.field}: ${p.message}`).join('; ') }
  return { events }
}
