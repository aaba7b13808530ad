// Page, segment and variant reads for the render path: plain functions over Kysely<Database>.

import { type Kysely, type Selectable, sql } from 'kysely'
import type { ContentVariantsTable, Database, PageKind } from '../db/schema.ts'

export interface PageRow {
  id: number
  path: string
  kind: PageKind
  title: string
  metaDescription: string
  canonicalUrl: string
  bodyHtml: string
  vertical: string
  template: string
  crawlWeight: number
  updatedAt: Date
}

export async function findPublishedPage(db: Kysely<Database>, path: string): Promise<PageRow | undefined> {
  const row = await db
    .selectFrom('pages')
    .select(['id', 'path', 'kind', 'title', 'meta_description', 'canonical_url', 'body_html', 'vertical', 'template', 'crawl_weight', 'updated_at'])
    .where('path', '=', path)
    .where('status', '=', 'published')
    .executeTakeFirst()
  if (row === undefined) return undefined
  return {
    id: Number(row.id),
    path: row.path,
    kind: row.kind,
    title: row.title,
    metaDescription: row.meta_description,
    canonicalUrl: row.canonical_url,
    bodyHtml: row.body_html,
    vertical: row.vertical,
    template: row.template,
    crawlWeight: Number(row.crawl_weight),
    updatedAt: row.updated_at,
  }
}

export interface VariantRow {
  id: number
  segment: string
  headline: string
  subhead: string
  features: string[]
  ctaLabel: string
  ctaUrl: string
  socialProof: string
  updatedAt: Date
}

/** The active embedding version: every vector comparison stays within it, so versions never mix. */
const activeVersion = sql<number>`(SELECT id FROM embedding_versions WHERE active)`

export interface PageVariant {
  /** The variant this segment sees, if any: its page's own nearest, else its vertical's nearest. */
  variant: VariantRow | undefined
  /**
   * Whether any variant is in this page's scope, for any segment: when none is, the page's bytes
   * cannot depend on the segment, and it is cached once for all of them.
   */
  perSegment: boolean
}

/**
 * What a landing page shows a segment: among the variants of that segment in the page's scope (its own,
 * then its vertical's) within the active embedding version, the one nearest to the page's intent. The
 * scope is a handful of rows found by index, so the distance ordering is an exact scan of them. A page
 * with no comparable vector (another version, or none yet) still gets its own variant; ties and
 * missing distances fall back to the variant id. One statement: the scope check rides along.
 */
export async function findPageVariant(db: Kysely<Database>, page: { id: number; vertical: string }, segment: string): Promise<PageVariant> {
  // LEFT JOIN LATERAL over a one-row scope check: kysely has no builder for it.
  const result = await sql<
    { in_scope: boolean; id: string | null } & Pick<Selectable<ContentVariantsTable>, 'segment' | 'headline' | 'subhead' | 'features' | 'cta_label' | 'cta_url' | 'social_proof' | 'updated_at'>
  >`
    SELECT scope.in_scope, nv.* FROM (
      SELECT EXISTS (
        SELECT 1 FROM content_variants
        WHERE (page_id = ${page.id} OR vertical = ${page.vertical}) AND vector_version = ${activeVersion}
      ) AS in_scope
    ) AS scope
    LEFT JOIN LATERAL (
      SELECT v.id, v.segment, v.headline, v.subhead, v.features, v.cta_label, v.cta_url, v.social_proof, v.updated_at
      FROM content_variants v
      WHERE (v.page_id = ${page.id} OR v.vertical = ${page.vertical}) AND v.segment = ${segment} AND v.vector_version = ${activeVersion}
      ORDER BY v.page_id IS NULL,
        v.embedding <=> (SELECT intent_embedding FROM pages WHERE id = ${page.id} AND embedding_version = ${activeVersion}) NULLS LAST,
        v.id
      LIMIT 1
    ) AS nv ON scope.in_scope`.execute(db)
  const row = result.rows[0]
  if (row === undefined || row.id === null) return { variant: undefined, perSegment: row?.in_scope === true }
  return {
    perSegment: true,
    variant: {
      id: Number(row.id),
      segment: row.segment,
      headline: row.headline,
      subhead: row.subhead,
      features: row.features,
      ctaLabel: row.cta_label,
      ctaUrl: row.cta_url,
      socialProof: row.social_proof,
      updatedAt: row.updated_at,
    },
  }
}

/** The landing pages whose scope is these pages or verticals: what an edit of their variants changes. */
export async function landingPathsInScope(db: Kysely<Database>, scope: { pageIds: readonly number[]; verticals: readonly string[] }): Promise<Array<{ id: number; path: string }>> {
  if (scope.pageIds.length === 0 && scope.verticals.length === 0) return []
  const rows = await db
    .selectFrom('pages')
    .select(['id', 'path'])
    .where('kind', '=', 'landing')
    .where((eb) => eb.or([eb('id', '=', sql<number>`any(${[...scope.pageIds]}::bigint[])`), eb('vertical', '=', sql<string>`any(${[...scope.verticals]}::text[])`)]))
    .orderBy('path')
    .execute()
  return rows.map((r) => ({ id: Number(r.id), path: r.path }))
}

export interface RelatedLink {
  path: string
  title: string
}

/** Up to `limit` published SEO pages of the same vertical, nearest by intent embedding. */
export async function findRelatedPages(db: Kysely<Database>, pageId: number, vertical: string, limit: number): Promise<RelatedLink[]> {
  if (limit === 0) return []
  return db
    .selectFrom('pages as p')
    .select(['p.path', 'p.title'])
    .where('p.vertical', '=', vertical)
    .where('p.kind', '=', 'seo')
    .where('p.status', '=', 'published')
    .where('p.id', '<>', pageId)
    .where('p.embedding_version', '=', activeVersion)
    .where(({ exists, selectFrom }) =>
      exists(selectFrom('pages').select('id').where('id', '=', pageId).where('embedding_version', '=', activeVersion).where('intent_embedding', 'is not', null)),
    )
    .orderBy(sql`p.intent_embedding <=> (SELECT intent_embedding FROM pages WHERE id = ${pageId})`)
    .orderBy('p.path')
    .limit(limit)
    .execute()
}

export interface SegmentRow {
  slug: string
  utmSources: string[]
  isDefault: boolean
}

export async function listSegments(db: Kysely<Database>): Promise<SegmentRow[]> {
  const rows = await db.selectFrom('segments').select(['slug', 'utm_sources', 'is_default']).orderBy('slug').execute()
  return rows.map((r) => ({ slug: r.slug, utmSources: r.utm_sources, isDefault: r.is_default }))
}

export interface PageLink {
  path: string
  title: string
  kind: PageKind
  vertical: string
  crawlWeight: number
}

/** Links for the site index: every landing page and the heaviest SEO pages of each vertical. */
export async function listIndexLinks(db: Kysely<Database>, perVertical: number): Promise<PageLink[]> {
  const rows = await db
    .selectFrom((eb) =>
      eb
        .selectFrom('pages')
        .select(['path', 'title', 'kind', 'vertical', 'crawl_weight'])
        .select(sql<number>`row_number() over (partition by kind, vertical order by crawl_weight desc, path)`.as('rank'))
        .where('status', '=', 'published')
        .as('ranked'),
    )
    .selectAll()
    .where((eb) => eb.or([eb('kind', '=', 'landing'), eb('rank', '<=', perVertical)]))
    .orderBy('kind')
    .orderBy('vertical')
    .orderBy('crawl_weight', 'desc')
    .orderBy('path')
    .execute()
  return rows.map((r) => ({ path: r.path, title: r.title, kind: r.kind, vertical: r.vertical, crawlWeight: Number(r.crawl_weight) }))
}

export async function latestPageUpdate(db: Kysely<Database>): Promise<Date> {
  const row = await db.selectFrom('pages').select((eb) => eb.fn.max('updated_at').as('latest')).executeTakeFirst()
  return row?.latest ?? new Date(0)
}

/** Upper bounds of the crawl-weight histogram /metrics exposes. */
export const CRAWL_WEIGHT_BOUNDS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1] as const

/** Published pages with a weight at most each bound (cumulative, like a Prometheus histogram), in one scan. */
export async function crawlWeightDistribution(db: Kysely<Database>): Promise<Array<{ le: number; pages: number }>> {
  // Raw SQL: one filtered count per bound in a single pass; kysely's builder has no FILTER clause.
  const columns = CRAWL_WEIGHT_BOUNDS.map((bound, i) => sql`count(*) filter (where crawl_weight <= ${sql.lit(bound)}::real)`.as(`b${i}`))
  const row = (await db.selectFrom('pages').select(columns).where('status', '=', 'published').executeTakeFirstOrThrow()) as Record<string, string | number>
  return CRAWL_WEIGHT_BOUNDS.map((le, i) => ({ le, pages: Number(row[`b${i}`]) }))
}
