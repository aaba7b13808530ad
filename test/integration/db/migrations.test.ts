// Migrations on an empty database, the constraints they promise, and the idempotent demo seed.

import t from 'tap'
import { sql } from 'kysely'
import { createMigrator, migrateToLatest, openDatabase, pendingMigrations } from '../../../src/db/database.ts'
import { seedDemoSite } from '../../../src/demo/demo-site.ts'
import { directDatabase } from '../../helper.ts'

// An empty database: the embedded one, or a fresh one on the native pass's PostgreSQL.
const handle = await openDatabase({ ...(await directDatabase(t)), dbPoolMax: 1, dbConnectTimeoutMs: 5000, dbStatementTimeoutMs: 10000 }, { error: () => {} })
t.teardown(() => handle.close())
const { db } = handle
const ALL = ['0001_initial_schema', '0002_ingest_and_versions', '0003_purge_outbox', '0004_search_console', '0005_engagement', '0006_variant_scope', '0007_experiments']

t.test('an empty database migrates to the full schema', async (t) => {
  t.same(await pendingMigrations(db), ALL)
  const result = await migrateToLatest(db)
  t.same(result.results?.map((r) => [r.migrationName, r.status]), ALL.map((name) => [name, 'Success']))
  t.same(await pendingMigrations(db), [])
  const again = await migrateToLatest(db)
  t.same(again.results, [], 'a second run applies nothing')

  const tables = await sql<{ table_name: string }>`select table_name from information_schema.tables where table_schema = 'public' and table_name not like 'kysely%' order by 1`.execute(db)
  t.same(tables.rows.map((r) => r.table_name), ['content_variants', 'embedding_versions', 'engagement_daily', 'engagement_stream_receipts', 'experiment_counts', 'experiments', 'page_embedding_staging', 'pages', 'purge_outbox', 'search_console_imports', 'search_console_rows', 'segments', 'sitemap_version'])
  const hnsw = await sql<{ indexdef: string }>`select indexdef from pg_indexes where indexname = 'pages_intent_embedding_hnsw'`.execute(db)
  t.match(hnsw.rows[0]?.indexdef, /USING hnsw \(intent_embedding vector_cosine_ops\) WITH \(m='?16'?, ef_construction='?64'?\)/)
  const column = await sql<{ t: string }>`select format_type(atttypid, atttypmod) as t from pg_attribute where attrelid = 'content_variants'::regclass and attname = 'embedding'`.execute(db)
  t.equal(column.rows[0]?.t, 'vector(1536)')
})

const basePage = { kind: 'seo' as const, title: 'T', canonical_url: 'https://www.example.test/ok', updated_at: new Date() }

t.test('constraints reject what the application must never write', async (t) => {
  const table: Array<[string, Record<string, unknown>, RegExp]> = [
    ['http canonical', { path: '/a', canonical_url: 'http://www.example.test/a' }, /pages_canonical_url_check|check constraint/],
    ['relative canonical', { path: '/b', canonical_url: '/b' }, /check constraint/],
    ['canonical with spaces', { path: '/c', canonical_url: 'https://www.example.test/a b' }, /check constraint/],
    ['crawl weight above 1', { path: '/d', crawl_weight: 1.5 }, /check constraint/],
    ['negative crawl weight', { path: '/e', crawl_weight: -0.1 }, /check constraint/],
    ['unknown kind', { path: '/f', kind: 'blog' }, /check constraint/],
    ['non-canonical path', { path: '/Upper/Case' }, /check constraint/],
    ['trailing slash', { path: '/g/' }, /check constraint/],
  ]
  for (const [name, values, error] of table) {
    await t.rejects(db.insertInto('pages').values({ ...basePage, ...values } as never).execute(), error, name)
  }
  await db.insertInto('pages').values({ ...basePage, path: '/ok' }).execute()
  await t.rejects(db.insertInto('pages').values({ ...basePage, path: '/ok' }).execute(), /duplicate key|unique/, 'path is unique')
  await db.deleteFrom('pages').execute()
})

t.test('the demo seed loads once, then leaves the database alone', async (t) => {
  const first = await seedDemoSite(db, 'https://www.example.test')
  t.equal(first.seeded, true)
  t.ok(first.pages >= 500)
  const count = async () => Number((await db.selectFrom('pages').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()).n)
  const pages = await count()
  t.equal(pages, first.pages)
  const second = await seedDemoSite(db, 'https://www.example.test')
  t.same(second, { seeded: false, pages: 0, variants: 0 })
  t.equal(await count(), pages, 'nothing added twice')
  const active = await db.selectFrom('embedding_versions').selectAll().where('active', '=', true).execute()
  t.equal(active.length, 1)
  t.equal(active[0]?.dimensions, 1536)
})

t.test('down migrations revert cleanly, and up again', async (t) => {
  await db.deleteFrom('content_variants').execute()
  for (const remaining of ALL.map((_, i) => ALL.slice(ALL.length - 1 - i))) {
    const result = await createMigrator(db).migrateDown()
    t.equal(result.error, undefined)
    t.same(await pendingMigrations(db), remaining)
  }
  await migrateToLatest(db)
  t.same(await pendingMigrations(db), [])
})

t.test('0006 moves existing variants to their landing page: by CTA, else the nearest landing page, else the vertical general', async (t) => {
  const fresh = await openDatabase({ ...(await directDatabase(t)), dbPoolMax: 1, dbConnectTimeoutMs: 5000, dbStatementTimeoutMs: 10000 }, { error: () => {} })
  t.teardown(() => fresh.close())
  const old = fresh.db
  t.equal((await createMigrator(old).migrateTo('0005_engagement')).error, undefined)
  const vector = (hot: number) => `[${Array.from({ length: 1536 }, (_, i) => (i === hot ? 1 : 0)).join(',')}]`
  const { id: version } = await old.insertInto('embedding_versions').values({ model: 'm', dimensions: 1536, active: true }).returning('id').executeTakeFirstOrThrow()
  await old.insertInto('segments').values({ slug: 'smb', description: '', utm_sources: [] }).execute()
  const page = (path: string, kind: 'landing' | 'seo', hot: number) => ({ ...basePage, path, kind, canonical_url: `https://www.example.test${path}`, intent_embedding: vector(hot), embedding_version: version })
  await old.insertInto('pages').values([page('/crm', 'landing', 1), page('/payroll', 'landing', 2), page('/payroll/guide', 'seo', 3)]).execute()
  const variant = (key: string, ctaUrl: string, hot: number) =>
    ({ variant_key: key, segment: 'smb', headline: key, cta_url: ctaUrl, embedding: vector(hot), vector_version: version, content_hash: key, features: '[]', metadata: '{}' }) as never
  await old.insertInto('content_variants').values([variant('by-cta', '/crm', 2), variant('by-vector', '/signup', 2), variant('seo-cta', '/payroll/guide', 1)]).execute()

  t.equal((await createMigrator(old).migrateToLatest()).error, undefined)
  const moved = await sql<{ variant_key: string; path: string | null; vertical: string | null }>`
    select v.variant_key, p.path, v.vertical from content_variants v left join pages p on p.id = v.page_id order by 1`.execute(old)
  t.same(moved.rows, [
    { variant_key: 'by-cta', path: '/crm', vertical: null },
    { variant_key: 'by-vector', path: '/payroll', vertical: null },
    { variant_key: 'seo-cta', path: '/crm', vertical: null },
  ], 'a CTA to a landing page decides; otherwise the nearest landing page (an SEO page never)')
  await t.rejects(sql`update content_variants set vertical = 'crm'`.execute(old), /content_variants_one_scope/, 'never both scopes')
  await t.rejects(sql`update content_variants set page_id = null`.execute(old), /content_variants_one_scope/, 'never neither')

  // No landing page at all: the variants stay, shared by the vertical general.
  t.equal((await createMigrator(old).migrateTo('0005_engagement')).error, undefined, '0006 reverts')
  await old.deleteFrom('content_variants').execute()
  await old.deleteFrom('pages').execute()
  await old.insertInto('content_variants').values(variant('orphan', '/x', 1)).execute()
  t.equal((await createMigrator(old).migrateToLatest()).error, undefined)
  t.same((await sql<{ vertical: string }>`select vertical from content_variants`.execute(old)).rows, [{ vertical: 'general' }], 'nothing lost')
})
