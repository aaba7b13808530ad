// The experiments every request consults, in memory: which (path, segment) pairs are under experiment,
// the variant each bucket sees and the one a visitor without a bucket sees (the current best). Loaded
// from the database by plugins/experiments.ts; a request never waits for it.

import { cacheTag } from '../http/cache-policy.ts'
import type { ExperimentRow } from './experiment-repository.ts'

/** What one request of a page under experiment is served. */
export interface ExperimentArm {
  pageId: number
  /** The variant this request sees. */
  variantId: number
  /** The request's bucket; undefined: none (a crawler, a client the CDN gave no bucket). */
  bucket: number | undefined
  /** The CDN purge tag of this (page, segment, bucket): what a reallocation purges when the bucket moves. */
  tag: string
}

/** The tag of one bucket's objects at the CDN (`none`: the objects of visitors without a bucket). */
export function bucketTag(pageId: number, segment: string, bucket: number | undefined): string {
  return cacheTag('bucket', `${pageId}_${segment}_${bucket ?? 'none'}`)
}

/** The variant shown without a bucket: the pinned one, else the likeliest best (ties: most buckets, then lowest id). */
export function bestVariant(row: Pick<ExperimentRow, 'status' | 'pinnedVariantId' | 'variants' | 'allocation' | 'pBest'>): number {
  if (row.status === 'pinned' && row.pinnedVariantId !== undefined) return row.pinnedVariantId
  const buckets = new Map<number, number>()
  for (const v of row.allocation) buckets.set(v, (buckets.get(v) ?? 0) + 1)
  let best = row.variants[0]!
  for (const v of row.variants) {
    const [p, pb] = [row.pBest.get(v) ?? 0, row.pBest.get(best) ?? 0]
    if (p > pb || (p === pb && ((buckets.get(v) ?? 0) > (buckets.get(best) ?? 0) || ((buckets.get(v) ?? 0) === (buckets.get(best) ?? 0) && v < best)))) best = v
  }
  return best
}

interface Live {
  pageId: number
  variants: number[]
  allocation: number[]
  best: number
}

export class ExperimentRegistry {
  private byPath = new Map<string, Map<string, Live>>()
  private readonly buckets: number

  constructor(buckets: number) {
    this.buckets = buckets
  }

  /** Replaces what is known with these experiments (a pinned one sends every bucket to its variant). */
  replace(rows: readonly ExperimentRow[]): void {
    const byPath = new Map<string, Map<string, Live>>()
    for (const row of rows) {
      const best = bestVariant(row)
      const allocation = row.status === 'pinned' ? row.allocation.map(() => best) : row.allocation
      let bySegment = byPath.get(row.path)
      if (bySegment === undefined) byPath.set(row.path, (bySegment = new Map()))
      bySegment.set(row.segment, { pageId: row.pageId, variants: row.variants, allocation, best })
    }
    this.byPath = byPath
  }

  /** The competing variants of each segment under experiment on this path (what an edit of the page invalidates). */
  variantsOf(path: string): Array<[segment: string, variantIds: number[]]> {
    return [...(this.byPath.get(path) ?? new Map<string, Live>())].map(([segment, live]) => [segment, live.variants])
  }

  /**
   * What a request of (path, segment) with this X-Bucket value is served; undefined when the pair is not
   * under experiment (the bucket is then ignored: never a cache key of its own). A bucket that is not a
   * whole number below EXPERIMENT_BUCKETS is the no-bucket case.
   */
  arm(path: string, segment: string, rawBucket: string | string[] | undefined): ExperimentArm | undefined {
    const live = this.byPath.get(path)?.get(segment)
    if (live === undefined) return undefined
    const bucket = parseBucket(rawBucket, this.buckets)
    const variantId = bucket === undefined ? live.best : (live.allocation[bucket] ?? live.best)
    return { pageId: live.pageId, variantId, bucket, tag: bucketTag(live.pageId, segment, bucket) }
  }
}

/** X-Bucket: digits only, below `buckets`; anything else is no bucket. */
export function parseBucket(raw: string | string[] | undefined, buckets: number): number | undefined {
  if (typeof raw !== 'string' || !/^\s*\d{1,4}\s*$/.test(raw)) return undefined
  const bucket = Number(raw)
  return bucket < buckets ? bucket : undefined
}
