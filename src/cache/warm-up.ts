// Warm-up: the top N pages by crawl weight, for every segment, rendered into L2 with bounded
// concurrency, so a deploy or a Redis flush does not send the CDN's first misses to PostgreSQL.

import type { Kysely } from 'kysely'
import type { Database } from '../db/schema.ts'

export interface WarmReport {
  pages: number
  segments: number
  attempted: number
  warmed: number
  skipped: number
  failed: number
  /** (warmed + skipped) / attempted: the share of keys fresh in L2 afterwards. */
  successRate: number
  durationMs: number
}

interface Warmer {
  warm(path: string, segment: string): Promise<'warmed' | 'skipped' | 'failed'>
}

export async function topPagesByWeight(db: Kysely<Database>, top: number): Promise<string[]> {
  const rows = await db.selectFrom('pages').select('path').where('status', '=', 'published').orderBy('crawl_weight', 'desc').orderBy('id').limit(top).execute()
  return rows.map((r) => r.path)
}

export async function warmUp(db: Kysely<Database>, warmer: Warmer, segments: readonly string[], top: number, concurrency: number): Promise<WarmReport> {
  const started = Date.now()
  const paths = await topPagesByWeight(db, top)
  const jobs = paths.flatMap((path) => segments.map((segment) => ({ path, segment })))
  const counts = { warmed: 0, skipped: 0, failed: 0 }
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const job = jobs[next++]!
      counts[await warmer.warm(job.path, job.segment)]++
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, jobs.length)) }, worker))
  const attempted = jobs.length
  return {
    pages: paths.length,
    segments: segments.length,
    attempted,
    ...counts,
    successRate: attempted === 0 ? 1 : (counts.warmed + counts.skipped) / attempted,
    durationMs: Date.now() - started,
  }
}
