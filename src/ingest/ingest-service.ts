// Ingest of pages and variants: validate everything, embed only what changed (by content hash and
// embedding version), then upsert the whole batch in one transaction with multi-row statements.
// Embedding happens before the transaction opens: a slow provider never holds a database lock.

import { type Kysely, type Transaction, sql } from 'kysely'
import type { Database, PurgeTarget } from '../db/schema.ts'
import { DomainError, type Problem, validationError } from '../errors.ts'
import { embedAll, embeddingHash, type Embedder, padForStorage } from '../embeddings/embedder.ts'
import { toPgVector } from '../db/pg-vector.ts'
import { pageEmbeddingText } from '../embeddings/embedding-text.ts'
import { sanitizeBodyHtml } from '../render/sanitize.ts'
import { type PageInput, type VariantInput, validatePages, validateSegments, validateVariants } from './validation.ts'
import { chunks } from '../chunks.ts'
import { cacheTag } from '../http/cache-policy.ts'
import { landingPathsInScope } from '../pages/page-repository.ts'
import { enqueueTagPurge } from '../purge/purge-outbox.ts'

/** Rows per INSERT statement: each carries up to ~15 KB of vector text, so statements stay a few MB. */
const ROWS_PER_STATEMENT = 200
/** Keys per IN (...) list when reading what exists. */
const KEYS_PER_LOOKUP = 1000

export interface IngestResult {
  received: number
  inserted: number
  updated: number
  unchanged: number
  embedded: number
}

export interface IngestOptions {
  /**
   * CDNs to purge what the batch changed: written to the purge outbox in the batch's own transaction
   * (soft purges by tag), so the purges exist exactly when the change does.
   */
  purgeTargets: readonly PurgeTarget[]
}

export interface PagesIngestResult extends IngestResult {
  /** Paths whose rendering changed: the caller drops them from the origin's caches after the commit. */
  affectedPaths: string[]
  /** CDN purges written to the outbox. */
  queued: number
}

export interface VariantsIngestResult extends IngestResult {
  /** Landing pages whose scope held a changed variant, before or after the batch. */
  affectedPaths: string[]
  queued: number
}

export interface SegmentsIngestResult {
  received: number
  upserted: number
  /** Segments whose entries may have changed (every one, when the resolution rules changed). */
  affectedSegments: string[]
  queued: number
}

/** The active embedding version, created for this embedder on an empty database. */
export async function activeEmbeddingVersion(db: Kysely<Database>, embedder: Embedder): Promise<number> {
  const active = await db.selectFrom('embedding_versions').select(['id', 'model', 'dimensions']).where('active', '=', true).executeTakeFirst()
  if (active === undefined) {
    const created = await db
      .insertInto('embedding_versions')
      .values({ model: embedder.model, dimensions: embedder.dimensions, active: true })
      .onConflict((oc) => oc.column('active').where('active', '=', true).doNothing())
      .returning('id')
      .executeTakeFirst()
    if (created !== undefined) return created.id
    return activeEmbeddingVersion(db, embedder) // another writer created it first
  }
  if (active.model !== embedder.model || active.dimensions !== embedder.dimensions) {
    throw new DomainError(
      'CONFLICT',
      `the active embedding version is ${active.model} (${active.dimensions} dimensions) but the configured embedder is ${embedder.model} (${embedder.dimensions}); ` +
        `vectors of different models cannot be compared: run npm run reembed -- --model ${embedder.model} --dimensions ${embedder.dimensions}, or configure the active model`,
    )
  }
  return active.id
}


/** Code-unit order of two keys: the one order every batch upserts its rows in. */
const byKey = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)

function hashFor(embedder: Embedder, text: string): string {
  return embeddingHash(embedder.model, embedder.dimensions, text)
}

export async function ingestPages(db: Kysely<Database>, embedder: Embedder, records: readonly unknown[], publicBaseUrl: string, options: IngestOptions): Promise<PagesIngestResult> {
  const { pages, problems } = validatePages(records, publicBaseUrl)
  if (problems.length > 0) throw validationError('pages', problems)
  if (pages.length === 0) return { received: 0, inserted: 0, updated: 0, unchanged: 0, embedded: 0, affectedPaths: [], queued: 0 }
  const versionId = await activeEmbeddingVersion(db, embedder)

  const existing = new Map<string, { hash: string | null; version: number | null; weight: number }>()
  for (const paths of chunks(pages.map((p) => p.path), KEYS_PER_LOOKUP)) {
    const rows = await db.selectFrom('pages').select(['path', 'intent_hash', 'embedding_version', 'crawl_weight']).where('path', 'in', paths).execute()
    for (const row of rows) existing.set(row.path, { hash: row.intent_hash, version: row.embedding_version, weight: Number(row.crawl_weight) })
  }

  const hashes = pages.map((p) => hashFor(embedder, pageEmbeddingText(p)))
  const toEmbed = pages.flatMap((p, i) => {
    const before = existing.get(p.path)
    return before?.hash === hashes[i] && before?.version === versionId ? [] : [i]
  })
  const vectors = await embedAll(embedder, toEmbed.map((i) => pageEmbeddingText(pages[i]!)))
  const vectorByIndex = new Map(toEmbed.map((pageIndex, k) => [pageIndex, toPgVector(padForStorage(vectors[k]!))]))

  const rows = pages.map((p, i) => {
    const vector = vectorByIndex.get(i)
    return {
      path: p.path,
      kind: p.kind,
      title: p.title,
      meta_description: p.meta_description,
      canonical_url: p.canonical_url ?? '',
      body_html: sanitizeBodyHtml(p.body_html),
      intent_text: p.intent_text,
      vertical: p.vertical,
      template: p.template,
      status: p.status,
      // An import that does not mention the weight keeps the one Search Console gave the page.
      crawl_weight: p.crawl_weight ?? existing.get(p.path)?.weight ?? 0,
      intent_embedding: vector ?? null,
      embedding_version: vector === undefined ? null : versionId,
      intent_hash: vector === undefined ? null : hashes[i]!,
      updated_at: new Date(),
    }
  })
  // Rows are upserted, and so locked, in path order: two batches sharing pages (two ingests, two origins)
  // then wait for each other instead of each locking a row the other needs next (a deadlock, 40P01,
  // which PostgreSQL resolves by failing one of them).
  rows.sort((x, y) => byKey(x.path, y.path))

  const changed: Array<{ id: number; path: string; inserted: boolean }> = []
  const queued = await db.transaction().execute(async (trx) => {
    for (const chunk of chunks(rows, ROWS_PER_STATEMENT)) {
      const result = await trx
        .insertInto('pages')
        .values(chunk)
        .onConflict((oc) =>
          oc
            .column('path')
            .doUpdateSet({
              kind: (eb) => eb.ref('excluded.kind'),
              title: (eb) => eb.ref('excluded.title'),
              meta_description: (eb) => eb.ref('excluded.meta_description'),
              canonical_url: (eb) => eb.ref('excluded.canonical_url'),
              body_html: (eb) => eb.ref('excluded.body_html'),
              intent_text: (eb) => eb.ref('excluded.intent_text'),
              vertical: (eb) => eb.ref('excluded.vertical'),
              template: (eb) => eb.ref('excluded.template'),
              status: (eb) => eb.ref('excluded.status'),
              crawl_weight: (eb) => eb.ref('excluded.crawl_weight'),
              // Rows whose text did not change carry no vector: keep the stored one.
              intent_embedding: sql`coalesce(excluded.intent_embedding, pages.intent_embedding)`,
              embedding_version: sql`coalesce(excluded.embedding_version, pages.embedding_version)`,
              intent_hash: sql`coalesce(excluded.intent_hash, pages.intent_hash)`,
              updated_at: sql`now()`,
            })
            // Identical content is not rewritten, so its Last-Modified and ETag stay put.
            .where(
              sql<boolean>`(pages.kind, pages.title, pages.meta_description, pages.canonical_url, pages.body_html, pages.intent_text, pages.vertical, pages.template, pages.status, pages.crawl_weight)
                IS DISTINCT FROM (excluded.kind, excluded.title, excluded.meta_description, excluded.canonical_url, excluded.body_html, excluded.intent_text, excluded.vertical, excluded.template, excluded.status, excluded.crawl_weight)
                OR excluded.intent_embedding IS NOT NULL`,
            ),
        )
        .returning(['id', 'path', sql<boolean>`(xmax = 0)`.as('inserted')])
        .execute()
      changed.push(...result.map((r) => ({ id: Number(r.id), path: r.path, inserted: r.inserted })))
    }
    if (changed.length === 0) return 0
    // Every rendering of a changed page (any segment), the index and sitemaps that list pages, and, for
    // a new page, the 404 a CDN may still hold for its path.
    const tags = [
      ...changed.filter((c) => !c.inserted).map((c) => cacheTag('page', c.id)),
      cacheTag('template', 'index'),
      cacheTag('template', 'sitemap'),
      ...(changed.some((c) => c.inserted) ? [cacheTag('template', 'not-found')] : []),
    ]
    return enqueueTagPurge(trx, options.purgeTargets, tags, true)
  })

  const inserted = changed.filter((c) => c.inserted).length
  return {
    received: pages.length,
    inserted,
    updated: changed.length - inserted,
    unchanged: pages.length - changed.length,
    embedded: toEmbed.length,
    affectedPaths: changed.map((c) => c.path),
    queued,
  }
}

/** A variant's scope: its landing page's id, or its vertical. */
interface Scope {
  pageId: number | null
  vertical: string | null
}

/**
 * The scope of each variant from the database: its page must be a published-or-not landing page and its
 * vertical one that landing pages have. Problems name the record and the field.
 */
async function resolveScopes(db: Kysely<Database>, variants: readonly VariantInput[]): Promise<{ scopes: Scope[]; problems: Problem[] }> {
  const paths = [...new Set(variants.flatMap((v) => (v.page === undefined ? [] : [v.page])))]
  const pages = new Map<string, { id: number; kind: string }>()
  for (const group of chunks(paths, KEYS_PER_LOOKUP)) {
    for (const row of await db.selectFrom('pages').select(['id', 'path', 'kind']).where('path', 'in', group).execute()) pages.set(row.path, { id: Number(row.id), kind: row.kind })
  }
  const wanted = [...new Set(variants.flatMap((v) => (v.vertical === undefined ? [] : [v.vertical])))]
  const verticals = new Set<string>()
  if (wanted.length > 0) {
    for (const row of await db.selectFrom('pages').select('vertical').distinct().where('kind', '=', 'landing').where('vertical', 'in', wanted).execute()) verticals.add(row.vertical)
  }
  const problems: Problem[] = []
  const scopes = variants.map((v): Scope => {
    if (v.page !== undefined) {
      const page = pages.get(v.page)
      if (page === undefined) problems.push({ record: v.record, field: 'page', message: `no page has the path ${v.page}: ingest the landing page first (or give "vertical")` })
      else if (page.kind !== 'landing') problems.push({ record: v.record, field: 'page', message: `${v.page} is an SEO page; variants belong to landing pages` })
      return { pageId: page?.id ?? null, vertical: null }
    }
    if (!verticals.has(v.vertical!)) problems.push({ record: v.record, field: 'vertical', message: `no landing page has the vertical ${JSON.stringify(v.vertical)}: ingest a landing page of that vertical first` })
    return { pageId: null, vertical: v.vertical! }
  })
  return { scopes, problems }
}

export async function ingestVariants(db: Kysely<Database>, embedder: Embedder, records: readonly unknown[], options: IngestOptions): Promise<VariantsIngestResult> {
  const segments = new Set((await db.selectFrom('segments').select('slug').execute()).map((s) => s.slug))
  const checked = validateVariants(records, segments)
  if (checked.problems.length > 0) throw validationError('variants', checked.problems)
  const { variants } = checked
  if (variants.length === 0) return { received: 0, inserted: 0, updated: 0, unchanged: 0, embedded: 0, affectedPaths: [], queued: 0 }
  const { scopes, problems } = await resolveScopes(db, variants)
  if (problems.length > 0) throw validationError('variants', problems)
  const scopeOf = new Map(variants.map((v, i) => [v.key, scopes[i]!]))
  const versionId = await activeEmbeddingVersion(db, embedder)

  const existing = new Map<string, { hash: string } & Scope>()
  for (const keys of chunks(variants.map((v) => v.key), KEYS_PER_LOOKUP)) {
    const rows = await db.selectFrom('content_variants').select(['variant_key', 'content_hash', 'page_id', 'vertical']).where('vector_version', '=', versionId).where('variant_key', 'in', keys).execute()
    for (const row of rows) existing.set(row.variant_key, { hash: row.content_hash, pageId: row.page_id === null ? null : Number(row.page_id), vertical: row.vertical })
  }
  const hashes = variants.map((v) => hashFor(embedder, v.text))
  const needsVector = variants.flatMap((v, i) => (existing.get(v.key)?.hash === hashes[i] ? [] : [i]))
  const vectors = await embedAll(embedder, needsVector.map((i) => variants[i]!.text))
  // In key order, so concurrent batches lock shared rows in one order (see ingestPages).
  const withVector = needsVector.map((i, k) => ({ variant: variants[i]!, hash: hashes[i]!, embedding: toPgVector(padForStorage(vectors[k]!)) })).sort((x, y) => byKey(x.variant.key, y.variant.key))
  const sameVector = variants.filter((v, i) => existing.get(v.key)?.hash === hashes[i]).sort((x, y) => byKey(x.key, y.key))

  // A changed variant changes the pages of its scope, and of the scope it left when it moved.
  const pageIds = new Set<number>()
  const verticals = new Set<string>()
  const touched = (key: string): void => {
    for (const scope of [scopeOf.get(key), existing.get(key)]) {
      if (scope?.pageId != null) pageIds.add(scope.pageId)
      if (scope?.vertical != null) verticals.add(scope.vertical)
    }
  }
  let inserted = 0
  let updated = 0
  const { affectedPaths, queued } = await db.transaction().execute(async (trx) => {
    for (const chunk of chunks(withVector, ROWS_PER_STATEMENT)) {
      const result = await trx
        .insertInto('content_variants')
        .values(
          chunk.map(({ variant: v, hash, embedding }) => ({
            variant_key: v.key,
            segment: v.segment,
            page_id: scopeOf.get(v.key)!.pageId,
            vertical: scopeOf.get(v.key)!.vertical,
            headline: v.headline,
            subhead: v.subhead,
            features: JSON.stringify(v.features),
            cta_label: v.cta_label,
            cta_url: v.cta_url,
            social_proof: v.social_proof,
            metadata: JSON.stringify(v.metadata),
            embedding,
            vector_version: versionId,
            content_hash: hash,
            embedding_text: v.text,
            updated_at: new Date(),
          })),
        )
        .onConflict((oc) =>
          oc.columns(['variant_key', 'vector_version']).doUpdateSet({
            segment: (eb) => eb.ref('excluded.segment'),
            page_id: (eb) => eb.ref('excluded.page_id'),
            vertical: (eb) => eb.ref('excluded.vertical'),
            headline: (eb) => eb.ref('excluded.headline'),
            subhead: (eb) => eb.ref('excluded.subhead'),
            features: (eb) => eb.ref('excluded.features'),
            cta_label: (eb) => eb.ref('excluded.cta_label'),
            cta_url: (eb) => eb.ref('excluded.cta_url'),
            social_proof: (eb) => eb.ref('excluded.social_proof'),
            metadata: (eb) => eb.ref('excluded.metadata'),
            embedding: (eb) => eb.ref('excluded.embedding'),
            content_hash: (eb) => eb.ref('excluded.content_hash'),
            embedding_text: (eb) => eb.ref('excluded.embedding_text'),
            updated_at: sql`now()`,
          }),
        )
        .returning(['variant_key', sql<boolean>`(xmax = 0)`.as('inserted')])
        .execute()
      for (const row of result) {
        touched(row.variant_key)
        if (row.inserted) inserted++
        else updated++
      }
    }
    if (sameVector.length > 0) updated += await updateCopyOnly(trx, versionId, sameVector, scopeOf, touched)
    const pages = await landingPathsInScope(trx, { pageIds: [...pageIds], verticals: [...verticals] })
    const queued = await enqueueTagPurge(trx, options.purgeTargets, pages.map((p) => cacheTag('page', p.id)), true)
    return { affectedPaths: pages.map((p) => p.path), queued }
  })

  return {
    received: variants.length,
    inserted,
    updated,
    unchanged: variants.length - inserted - updated,
    embedded: withVector.length,
    affectedPaths,
    queued,
  }
}

/** Variants whose embedded text is unchanged: update the visible copy and scope in one set-based UPDATE (unnest). */
async function updateCopyOnly(trx: Transaction<Database>, versionId: number, variants: VariantInput[], scopeOf: ReadonlyMap<string, Scope>, touched: (key: string) => void): Promise<number> {
  const column = <K extends keyof VariantInput>(key: K) => variants.map((v) => v[key])
  const result = await sql<{ variant_key: string }>`
    UPDATE content_variants AS v SET
      segment = u.segment, page_id = u.page_id, vertical = u.vertical, headline = u.headline, subhead = u.subhead, features = u.features::jsonb,
      cta_label = u.cta_label, cta_url = u.cta_url, social_proof = u.social_proof, metadata = u.metadata::jsonb, updated_at = now()
    FROM unnest(
      ${column('key')}::text[], ${column('segment')}::text[], ${variants.map((v) => scopeOf.get(v.key)!.pageId)}::bigint[],
      ${variants.map((v) => scopeOf.get(v.key)!.vertical)}::text[], ${column('headline')}::text[], ${column('subhead')}::text[],
      ${variants.map((v) => JSON.stringify(v.features))}::text[], ${column('cta_label')}::text[], ${column('cta_url')}::text[],
      ${column('social_proof')}::text[], ${variants.map((v) => JSON.stringify(v.metadata))}::text[]
    ) AS u(variant_key, segment, page_id, vertical, headline, subhead, features, cta_label, cta_url, social_proof, metadata)
    WHERE v.variant_key = u.variant_key AND v.vector_version = ${versionId}
      AND (v.segment, v.page_id, v.vertical, v.headline, v.subhead, v.features, v.cta_label, v.cta_url, v.social_proof, v.metadata)
        IS DISTINCT FROM (u.segment, u.page_id, u.vertical, u.headline, u.subhead, u.features::jsonb, u.cta_label, u.cta_url, u.social_proof, u.metadata::jsonb)
    RETURNING v.variant_key`.execute(trx)
  for (const row of result.rows) touched(row.variant_key)
  return result.rows.length
}

export async function ingestSegments(db: Kysely<Database>, records: readonly unknown[], options: IngestOptions): Promise<SegmentsIngestResult> {
  const { segments, problems } = validateSegments(records)
  if (problems.length > 0) throw validationError('segments', problems)
  if (segments.length === 0) return { received: 0, upserted: 0, affectedSegments: [], queued: 0 }
  return db.transaction().execute(async (trx) => {
    const before = await trx.selectFrom('segments').select(['slug', 'utm_sources', 'is_default']).execute()
    // A new default demotes the old one in the same transaction (one default at a time).
    if (segments.some((s) => s.is_default)) await trx.updateTable('segments').set({ is_default: false }).where('is_default', '=', true).execute()
    await trx
      .insertInto('segments')
      .values(segments)
      .onConflict((oc) =>
        oc.column('slug').doUpdateSet({
          description: (eb) => eb.ref('excluded.description'),
          utm_sources: (eb) => eb.ref('excluded.utm_sources'),
          is_default: (eb) => eb.ref('excluded.is_default'),
        }),
      )
      .execute()
    const after = await trx.selectFrom('segments').select(['slug', 'utm_sources', 'is_default']).execute()
    // Which segment a request resolves to (slugs, utm rules, the default) decides what every per-segment
    // page shows it: when that changed, every segment's renderings go. A description alone changes none.
    const rules = (rows: typeof before) => JSON.stringify(rows.map((r) => [r.slug, [...r.utm_sources].sort(), r.is_default]).sort())
    if (rules(before) === rules(after)) return { received: segments.length, upserted: segments.length, affectedSegments: [], queued: 0 }
    const affectedSegments = [...new Set([...before, ...after].map((r) => r.slug))].sort()
    const queued = await enqueueTagPurge(trx, options.purgeTargets, affectedSegments.map((slug) => cacheTag('segment', slug)), true)
    return { received: segments.length, upserted: segments.length, affectedSegments, queued }
  })
}
