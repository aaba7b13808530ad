// Engagement aggregates in PostgreSQL: a batch of stream messages becomes upserts into
// engagement_daily in one transaction, together with the receipts that make a re-delivery a no-op.

import { type Kysely, sql } from 'kysely'
import { chunks } from '../chunks.ts'
import type { Database } from '../db/schema.ts'
import type { EngagementEvent } from './engagement-event.ts'

export interface StreamMessage {
  id: string
  events: EngagementEvent[]
}

export interface RecordResult {
  /** Messages counted by this call. */
  messages: number
  /** Messages already counted by an earlier delivery (skipped). */
  duplicates: number
  events: number
  /** Events for paths that are not pages: counted here, not stored. */
  unknownPathEvents: number
  /** Events whose variant id is not a variant: stored without one. */
  unknownVariantEvents: number
  /** Views and CTA clicks from visitors with a bucket counted for an experiment. */
  experimentEvents: number
  /** Such events whose (page, segment) is not under experiment or whose variant is not in it: counted for nothing. */
  outsideExperimentEvents: number
}

/** Rows per INSERT: 9 parameters a row stays far below PostgreSQL's 65,535. */
const ROWS_PER_STATEMENT = 1_000

interface Bucket {
  path: string
  day: string
  segment: string
  type: string
  variant: number
  count: number
  valueCount: number
  valueSum: number
}

/**
 * Adds the messages' events to the daily aggregates, once per message id: all in one transaction,
 * so the caller acknowledges the messages only after this resolves.
 */
export async function recordEngagement(db: Kysely<Database>, stream: string, messages: readonly StreamMessage[]): Promise<RecordResult> {
  return db.transaction().execute(async (trx) => {
    const ids = messages.map((m) => m.id)
    const fresh = await sql<{ message_id: string }>`
      insert into engagement_stream_receipts (stream, message_id)
      select ${stream}, id from unnest(${ids}::text[]) as t(id)
      on conflict do nothing
      returning message_id`.execute(trx)
    const freshIds = new Set(fresh.rows.map((r) => r.message_id))
    const events = messages.filter((m) => freshIds.has(m.id)).flatMap((m) => m.events)
    const result: RecordResult = { messages: freshIds.size, duplicates: messages.length - freshIds.size, events: events.length, unknownPathEvents: 0, unknownVariantEvents: 0, experimentEvents: 0, outsideExperimentEvents: 0 }
    if (events.length === 0) return result

    const paths = [...new Set(events.map((e) => e.path))]
    const pages = await trx.selectFrom('pages').select(['id', 'path']).where('path', '=', sql<string>`any(${paths}::text[])`).execute()
    const pageIds = new Map(pages.map((p) => [p.path, Number(p.id)]))
    const variantIds = [...new Set(events.flatMap((e) => (e.variant === undefined ? [] : [e.variant])))]
    const variants =
      variantIds.length === 0 ? [] : await trx.selectFrom('content_variants').select('id').where('id', '=', sql<number>`any(${variantIds}::bigint[])`).execute()
    const knownVariants = new Set(variants.map((v) => Number(v.id)))

    const buckets = new Map<string, Bucket>()
    for (const event of events) {
      if (!pageIds.has(event.path)) {
        result.unknownPathEvents++
        continue
      }
      let variant = event.variant ?? 0
      if (variant !== 0 && !knownVariants.has(variant)) {
        // A made-up variant id must not open a bucket of its own: it counts for the page without one.
        result.unknownVariantEvents++
        variant = 0
      }
      const day = new Date(event.ts).toISOString().slice(0, 10)
      const key = `${event.path}\n${day}\n${event.segment}\n${event.type}\n${variant}`
      let bucket = buckets.get(key)
      if (bucket === undefined) {
        bucket = { path: event.path, day, segment: event.segment, type: event.type, variant, count: 0, valueCount: 0, valueSum: 0 }
        buckets.set(key, bucket)
      }
      bucket.count++
      if (event.value !== undefined) {
        bucket.valueCount++
        bucket.valueSum += event.value
      }
    }

    await countForExperiments(trx, events, pageIds, result)

    // One row per key in each statement: ON CONFLICT DO UPDATE cannot touch a row twice in one statement.
    for (const rows of chunks([...buckets.values()], ROWS_PER_STATEMENT)) {
      await trx
        .insertInto('engagement_daily')
        .values(
          rows.map((b) => ({
            page_id: pageIds.get(b.path)!,
            day: b.day,
            segment: b.segment,
            event_type: b.type,
            variant_id: b.variant,
            event_count: b.count,
            value_count: b.valueCount,
            // Rounded to millionths: summing binary floats leaves noise such as 0.30000000000000004.
            value_sum: b.valueSum.toFixed(6),
          })),
        )
        .onConflict((oc) =>
          oc.columns(['page_id', 'day', 'segment', 'event_type', 'variant_id']).doUpdateSet({
            event_count: sql`engagement_daily.event_count + excluded.event_count`,
            value_count: sql`engagement_daily.value_count + excluded.value_count`,
            value_sum: sql`engagement_daily.value_sum + excluded.value_sum`,
            updated_at: sql`now()`,
          }),
        )
        .execute()
    }
    return result
  })
}

/** What an experiment counts: a page view, and a click on the CTA (what the beacon sends). */
const EXPERIMENT_EVENT = { view: 'views', cta_click: 'conversions' } as const

/**
 * Views and conversions per (page, segment, variant) for the bandit, from events of visitors with a
 * bucket (never a crawler's: the intake dropped their bucket). Only where the pair is under experiment
 * and the variant is one of its competitors; the rest is counted in `outsideExperimentEvents`.
 */
async function countForExperiments(trx: Kysely<Database>, events: readonly EngagementEvent[], pageIds: ReadonlyMap<string, number>, result: RecordResult): Promise<void> {
  const groups = new Map<string, { pageId: number; segment: string; variant: number; views: number; conversions: number; events: number }>()
  for (const event of events) {
    const column = EXPERIMENT_EVENT[event.type as keyof typeof EXPERIMENT_EVENT]
    const pageId = pageIds.get(event.path)
    if (column === undefined || event.bucket === undefined || event.variant === undefined || pageId === undefined) continue
    const key = `${pageId}\n${event.segment}\n${event.variant}`
    let group = groups.get(key)
    if (group === undefined) groups.set(key, (group = { pageId, segment: event.segment, variant: event.variant, views: 0, conversions: 0, events: 0 }))
    group[column]++
    group.events++
  }
  if (groups.size === 0) return
  const rows = [...groups.values()]
  const counted = await sql<{ page_id: string; segment: string; variant_id: string }>`
    INSERT INTO experiment_counts AS c (page_id, segment, variant_id, views, conversions)
    SELECT g.page_id, g.segment, g.variant_id, g.views, g.conversions
    FROM unnest(${rows.map((r) => r.pageId)}::bigint[], ${rows.map((r) => r.segment)}::text[], ${rows.map((r) => r.variant)}::bigint[], ${rows.map((r) => r.views)}::bigint[], ${rows.map((r) => r.conversions)}::bigint[])
      AS g(page_id, segment, variant_id, views, conversions)
    JOIN experiments e ON e.page_id = g.page_id AND e.segment = g.segment AND g.variant_id = ANY (e.variants)
    ON CONFLICT (page_id, segment, variant_id) DO UPDATE
      SET views = c.views + excluded.views, conversions = c.conversions + excluded.conversions, updated_at = now()
    RETURNING c.page_id, c.segment, c.variant_id`.execute(trx)
  const countedKeys = new Set(counted.rows.map((r) => `${r.page_id}\n${r.segment}\n${r.variant_id}`))
  for (const [key, group] of groups) {
    if (countedKeys.has(key)) result.experimentEvents += group.events
    else result.outsideExperimentEvents += group.events
  }
}

/** Receipts only guard against re-delivery, which happens within minutes: older ones are dropped. */
export async function pruneStreamReceipts(db: Kysely<Database>, olderThanMs: number): Promise<number> {
  const result = await db
    .deleteFrom('engagement_stream_receipts')
    .where('processed_at', '<', new Date(Date.now() - olderThanMs))
    .executeTakeFirst()
  return Number(result.numDeletedRows)
}
