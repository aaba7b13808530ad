// One reallocation of every experiment: start the ones a second variant in scope calls for, end the
// ones left with fewer than two, and move buckets of the running ones towards the variant likeliest to
// convert best (Thompson sampling with a floor share per variant, src/experiments/allocation.ts). The
// new split and the CDN purges it needs are written in one transaction (the purge outbox): the buckets
// that moved, the no-bucket objects when the best variant changed, and a started or ended page whole.

import type { Kysely } from 'kysely'
import type { Database, PurgeTarget } from '../db/schema.ts'
import { cacheTag } from '../http/cache-policy.ts'
import { enqueuePurge, enqueueTagPurge } from '../purge/purge-outbox.ts'
import { type ArmStats, bucketCounts, reallocate } from './allocation.ts'
import type { EngagementEvent } from '../events/engagement-event.ts'
import { type Competition, deleteExperiments, type ExperimentRow, experimentKey, findCompetitions, listExperiments, readExperimentCounts, saveExperiment, type VariantCounts } from './experiment-repository.ts'
import { bestVariant, bucketTag } from './experiment-registry.ts'

export interface ReallocationSettings {
  buckets: number
  minShare: number
  purgeTargets: readonly PurgeTarget[]
  random?: () => number
}

export interface ReallocationResult {
  started: number
  ended: number
  /** Buckets whose variant changed, over every experiment. */
  moved: number
  /** Paths whose entries at the origin must go (an experiment started or ended on them). */
  invalidatePaths: string[]
}

/**
 * `undelivered`: events still in the stream, not yet aggregated by the consumer (event-stream.ts
 * undeliveredEvents); they count as the aggregates do: views and CTA clicks of visitors with a bucket,
 * for a variant competing on that page and segment.
 */
export async function reallocateExperiments(db: Kysely<Database>, settings: ReallocationSettings, undelivered: readonly EngagementEvent[] = []): Promise<ReallocationResult> {
  const { buckets, minShare, purgeTargets } = settings
  const result: ReallocationResult = { started: 0, ended: 0, moved: 0, invalidatePaths: [] }
  const [competitions, existing, counts] = await Promise.all([findCompetitions(db), listExperiments(db), readExperimentCounts(db)])
  addUndelivered(counts, competitions, undelivered)
  const byKey = new Map(existing.map((e) => [experimentKey(e.pageId, e.segment), e]))
  const live = new Set<string>()

  for (const competition of competitions) {
    const key = experimentKey(competition.pageId, competition.segment)
    live.add(key)
    const current = byKey.get(key)
    const seen = counts.get(key)
    const arms: ArmStats[] = competition.variants.map((variantId) => ({ variantId, views: seen?.get(variantId)?.views ?? 0, conversions: seen?.get(variantId)?.conversions ?? 0 }))
    if (current === undefined) {
      // A new experiment: an even split, no evidence yet.
      const allocation = spread(bucketCounts(new Map(competition.variants.map((v) => [v, 1 / competition.variants.length])), buckets), buckets)
      const pBest = new Map(competition.variants.map((v) => [v, 1 / competition.variants.length]))
      await db.transaction().execute(async (trx) => {
        await saveExperiment(trx, { pageId: competition.pageId, segment: competition.segment, variants: competition.variants, allocation, pBest })
        // What the CDN holds for the page was rendered without buckets: it goes.
        await enqueuePurge(trx, purgeTargets, { paths: [], tags: [cacheTag('page', competition.pageId)], soft: true })
      })
      result.started++
      result.invalidatePaths.push(competition.path)
      continue
    }
    const step = reallocate({ arms, current: current.allocation, buckets, minShare, ...(settings.random === undefined ? {} : { random: settings.random }) })
    // Paused and pinned experiments keep their split (a pinned one is served its pin by the registry);
    // only a variant that left the competition gives its buckets away.
    const frozen = current.status !== 'running'
    const gone = current.allocation.some((v) => !competition.variants.includes(v)) || current.allocation.length !== buckets
    const allocation = frozen && !gone ? current.allocation : step.allocation
    const changed = allocation.flatMap((v, b) => (current.allocation[b] === v ? [] : [b]))
    const next: ExperimentRow = { ...current, variants: competition.variants, allocation, pBest: step.pBest }
    const bestChanged = bestVariant(next) !== bestVariant(current)
    const tags = [...changed.map((b) => bucketTag(current.pageId, current.segment, b)), ...(bestChanged ? [bucketTag(current.pageId, current.segment, undefined)] : [])]
    await db.transaction().execute(async (trx) => {
      await saveExperiment(trx, { pageId: current.pageId, segment: current.segment, variants: competition.variants, allocation, pBest: step.pBest })
      if (tags.length > 0) await enqueueTagPurge(trx, purgeTargets, tags, false)
    })
    result.moved += changed.length
  }

  const ended = existing.filter((e) => !live.has(experimentKey(e.pageId, e.segment)))
  if (ended.length > 0) {
    await db.transaction().execute(async (trx) => {
      await deleteExperiments(trx, ended)
      await enqueueTagPurge(trx, purgeTargets, [...new Set(ended.map((e) => cacheTag('page', e.pageId)))], true)
    })
    result.ended = ended.length
    result.invalidatePaths.push(...new Set(ended.map((e) => e.path)))
  }
  return result
}

function addUndelivered(counts: Map<string, Map<number, VariantCounts>>, competitions: readonly Competition[], events: readonly EngagementEvent[]): void {
  const byPathSegment = new Map(competitions.map((c) => [`${c.path} ${c.segment}`, c]))
  for (const event of events) {
    const competition = byPathSegment.get(`${event.path} ${event.segment}`)
    const column = event.type === 'view' ? 'views' : event.type === 'cta_click' ? 'conversions' : undefined
    if (competition === undefined || column === undefined || event.bucket === undefined || event.variant === undefined || !competition.variants.includes(event.variant)) continue
    const key = experimentKey(competition.pageId, competition.segment)
    let byVariant = counts.get(key)
    if (byVariant === undefined) counts.set(key, (byVariant = new Map()))
    const seen = byVariant.get(event.variant) ?? { views: 0, conversions: 0 }
    byVariant.set(event.variant, { ...seen, [column]: seen[column] + 1 })
  }
}

/** Buckets in turn: an even split interleaved (0 -> a, 1 -> b, 2 -> a...), so no variant gets only the high buckets. */
function spread(counts: ReadonlyMap<number, number>, buckets: number): number[] {
  const left = new Map(counts)
  const variants = [...counts.keys()]
  const allocation: number[] = []
  for (let b = 0, i = 0; b < buckets; i++) {
    const v = variants[i % variants.length]!
    if ((left.get(v) ?? 0) <= 0) continue
    left.set(v, left.get(v)! - 1)
    allocation.push(v)
    b++
  }
  return allocation
}
