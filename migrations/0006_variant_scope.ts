// A variant belongs to one landing page (page_id) or, for copy shared by a product line, to a vertical:
// exactly one of the two. Before this, a variant had only a segment, so a page rendered the nearest
// variant of its segment from ANY product (/scheduling showed the help desk's headline). Existing rows
// move to the landing page their CTA points at (the demo's variants link to their own page), else to
// the landing page nearest by embedding, else (no landing page to put them on) to the vertical
// `general`. The scope is a few rows, so the nearest-variant query is an exact scan of them: the HNSW
// index over every variant (and its ef_search of 1000) goes. Frozen once landed.

import { type Kysely, sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable('content_variants')
    .addColumn('page_id', 'bigint', (c) => c.references('pages.id').onDelete('cascade'))
    .addColumn('vertical', 'text')
    .execute()

  await sql`
    UPDATE content_variants v SET page_id = p.id
    FROM pages p
    WHERE p.kind = 'landing' AND p.path = v.cta_url`.execute(db)
  await sql`
    UPDATE content_variants v SET page_id = (
      SELECT p.id FROM pages p
      WHERE p.kind = 'landing' AND p.embedding_version = v.vector_version AND p.intent_embedding IS NOT NULL
      ORDER BY p.intent_embedding <=> v.embedding, p.id
      LIMIT 1)
    WHERE v.page_id IS NULL`.execute(db)
  await sql`UPDATE content_variants SET vertical = 'general' WHERE page_id IS NULL`.execute(db)

  await db.schema
    .alterTable('content_variants')
    .addCheckConstraint('content_variants_one_scope', sql`(page_id IS NULL) <> (vertical IS NULL)`)
    .execute()
  await db.schema
    .alterTable('content_variants')
    .addCheckConstraint('content_variants_vertical_slug', sql`vertical ~ '^[a-z0-9][a-z0-9_-]{0,63}$'`)
    .execute()
  // The render path's lookups: a page's own variants of a segment, then its vertical's.
  await db.schema.createIndex('content_variants_page_scope').on('content_variants').columns(['page_id', 'segment', 'vector_version']).where(sql.ref('page_id'), 'is not', null).execute()
  await db.schema.createIndex('content_variants_vertical_scope').on('content_variants').columns(['vertical', 'segment', 'vector_version']).where(sql.ref('vertical'), 'is not', null).execute()
  await sql`DROP INDEX content_variants_embedding_hnsw`.execute(db)
  await sql`DROP INDEX content_variants_segment_version`.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex('content_variants_segment_version').on('content_variants').columns(['segment', 'vector_version']).execute()
  await sql`CREATE INDEX content_variants_embedding_hnsw ON content_variants
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)`.execute(db)
  await db.schema.dropIndex('content_variants_vertical_scope').execute()
  await db.schema.dropIndex('content_variants_page_scope').execute()
  await db.schema.alterTable('content_variants').dropConstraint('content_variants_vertical_slug').execute()
  await db.schema.alterTable('content_variants').dropConstraint('content_variants_one_scope').execute()
  await db.schema.alterTable('content_variants').dropColumn('vertical').dropColumn('page_id').execute()
}
