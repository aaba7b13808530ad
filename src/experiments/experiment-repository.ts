// Experiments in PostgreSQL: which landing pages compete for which segment, the bucket split, and the
// counts the bandit reads. Plain functions over Kysely<Database>.

import { type Kysely, sql } from 'kysely'
import type { Database, ExperimentStatus } from '../db/schema.ts'

export interface ExperimentRow {
  pageId: number
  path: string
  segment: string
  status: ExperimentStatus
  pinnedVariantId: number | undefined
  variants: number[]
  /** The variant each bucket sees. */
  allocation: number[]
  pBest: Map<number, number>
  startedAt: Date
  reallocatedAt: Date
}

/** Every experiment of a published page. */
export async function listExperiments(db: Kysely<Database>, filter: { path?: string } = {}): Promise<ExperimentRow[]> {
  let query = db
    .selectFrom('experiments as e')
    .innerJoin('pages as p', 'p.id', 'e.page_id')
    .select(['e.page_id', 'p.path', 'e.segment', 'e.status', 'e.pinned_variant_id', 'e.variants', 'e.allocation', 'e.p_best', 'e.started_at', 'e.reallocated_at'])
    .where('p.status', '=', 'published')
  if (filter.path !== undefined) query = query.where('p.path', '=', filter.path)
  const rows = await query.orderBy('p.path').orderBy('e.segment').execute()
  return rows.map((r) => ({
    pageId: Number(r.page_id),
    path: r.path,
    segment: r.segment,
    status: r.status,
    pinnedVariantId: r.pinned_variant_id === null ? undefined : Number(r.pinned_variant_id),
    variants: r.variants.map(Number),
    allocation: r.allocation.map(Number),
    pBest: new Map(Object.entries(r.p_best).map(([id, p]) => [Number(id), Number(p)])),
    startedAt: r.started_at,
    reallocatedAt: r.reallocated_at,
  }))
}

export interface Competition {
  pageId: number
  path: string
  segment: string
  /** Ascending ids: the page's own variants of the segment and its vertical's, in the active embedding version. */
  variants: number[]
}

/** Every (landing page, segment) with two or more variants in scope: what should be an experiment. */
export async function findCompetitions(db: Kysely<Database>): Promise<Competition[]> {
  const result = await sql<{ page_id: string; path: string; segment: string; variants: string[] }>`
    SELECT p.id AS page_id, p.path, v.segment, array_agg(v.id ORDER BY v.id) AS variants
    FROM pages p
    JOIN embedding_versions av ON av.active
    JOIN content_variants v ON (v.page_id = p.id OR v.vertical = p.vertical) AND v.vector_version = av.id
    WHERE p.kind = 'landing' AND p.status = 'published'
    GROUP BY p.id, p.path, v.segment
    HAVING count(*) >= 2
    ORDER BY p.id, v.segment`.execute(db)
  return result.rows.map((r) => ({ pageId: Number(r.page_id), path: r.path, segment: r.segment, variants: r.variants.map(Number) }))
}

export interface VariantCounts {
  views: number
  conversions: number
}

/** Views and conversions per experiment ("pageId segment") and variant. */
export async function readExperimentCounts(db: Kysely<Database>): Promise<Map<string, Map<number, VariantCounts>>> {
  const rows = await db.selectFrom('experiment_counts').select(['page_id', 'segment', 'variant_id', 'views', 'conversions']).execute()
  const counts = new Map<string, Map<number, VariantCounts>>()
  for (const r of rows) {
    const key = experimentKey(Number(r.page_id), r.segment)
    let byVariant = counts.get(key)
    if (byVariant === undefined) counts.set(key, (byVariant = new Map()))
    byVariant.set(Number(r.variant_id), { views: Number(r.views), conversions: Number(r.conversions) })
  }
  return counts
}

export const experimentKey = (pageId: number, segment: string): string => `${pageId} ${segment}`

export interface ExperimentWrite {
  pageId: number
  segment: string
  variants: number[]
  allocation: number[]
  pBest: Map<number, number>
}

/** Creates or updates an experiment's split (status and pin are left as they are on an existing one). */
export async function saveExperiment(db: Kysely<Database>, write: ExperimentWrite): Promise<void> {
  await db
    .insertInto('experiments')
    .values({ page_id: write.pageId, segment: write.segment, variants: write.variants, allocation: write.allocation, p_best: JSON.stringify(Object.fromEntries(write.pBest)) })
    .onConflict((oc) =>
      oc.columns(['page_id', 'segment']).doUpdateSet({
        variants: (eb) => eb.ref('excluded.variants'),
        allocation: (eb) => eb.ref('excluded.allocation'),
        p_best: (eb) => eb.ref('excluded.p_best'),
        reallocated_at: sql`now()`,
      }),
    )
    .execute()
}

/** Ends experiments that no longer have two variants in scope (their counts go with them). */
export async function deleteExperiments(db: Kysely<Database>, keys: ReadonlyArray<{ pageId: number; segment: string }>): Promise<void> {
  for (const { pageId, segment } of keys) await db.deleteFrom('experiments').where('page_id', '=', pageId).where('segment', '=', segment).execute()
}

/** pin (every bucket to `variantId`), pause (the split stays), resume (the bandit moves it again). */
export async function setExperimentStatus(db: Kysely<Database>, pageId: number, segment: string, status: ExperimentStatus, pinnedVariantId: number | undefined): Promise<boolean> {
  const result = await db
    .updateTable('experiments')
    .set({ status, pinned_variant_id: pinnedVariantId ?? null })
    .where('page_id', '=', pageId)
    .where('segment', '=', segment)
    .executeTakeFirst()
  return Number(result.numUpdatedRows) > 0
}
