// Page, segment and variant reads for the render path: plain functions over Kysely<Database>.

import { type Kysely, sql } from 'kysely'
import type { Database, PageKind } from '../db/schema.ts'

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

/**
 * The variant of `segment` nearest to the page's intent, within the active embedding version.
 * The segment and version filters sit in the same query as the ORDER BY, so the answer is the nearest
 * variant of that segment, never "nearest overall, then filtered".
 */
export async function findNearestVariant(db: Kysely<Database>, pageId: number, segment: string): Promise<VariantRow | undefined> {
  const row = await db
    .selectFrom('content_variants as v')
    .innerJoin('embedding_versions as ev', (join) => join.onRef('ev.id', '=', 'v.vector_version').on('ev.active', '=', true))
    .innerJoin('pages as p', (join) => join.on('p.id', '=', pageId))
    .select(['v.id', 'v.segment', 'v.headline', 'v.subhead', 'v.features', 'v.cta_label', 'v.cta_url', 'v.social_proof', 'v.updated_at'])
    .where('v.segment', '=', segment)
    .where('p.intent_embedding', 'is not', null)
    // pgvector's cosine distance operator has no kysely builder method.
    .orderBy(sql`v.embedding <=> p.intent_embedding`)
    .orderBy('v.id')
    .limit(1)
    .executeTakeFirst()
  if (row === undefined) return undefined
  return {
    id: Number(row.id),
    segment: row.segment,
    headline: row.headline,
    subhead: row.subhead,
    features: row.features,
    ctaLabel: row.cta_label,
    ctaUrl: row.cta_url,
    socialProof: row.social_proof,
    updatedAt: row.updated_at,
  }
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
