// Ingest and re-embedding: variants are unique per (key, embedding version) so a re-embed can write the
// new version beside the serving one; page vectors for a version being built wait in a staging table;
// pages keep the hash of the text their vector was computed from; related pages use an HNSW index.

import { type Kysely, sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await sql`ALTER TABLE content_variants DROP CONSTRAINT content_variants_variant_key_key`.execute(db)
  await db.schema.alterTable('content_variants').addUniqueConstraint('content_variants_key_version', ['variant_key', 'vector_version']).execute()

  // The text a variant's vector was computed from: a re-embed with another model needs it again.
  await db.schema.alterTable('content_variants').addColumn('embedding_text', 'text', (c) => c.notNull().defaultTo('')).execute()
  await db.schema.alterTable('pages').addColumn('intent_hash', 'text').execute()
  // kysely's index builder cannot express an operator class with storage parameters.
  await sql`CREATE INDEX pages_intent_embedding_hnsw ON pages
    USING hnsw (intent_embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)`.execute(db)

  await db.schema
    .createTable('page_embedding_staging')
    .addColumn('page_id', 'bigint', (c) => c.notNull().references('pages.id').onDelete('cascade'))
    .addColumn('version_id', 'integer', (c) => c.notNull().references('embedding_versions.id').onDelete('cascade'))
    .addColumn('embedding', sql`vector(1536)`, (c) => c.notNull())
    .addColumn('intent_hash', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('page_embedding_staging_pk', ['page_id', 'version_id'])
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('page_embedding_staging').execute()
  await sql`DROP INDEX pages_intent_embedding_hnsw`.execute(db)
  await db.schema.alterTable('pages').dropColumn('intent_hash').execute()
  await db.schema.alterTable('content_variants').dropColumn('embedding_text').execute()
  await db.schema.alterTable('content_variants').dropConstraint('content_variants_key_version').execute()
  await db.schema.alterTable('content_variants').addUniqueConstraint('content_variants_variant_key_key', ['variant_key']).execute()
}
