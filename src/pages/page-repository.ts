// Page, segment and variant reads for the render path: plain functions over Kysely<Database>.

import { type Kysely, type RawBuilder, type Selectable, sql } from 'kysely'
import { PREPARED } from '../db/prepared-statements.ts'
import type { ContentVariantsTable, Database, PageKind, PagesTable } from '../db/schema.ts'

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
  return row === undefined ? undefined : pageRow(row)
}

type PageColumns = Pick<Selectable<PagesTable>, 'id' | 'path' | 'kind' | 'title' | 'meta_description' | 'canonical_url' | 'body_html' | 'vertical' | 'template' | 'crawl_weight' | 'updated_at'>

function pageRow(row: PageColumns): PageRow {
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

type VariantFields = Selectable<ContentVariantsTable>
/** What the variant lookup returns besides the page's own columns: the variant's, null when there is none. */
type VariantColumns = { [K in 'headline' | 'subhead' | 'features' | 'cta_label' | 'cta_url' | 'social_proof']: VariantFields[K] | null } & {
  variant_id: string | null
  variant_segment: VariantFields['segment'] | null
  variant_updated_at: VariantFields['updated_at'] | null
  in_scope: boolean
}

/**
 * The variant lookup, one statement for the page rows `where` selects (at most one): for a landing page,
 * among the variants of `segment` in its scope (its own, then its vertical's: `vertical`) within the active
 * embedding version, the one nearest to the page's intent, and whether any variant of any segment is in
 * its scope. The scope is a handful of rows found by index (content_variants_page_scope,
 * content_variants_vertical_scope), so the distance ordering is an exact scan of them. A page with no
 * comparable vector (another version, or none yet) still gets its own variant; ties and missing distances
 * fall back to the variant id. With `withPage`, the page's columns come along.
 *
 * The scope check runs only when the segment has no variant (a variant found is in scope: OR stops at it,
 * and a subquery runs only when reached), as two probes, the first entry of each partial index for the
 * page, then for its vertical. `ORDER BY segment LIMIT 1` rather than EXISTS: the index gives that order,
 * a sequential scan would have to read every match, so no estimate can make the planner scan the table.
 * It used to be one EXISTS over `page_id = $1 OR vertical = $2`, which no index serves for a first row:
 * the planner took a sequential scan for it, run twice (the column and the join's ON), about 4 ms of a miss
 * on 10,000 variants (bench/RESULTS.md, cold section); a plain EXISTS per scope still gets one for a
 * vertical holding a large share of the variants. The active version is joined once rather than looked up
 * in four subqueries: less to plan, and the statement is planned on every execution.
 */
function variantLookup(where: RawBuilder<unknown>, vertical: RawBuilder<unknown>, segment: string, withPage: boolean, preferVariantId?: number): RawBuilder<VariantColumns & Partial<PageColumns>> {
  // LEFT JOIN LATERAL and a short-circuited scope check: kysely has no builder for them.
  return sql<VariantColumns & Partial<PageColumns>>`${sql.raw(PREPARED)}SELECT ${withPage ? sql`p.id, p.path, p.kind, p.title, p.meta_description, p.canonical_url, p.body_html, p.vertical, p.template, p.crawl_weight, p.updated_at,` : sql``}
      nv.id AS variant_id, nv.segment AS variant_segment, nv.headline, nv.subhead, nv.features, nv.cta_label, nv.cta_url, nv.social_proof, nv.updated_at AS variant_updated_at,
      COALESCE(p.kind = 'landing' AND (
        nv.id IS NOT NULL
        OR (SELECT true FROM content_variants WHERE page_id = p.id AND vector_version = av.id ORDER BY segment LIMIT 1)
        OR (SELECT true FROM content_variants WHERE vertical = ${vertical} AND vector_version = av.id ORDER BY segment LIMIT 1)
      ), false) AS in_scope
    FROM pages p
    LEFT JOIN embedding_versions av ON av.active
    LEFT JOIN LATERAL (
      SELECT v.id, v.segment, v.headline, v.subhead, v.features, v.cta_label, v.cta_url, v.social_proof, v.updated_at
      FROM content_variants v
      WHERE p.kind = 'landing' AND (v.page_id = p.id OR v.vertical = ${vertical}) AND v.segment = ${segment} AND v.vector_version = av.id
      ORDER BY ${preferVariantId === undefined ? sql`` : sql`v.id = ${preferVariantId} DESC,`} v.page_id IS NULL,
        v.embedding <=> (CASE WHEN p.embedding_version = av.id THEN p.intent_embedding END) NULLS LAST,
        v.id
      LIMIT 1
    ) AS nv ON true
    WHERE ${where}`
}

function pageVariant(row: VariantColumns | undefined): PageVariant {
  if (row === undefined || row.variant_id === null) return { variant: undefined, perSegment: row?.in_scope === true }
  return {
    perSegment: true,
    variant: {
      id: Number(row.variant_id),
      segment: row.variant_segment!,
      headline: row.headline!,
      subhead: row.subhead!,
      features: row.features!,
      ctaLabel: row.cta_label!,
      ctaUrl: row.cta_url!,
      socialProof: row.social_proof!,
      updatedAt: row.variant_updated_at!,
    },
  }
}

/** What a landing page shows a segment, and whether it differs by segment at all (see variantLookup). */
export async function findPageVariant(db: Kysely<Database>, page: { id: number; vertical: string }, segment: string): Promise<PageVariant> {
  const result = await variantLookup(sql`p.id = ${page.id}`, sql`${page.vertical}`, segment, false).execute(db)
  return pageVariant(result.rows[0])
}

/**
 * The published page at `path` and, for a landing page, what it shows `segment`: findPublishedPage and
 * findPageVariant in one statement, one round trip for a miss instead of two. `preferVariantId`: the
 * variant an experiment's bucket sees, chosen when it is in scope (else the nearest, as without). `variant` is undefined and
 * `perSegment` false for any other kind of page.
 */
export async function findPublishedPageWithVariant(db: Kysely<Database>, path: string, segment: string, preferVariantId?: number): Promise<({ page: PageRow } & PageVariant) | undefined> {
  const result = await variantLookup(sql`p.path = ${path} AND p.status = 'published'`, sql`p.vertical`, segment, true, preferVariantId).execute(db)
  const row = result.rows[0]
  if (row === undefined) return undefined
  return { page: pageRow(row as PageColumns), ...pageVariant(row) }
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
