// The engagement stream in Redis: where accepted events wait for the consumer group, its dead-letter
// stream, and the numbers /metrics reports about it.

import type { Cluster, Redis } from 'ioredis'
import { DomainError } from '../errors.ts'
import { decodeStreamEntry, encodeStreamEntry, type EngagementEvent } from './engagement-event.ts'

export const CONSUMER_GROUP = 'engagement-aggregators'

export interface EventStreamKeys {
  /** Full key names (the configured prefix included): the consumer's connection has no keyPrefix. */
  stream: string
  dead: string
  /** The same keys without the prefix, for the shared client that prefixes keys itself. */
  relativeStream: string
}

/**
 * The stream and its dead-letter stream share a hash tag, so both live in one Cluster slot and a
 * dead-letter move (XADD to one, XACK on the other) runs in one MULTI.
 */
export function eventStreamKeys(prefix: string): EventStreamKeys {
  return { stream: `${prefix}{events}:stream`, dead: `${prefix}{events}:dead`, relativeStream: '{events}:stream' }
}

export interface EventStreamStats {
  /** Entries in the stream (XLEN), consumed or not, up to the MAXLEN bound. */
  length: number
  /** Entries not yet delivered to the group (XINFO GROUPS lag); null when Redis cannot tell (after trimming). */
  lag: number | null
  /** Entries delivered and not yet acknowledged. */
  pending: number
}

/**
 * Appends one request's events as one entry (all or nothing). Throws UNAVAILABLE when Redis is off
 * or fails: the caller must not report events as accepted that were not written.
 */
export async function appendEvents(redis: Redis | Cluster | null, keys: EventStreamKeys, events: readonly EngagementEvent[], maxLen: number, receivedAt: number): Promise<string> {
  if (redis === null) throw new DomainError('UNAVAILABLE', 'engagement events are not accepted: the event stream (Redis) is switched off on this origin')
  try {
    const id = await redis.xadd(keys.relativeStream, 'MAXLEN', '~', maxLen, '*', ...encodeStreamEntry(events, receivedAt))
    if (id === null) throw new Error('XADD returned no id')
    return id
  } catch (err) {
    throw new DomainError('UNAVAILABLE', 'engagement events were not accepted: the event stream is unavailable; retry shortly', { cause: err })
  }
}

/** XINFO GROUPS answers a flat list of name, value pairs per group. */
function fieldsOf(reply: unknown[]): Map<string, unknown> {
  const map = new Map<string, unknown>()
  for (let i = 0; i + 1 < reply.length; i += 2) map.set(String(reply[i]), reply[i + 1])
  return map
}

/**
 * Events accepted and not yet delivered to the consumer group (after its last-delivered id; every entry
 * when the group does not exist yet), up to `limit` entries: what the aggregates do not hold yet.
 * Entries delivered and not yet acknowledged are the consumer's, committed within a batch; unreadable
 * entries are skipped (the consumer dead-letters them).
 */
export async function undeliveredEvents(redis: Redis | Cluster, keys: EventStreamKeys, limit: number, group = CONSUMER_GROUP): Promise<EngagementEvent[]> {
  if ((await redis.exists(keys.relativeStream)) === 0) return []
  const groups = (await redis.call('XINFO', 'GROUPS', keys.stream)) as unknown[][]
  const lastDelivered = groups.map(fieldsOf).find((g) => g.get('name') === group)?.get('last-delivered-id')
  const start = typeof lastDelivered === 'string' && lastDelivered !== '0-0' ? `(${lastDelivered}` : '-'
  const entries = (await redis.xrange(keys.relativeStream, start, '+', 'COUNT', limit)) as Array<[string, string[]]>
  return entries.flatMap(([, fields]) => {
    const decoded = decodeStreamEntry(fields)
    return 'events' in decoded ? decoded.events : []
  })
}

export async function streamStats(redis: Redis | Cluster, keys: EventStreamKeys, group = CONSUMER_GROUP): Promise<EventStreamStats> {
  const length = await redis.xlen(keys.relativeStream)
  if (length === 0 && (await redis.exists(keys.relativeStream)) === 0) return { length: 0, lag: 0, pending: 0 }
  // XINFO carries no key position ioredis 5 knows of, so it is given the full (prefixed) key.
  const groups = (await redis.call('XINFO', 'GROUPS', keys.stream)) as unknown[][]
  const info = groups.map(fieldsOf).find((g) => g.get('name') === group)
  if (info === undefined) return { length, lag: null, pending: 0 }
  const lag = info.get('lag')
  return { length, lag: lag === null || lag === undefined ? null : Number(lag), pending: Number(info.get('pending') ?? 0) }
}
