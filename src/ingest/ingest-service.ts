// Ingest of pages and variants: validate everything, embed only what changed (by content hash and
// embedding version), then upsert the whole batch in one transaction with multi-row statements.
// Embedding happens before the transaction opens: a slow provider never holds a database lock.

import { type Kysely, type Transaction, sql } from 'kysely'
import type { Database } from '../db/schema.ts'
import { DomainError, validationError } from '../errors.ts'
import { embedAll, embeddingHash, type Embedder, padForStorage } from '../embeddings/embedder.ts'
import { toPgVector } from '../db/pg-vector.ts'
import { pageEmbeddingText } from '../embeddings/embedding-text.ts'
import { sanitizeBodyHtml } from '../render/sanitize.ts'
import { type PageInput, type VariantInput, validatePages, validateSegments, validateVariants } from './validation.ts'
import { chunks } from '../chunks.ts'

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

export interface PagesIngestResult extends IngestResult {
  affectedPaths: string[]
}

export interface VariantsIngestResult extends IngestResult {
  affectedSegments: string[]
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


function hashFor(embedder: Embedder, text: string): string {
  return embeddingHash(embedder.model, embedder.dimensions, text)
}

export async function ingestPages(db: Kysely<Database>, embedder: Embedder, records: readonly unknown[], publicBaseUrl: string): Promise<PagesIngestResult> {
  const { pages, problems } = validatePages(records, publicBaseUrl)
  if (problems.length > 0) throw validationError('pages', problems)
  if (pages.length === 0) return { received: 0, inserted: 0, updated: 0, unchanged: 0, embedded: 0, affectedPaths: [] }
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

  const changed: Array<{ path: string; inserted: boolean }> = []
  await db.transaction().execute(async (trx) => {
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
        .returning(['path', sql<boolean>`(xmax = 0)`.as('inserted')])
        .execute()
      changed.push(...result)
    }
  })

  const inserted = changed.filter((c) => c.inserted).length
  return {
    received: pages.length,
    inserted,
    updated: changed.length - inserted,
    unchanged: pages.length - changed.length,
    embedded: toEmbed.length,
    affectedPaths: changed.map((c) => c.path),
  }
}

export async function ingestVariants(db: Kysely<Database>, embedder: Embedder, records: readonly unknown[]): Promise<VariantsIngestResult> {
  const segments = new Set((await db.selectFrom('segments').select('slug').execute()).map((s) => s.slug))
  const { variants, problems } = validateVariants(records, segments)
  if (problems.length > 0) throw validationError('variants', problems)
  if (variants.length === 0) return { received: 0, inserted: 0, updated: 0, unchanged: 0, embedded: 0, affectedSegments: [] }
  const versionId = await activeEmbeddingVersion(db, embedder)

  const existing = new Map<string, { hash: string; segment: string }>()
  for (const keys of chunks(variants.map((v) => v.key), KEYS_PER_LOOKUP)) {
    const rows = await db.selectFrom('content_variants').select(['variant_key', 'content_hash', 'segment']).where('vector_version', '=', versionId).where('variant_key', 'in', keys).execute()
    for (const row of rows) existing.set(row.variant_key, { hash: row.content_hash, segment: row.segment })
  }
  const hashes = variants.map((v) => hashFor(embedder, v.text))
  const needsVector = variants.flatMap((v, i) => (existing.get(v.key)?.hash === hashes[i] ? [] : [i]))
  const vectors = await embedAll(embedder, needsVector.map((i) => variants[i]!.text))
  const withVector = needsVector.map((i, k) => ({ variant: variants[i]!, hash: hashes[i]!, embedding: toPgVector(padForStorage(vectors[k]!)) }))
  const sameVector = variants.filter((v, i) => existing.get(v.key)?.hash === hashes[i])

  // A variant that moves segment changes the answer for both: invalidate the one it left too.
  const changedSegments = new Set<string>()
  const touched = (key: string, segment: string): void => {
    changedSegments.add(segment)
    const before = existing.get(key)
    if (before !== undefined) changedSegments.add(before.segment)
  }
  let inserted = 0
  let updated = 0
  await db.transaction().execute(async (trx) => {
    for (const chunk of chunks(withVector, ROWS_PER_STATEMENT)) {
      const result = await trx
        .insertInto('content_variants')
        .values(
          chunk.map(({ variant: v, hash, embedding }) => ({
            variant_key: v.key,
            segment: v.segment,
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
        .returning(['variant_key', 'segment', sql<boolean>`(xmax = 0)`.as('inserted')])
        .execute()
      for (const row of result) {
        touched(row.variant_key, row.segment)
        if (row.inserted) inserted++
        else updated++
      }
    }
    if (sameVector.length > 0) updated += await updateCopyOnly(trx, versionId, sameVector, touched)
  })

  return {
    received: variants.length,
    inserted,
    updated,
    unchanged: variants.length - inserted - updated,
    embedded: withVector.length,
    affectedSegments: [...changedSegments].sort(),
  }
}

/** Variants whose embedded text is unchanged: update the visible copy in one set-based UPDATE (unnest). */
async function updateCopyOnly(trx: Transaction<Database>, versionId: number, variants: VariantInput[], touched: (key: string, segment: string) => void): Promise<number> {
  const column = <K extends keyof VariantInput>(key: K) => variants.map((v) => v[key])
  const result = await sql<{ variant_key: string; segment: string }>`
    UPDATE content_variants AS v SET
      segment = u.segment, headline = u.headline, subhead = u.subhead, features = u.features::jsonb,
      cta_label = u.cta_label, cta_url = u.cta_url, social_proof = u.social_proof, metadata = u.metadata::jsonb, updated_at = now()
    FROM unnest(
      ${column('key')}::text[], ${column('segment')}::text[], ${column('headline')}::text[], ${column('subhead')}::text[],
      ${variants.map((v) => JSON.stringify(v.features))}::text[], ${column('cta_label')}::text[], ${column('cta_url')}::text[],
      ${column('social_proof')}::text[], ${variants.map((v) => JSON.stringify(v.metadata))}::text[]
    ) AS u(variant_key, segment, headline, subhead, features, cta_label, cta_url, social_proof, metadata)
    WHERE v.variant_key = u.variant_key AND v.vector_version = ${versionId}
      AND (v.segment, v.headline, v.subhead, v.features, v.cta_label, v.cta_url, v.social_proof, v.metadata)
        IS DISTINCT FROM (u.segment, u.headline, u.subhead, u.features::jsonb, u.cta_label, u.cta_url, u.social_proof, u.metadata::jsonb)
    RETURNING v.variant_key, v.segment`.execute(trx)
  for (const row of result.rows) touched(row.variant_key, row.segment)
  return result.rows.length
}

export async function ingestSegments(db: Kysely<Database>, records: readonly unknown[]): Promise<{ received: number; upserted: number }> {
  const { segments, problems } = validateSegments(records)
  if (problems.length > 0) throw validationError('segments', problems)
  if (segments.length === 0) return { received: 0, upserted: 0 }
  await db.transaction().execute(async (trx) => {
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
  })
  return { received: segments.length, upserted: segments.length }
}
