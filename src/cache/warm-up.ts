// Warm-up: the top N pages by crawl weight rendered into L2 with bounded concurrency (a page that
// differs by segment once per segment, any other page once), so a deploy or a Redis flush does not
// send the CDN's first misses to PostgreSQL.

import type { Kysely } from 'kysely'
import type { Database } from '../db/schema.ts'

export interface WarmReport {
  pages: number
  segments: number
  /** Entries tried: one per page that is the same for every segment, one per segment for a page that is not. */
  attempted: number
  warmed: number
  skipped: number
  failed: number
  /** (warmed + skipped) / attempted: the share of keys fresh in L2 afterwards. */
  successRate: number
  durationMs: number
}

interface Warmer {
  warm(path: string, segments: readonly string[]): Promise<{ warmed: number; skipped: number; failed: number }>
}

export async function topPagesByWeight(db: Kysely<Database>, top: number): Promise<string[]> {
  const rows = await db.selectFrom('pages').select('path').where('status', '=', 'published').orderBy('crawl_weight', 'desc').orderBy('id').limit(top).execute()
  return rows.map((r) => r.path)
}

export async function warmUp(db: Kysely<Database>, warmer: Warmer, segments: readonly string[], top: number, concurrency: number): Promise<WarmReport> {
  const started = Date.now()
  const paths = await topPagesByWeight(db, top)
  const counts = { warmed: 0, skipped: 0, failed: 0 }
  let next = 0
  // One page per job: its segments in order, so the first render can tell the rest are not needed.
  const worker = async (): Promise<void> => {
    while (next < paths.length) {
      const page = await warmer.warm(paths[next++]!, segments)
      counts.warmed += page.warmed
      counts.skipped += page.skipped
      counts.failed += page.failed
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, paths.length)) }, worker))
  const attempted = counts.warmed + counts.skipped + counts.failed
  return {
    pages: paths.length,
    segments: segments.length,
    attempted,
    ...counts,
    successRate: attempted === 0 ? 1 : (counts.warmed + counts.skipped) / attempted,
    durationMs: Date.now() - started,
  }
}
