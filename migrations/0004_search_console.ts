// Search Console imports with their per-page history, the sitemap ordering index, and a version of
// everything that shapes the sitemaps (bumped by a statement trigger on pages). Frozen once landed.

import { type Kysely, sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('search_console_imports')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('source', 'text', (c) => c.notNull().check(sql`source in ('api', 'json', 'csv', 'live')`))
    .addColumn('start_date', 'date', (c) => c.notNull())
    .addColumn('end_date', 'date', (c) => c.notNull())
    .addColumn('rows_received', 'integer', (c) => c.notNull())
    .addColumn('pages_matched', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('urls_unknown', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('pages_changed', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('pages_decayed', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addCheckConstraint('search_console_imports_dates', sql`start_date <= end_date`)
    .execute()

  // One row per page an import touched: the page's metrics in the import (in_import) or, for a page the
  // import did not mention, its decay (zero clicks and impressions, no ctr or position).
  await db.schema
    .createTable('search_console_rows')
    .addColumn('import_id', 'bigint', (c) => c.notNull().references('search_console_imports.id').onDelete('cascade'))
    .addColumn('page_id', 'bigint', (c) => c.notNull().references('pages.id').onDelete('cascade'))
    .addColumn('in_import', 'boolean', (c) => c.notNull())
    .addColumn('clicks', 'double precision', (c) => c.notNull())
    .addColumn('impressions', 'double precision', (c) => c.notNull())
    .addColumn('ctr', 'double precision')
    .addColumn('position', 'double precision')
    .addColumn('weight_before', 'real', (c) => c.notNull())
    .addColumn('weight_after', 'real', (c) => c.notNull())
    .addPrimaryKeyConstraint('search_console_rows_pk', ['import_id', 'page_id'])
    .execute()
  await db.schema.createIndex('search_console_rows_page').on('search_console_rows').columns(['page_id', 'import_id']).execute()

  // Sitemap order (weight descending, then id) as ONE ascending key, so a keyset condition is a single
  // index range: (-crawl_weight, id) > (last key). kysely's index builder cannot express an expression
  // column with a partial predicate.
  await sql`CREATE INDEX pages_sitemap_order ON pages ((-crawl_weight), id) WHERE status = 'published'`.execute(db)

  // The sitemap version: any write to pages bumps it in the writer's transaction, so a reader that sees
  // version N sees the data of version N. Shard boundaries are cached per version.
  await db.schema
    .createTable('sitemap_version')
    .addColumn('singleton', 'boolean', (c) => c.primaryKey().defaultTo(true).check(sql`singleton`))
    .addColumn('version', 'bigint', (c) => c.notNull().defaultTo(1))
    .addColumn('changed_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .execute()
  await sql`INSERT INTO sitemap_version (singleton) VALUES (true)`.execute(db)
  await sql`CREATE FUNCTION bump_sitemap_version() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      UPDATE sitemap_version SET version = version + 1, changed_at = now();
      RETURN NULL;
    END $$`.execute(db)
  await sql`CREATE TRIGGER pages_bump_sitemap_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pages
    FOR EACH STATEMENT EXECUTE FUNCTION bump_sitemap_version()`.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`DROP TRIGGER pages_bump_sitemap_version ON pages`.execute(db)
  await sql`DROP FUNCTION bump_sitemap_version()`.execute(db)
  await db.schema.dropTable('sitemap_version').execute()
  await sql`DROP INDEX pages_sitemap_order`.execute(db)
  await db.schema.dropTable('search_console_rows').execute()
  await db.schema.dropTable('search_console_imports').execute()
}
