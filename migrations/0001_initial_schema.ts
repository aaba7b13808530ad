// Frozen once landed: a schema change is a new migration file, never an edit of this one.

import { type Kysely, sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await sql`CREATE EXTENSION IF NOT EXISTS vector`.execute(db)

  await db.schema
    .createTable('embedding_versions')
    .addColumn('id', 'serial', (c) => c.primaryKey())
    .addColumn('model', 'text', (c) => c.notNull())
    .addColumn('dimensions', 'integer', (c) => c.notNull().check(sql`dimensions between 1 and 16000`))
    .addColumn('active', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute()
  // At most one active version: serving never mixes vectors from two models.
  await sql`CREATE UNIQUE INDEX embedding_versions_one_active ON embedding_versions (active) WHERE active`.execute(db)

  await db.schema
    .createTable('segments')
    .addColumn('slug', 'text', (c) => c.primaryKey().check(sql`slug ~ '^[a-z0-9][a-z0-9_-]{0,31}$'`))
    .addColumn('description', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('utm_sources', sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'::text[]`))
    .addColumn('is_default', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute()
  await sql`CREATE UNIQUE INDEX segments_one_default ON segments (is_default) WHERE is_default`.execute(db)

  await db.schema
    .createTable('pages')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('path', 'text', (c) =>
      c.notNull().unique().check(sql`path ~ '^/([a-z0-9._~-]+(/[a-z0-9._~-]+)*)?$' AND length(path) <= 1024`),
    )
    .addColumn('kind', 'text', (c) => c.notNull().check(sql`kind in ('landing', 'seo')`))
    .addColumn('title', 'text', (c) => c.notNull().check(sql`length(title) between 1 and 300`))
    .addColumn('meta_description', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('canonical_url', 'text', (c) => c.notNull().check(sql`canonical_url ~ '^https://[^/?#[:space:]]+(/[^[:space:]]*)?$'`))
    .addColumn('body_html', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('intent_text', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('intent_embedding', sql`vector(1536)`)
    .addColumn('embedding_version', 'integer', (c) => c.references('embedding_versions.id'))
    .addColumn('vertical', 'text', (c) => c.notNull().defaultTo('general'))
    .addColumn('template', 'text', (c) => c.notNull().defaultTo('default'))
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('published').check(sql`status in ('draft', 'published', 'archived')`))
    .addColumn('crawl_weight', 'real', (c) => c.notNull().defaultTo(0).check(sql`crawl_weight >= 0 AND crawl_weight <= 1`))
    .addColumn('last_indexed_at', 'timestamptz')
    .addColumn('last_analyzed_at', 'timestamptz')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute()
  await db.schema.createIndex('pages_vertical_weight').on('pages').columns(['vertical', 'crawl_weight desc']).execute()
  await db.schema.createIndex('pages_weight_id').on('pages').columns(['crawl_weight desc', 'id']).execute()

  await db.schema
    .createTable('content_variants')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('variant_key', 'text', (c) => c.notNull().unique())
    .addColumn('segment', 'text', (c) => c.notNull().references('segments.slug').onUpdate('cascade'))
    .addColumn('headline', 'text', (c) => c.notNull())
    .addColumn('subhead', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('features', 'jsonb', (c) => c.notNull().defaultTo(sql`'[]'::jsonb`))
    .addColumn('cta_label', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('cta_url', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('social_proof', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('embedding', sql`vector(1536)`, (c) => c.notNull())
    .addColumn('vector_version', 'integer', (c) => c.notNull().references('embedding_versions.id'))
    .addColumn('metadata', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('content_hash', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute()
  await db.schema.createIndex('content_variants_segment_version').on('content_variants').columns(['segment', 'vector_version']).execute()
  // kysely's index builder cannot express an operator class with storage parameters.
  await sql`CREATE INDEX content_variants_embedding_hnsw ON content_variants
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)`.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('content_variants').execute()
  await db.schema.dropTable('pages').execute()
  await db.schema.dropTable('segments').execute()
  await db.schema.dropTable('embedding_versions').execute()
}
