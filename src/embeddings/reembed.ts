// Re-embedding under a new model or size: a new embedding version is built beside the serving one
// in resumable batches (variants as rows of the new version, page vectors in a staging table), then
// switched to in one transaction. Every vector query filters on the active version, so no request
// ever compares vectors of two versions; an interrupted run resumes where it stopped.

import { type Kysely, sql } from 'kysely'
import type { Database } from '../db/schema.ts'
import { DomainError } from '../errors.ts'
import { embedAll, type Embedder, embeddingHash, padForStorage } from './embedder.ts'
import { toPgVector } from '../db/pg-vector.ts'
import { pageEmbeddingText } from './embedding-text.ts'

export interface ReembedProgress {
  versionId: number
  variantsEmbedded: number
  pagesEmbedded: number
  switched: boolean
  previousVersionId: number | undefined
}

interface Logger {
  info(obj: object, msg: string): void
}

export interface ReembedOptions {
  batchSize?: number
  /** Called after every batch; tests use it to interleave reads and writes. */
  onBatch?: (progress: ReembedProgress) => Promise<void> | void
  log?: Logger
  /** Stop after building (no switch): for staged roll-outs and tests of resumption. */
  buildOnly?: boolean
}

/** The version being built for this model and size: resumed if an earlier run left it inactive. */
async function targetVersion(db: Kysely<Database>, embedder: Embedder): Promise<{ id: number; active: boolean }> {
  const existing = await db
    .selectFrom('embedding_versions')
    .select(['id', 'active'])
    .where('model', '=', embedder.model)
    .where('dimensions', '=', embedder.dimensions)
    .orderBy('id', 'desc')
    .executeTakeFirst()
  if (existing !== undefined) return existing
  const created = await db.insertInto('embedding_versions').values({ model: embedder.model, dimensions: embedder.dimensions, active: false }).returning(['id', 'active']).executeTakeFirstOrThrow()
  return created
}

export async function reembed(db: Kysely<Database>, embedder: Embedder, options: ReembedOptions = {}): Promise<ReembedProgress> {
  const batchSize = options.batchSize ?? 500
  const active = await db.selectFrom('embedding_versions').select('id').where('active', '=', true).executeTakeFirst()
  const target = await targetVersion(db, embedder)
  const progress: ReembedProgress = { versionId: target.id, variantsEmbedded: 0, pagesEmbedded: 0, switched: false, previousVersionId: active?.id }
  if (target.active) {
    options.log?.info({ versionId: target.id }, 'this model and size is already the active version; nothing to do')
    return progress
  }
  if (active === undefined) throw new DomainError('CONFLICT', 'there is no active embedding version to re-embed from; ingest content first')
  const from = active.id

  // Until nothing is outstanding: content ingested while we ran is picked up by the next pass.
  for (;;) {
    const variants = await embedVariantBatches(db, embedder, from, target.id, batchSize, progress, options)
    const pages = await embedPageBatches(db, embedder, target.id, batchSize, progress, options)
    if (variants + pages === 0) break
  }
  if (options.buildOnly === true) return progress

  const switched = await db.transaction().execute(async (trx) => {
    // Re-check inside the transaction: a write that slipped in after the last pass sends us round again.
    if ((await outstandingVariants(trx, from, target.id, 1)).length > 0 || (await outstandingPages(trx, embedder, target.id, 1)).length > 0) return false
    // Copy edits that did not change the embedded text (headline, CTA, ...) onto the new version's rows.
    await sql`UPDATE content_variants AS t SET segment = s.segment, page_id = s.page_id, vertical = s.vertical, headline = s.headline, subhead = s.subhead, features = s.features,
        cta_label = s.cta_label, cta_url = s.cta_url, social_proof = s.social_proof, metadata = s.metadata, updated_at = s.updated_at
      FROM content_variants AS s WHERE s.vector_version = ${from} AND t.vector_version = ${target.id} AND t.variant_key = s.variant_key`.execute(trx)
    // Variants deleted from the serving version since they were copied do not come back.
    await sql`DELETE FROM content_variants AS t WHERE t.vector_version = ${target.id}
      AND NOT EXISTS (SELECT 1 FROM content_variants s WHERE s.vector_version = ${from} AND s.variant_key = t.variant_key)`.execute(trx)
    await sql`UPDATE pages AS p SET intent_embedding = s.embedding, embedding_version = s.version_id, intent_hash = s.intent_hash
      FROM page_embedding_staging AS s WHERE s.page_id = p.id AND s.version_id = ${target.id}`.execute(trx)
    await trx.updateTable('embedding_versions').set({ active: false }).where('id', '=', from).execute()
    await trx.updateTable('embedding_versions').set({ active: true }).where('id', '=', target.id).execute()
    await trx.deleteFrom('page_embedding_staging').where('version_id', '=', target.id).execute()
    await trx.deleteFrom('content_variants').where('vector_version', '=', from).execute()
    return true
  })
  if (!switched) return reembed(db, embedder, options)
  progress.switched = true
  options.log?.info({ from, to: target.id }, 'switched the active embedding version')
  return progress
}

/** Serving-version variants whose new-version copy is missing or older than them. */
async function outstandingVariants(db: Kysely<Database>, from: number, to: number, limit: number, afterKey = '') {
  return db
    .selectFrom('content_variants as s')
    .leftJoin('content_variants as t', (join) => join.onRef('t.variant_key', '=', 's.variant_key').on('t.vector_version', '=', to))
    .select(['s.variant_key', 's.segment', 's.page_id', 's.vertical', 's.headline', 's.subhead', 's.features', 's.cta_label', 's.cta_url', 's.social_proof', 's.metadata', 's.embedding_text', 's.updated_at'])
    .where('s.vector_version', '=', from)
    .where('s.variant_key', '>', afterKey)
    .where((eb) => eb.or([eb('t.id', 'is', null), eb('t.embedding_text', '<>', eb.ref('s.embedding_text'))]))
    .orderBy('s.variant_key')
    .limit(limit)
    .execute()
}

async function embedVariantBatches(db: Kysely<Database>, embedder: Embedder, from: number, to: number, batchSize: number, progress: ReembedProgress, options: ReembedOptions): Promise<number> {
  let done = 0
  let afterKey = ''
  for (;;) {
    const rows = await outstandingVariants(db, from, to, batchSize, afterKey)
    if (rows.length === 0) return done
    afterKey = rows[rows.length - 1]!.variant_key
    const vectors = await embedAll(embedder, rows.map((r) => r.embedding_text))
    await db
      .insertInto('content_variants')
      .values(
        rows.map((r, i) => ({
          variant_key: r.variant_key,
          segment: r.segment,
          page_id: r.page_id,
          vertical: r.vertical,
          headline: r.headline,
          subhead: r.subhead,
          features: JSON.stringify(r.features),
          cta_label: r.cta_label,
          cta_url: r.cta_url,
          social_proof: r.social_proof,
          metadata: JSON.stringify(r.metadata),
          embedding: toPgVector(padForStorage(vectors[i]!)),
          vector_version: to,
          content_hash: embeddingHash(embedder.model, embedder.dimensions, r.embedding_text),
          embedding_text: r.embedding_text,
          updated_at: r.updated_at,
        })),
      )
      .onConflict((oc) =>
        oc.columns(['variant_key', 'vector_version']).doUpdateSet({
          embedding: (eb) => eb.ref('excluded.embedding'),
          content_hash: (eb) => eb.ref('excluded.content_hash'),
          embedding_text: (eb) => eb.ref('excluded.embedding_text'),
        }),
      )
      .execute()
    done += rows.length
    progress.variantsEmbedded += rows.length
    options.log?.info({ versionId: to, variants: progress.variantsEmbedded }, 're-embedded a batch of variants')
    await options.onBatch?.(progress)
  }
}

/**
 * Pages whose staged vector for the new version is missing or was computed from other text, after
 * `afterId` (keyset pagination: each batch reads only its own rows). The hash is embeddingHash()
 * written in SQL: sha256 of "model\ndimensions\ntext" over the text pageEmbeddingText() picks.
 */
async function outstandingPages(db: Kysely<Database>, embedder: Embedder, to: number, limit: number, afterId = 0) {
  const expectedHash = sql<string>`encode(sha256(convert_to(${embedder.model} || E'\n' || ${String(embedder.dimensions)} || E'\n' ||
    CASE WHEN p.intent_text <> '' THEN p.intent_text ELSE p.title || '. ' || p.meta_description END, 'UTF8')), 'hex')`
  return db
    .selectFrom('pages as p')
    .leftJoin('page_embedding_staging as s', (join) => join.onRef('s.page_id', '=', 'p.id').on('s.version_id', '=', to))
    .select(['p.id', 'p.intent_text', 'p.title', 'p.meta_description'])
    .where('p.id', '>', afterId)
    .where(sql<boolean>`s.intent_hash IS DISTINCT FROM ${expectedHash}`)
    .orderBy('p.id')
    .limit(limit)
    .execute()
}

async function embedPageBatches(db: Kysely<Database>, embedder: Embedder, to: number, batchSize: number, progress: ReembedProgress, options: ReembedOptions): Promise<number> {
  let done = 0
  let afterId = 0
  for (;;) {
    const rows = await outstandingPages(db, embedder, to, batchSize, afterId)
    if (rows.length === 0) return done
    afterId = Number(rows[rows.length - 1]!.id)
    const texts = rows.map((r) => pageEmbeddingText(r))
    const vectors = await embedAll(embedder, texts)
    await db
      .insertInto('page_embedding_staging')
      .values(rows.map((r, i) => ({ page_id: Number(r.id), version_id: to, embedding: toPgVector(padForStorage(vectors[i]!)), intent_hash: embeddingHash(embedder.model, embedder.dimensions, texts[i]!) })))
      .onConflict((oc) => oc.columns(['page_id', 'version_id']).doUpdateSet({ embedding: (eb) => eb.ref('excluded.embedding'), intent_hash: (eb) => eb.ref('excluded.intent_hash') }))
      .execute()
    done += rows.length
    progress.pagesEmbedded += rows.length
    options.log?.info({ versionId: to, pages: progress.pagesEmbedded }, 're-embedded a batch of pages')
    await options.onBatch?.(progress)
  }
}
