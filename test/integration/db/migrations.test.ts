// Migrations on an empty database, the constraints they promise, and the idempotent demo seed.

import t from 'tap'
import { sql } from 'kysely'
import { createMigrator, migrateToLatest, openDatabase, pendingMigrations } from '../../../src/db/database.ts'
import { seedDemoSite } from '../../../src/demo/demo-site.ts'

const handle = await openDatabase({ databaseUrl: undefined, dataDir: 'memory://', dbPoolMax: 1, dbConnectTimeoutMs: 5000, dbStatementTimeoutMs: 10000 }, { error: () => {} })
t.teardown(() => handle.close())
const { db } = handle

t.test('an empty database migrates to the full schema', async (t) => {
  t.same(await pendingMigrations(db), ['0001_initial_schema', '0002_ingest_and_versions', '0003_purge_outbox', '0004_search_console', '0005_engagement'])
  const result = await migrateToLatest(db)
  t.same(result.results?.map((r) => [r.migrationName, r.status]), [['0001_initial_schema', 'Success'], ['0002_ingest_and_versions', 'Success'], ['0003_purge_outbox', 'Success'], ['0004_search_console', 'Success'], ['0005_engagement', 'Success']])
  t.same(await pendingMigrations(db), [])
  const again = await migrateToLatest(db)
  t.same(again.results, [], 'a second run applies nothing')

  const tables = await sql<{ table_name: string }>`select table_name from information_schema.tables where table_schema = 'public' and table_name not like 'kysely%' order by 1`.execute(db)
  t.same(tables.rows.map((r) => r.table_name), ['content_variants', 'embedding_versions', 'engagement_daily', 'engagement_stream_receipts', 'page_embedding_staging', 'pages', 'purge_outbox', 'search_console_imports', 'search_console_rows', 'segments', 'sitemap_version'])
  const hnsw = await sql<{ indexdef: string }>`select indexdef from pg_indexes where indexname = 'content_variants_embedding_hnsw'`.execute(db)
  t.match(hnsw.rows[0]?.indexdef, /USING hnsw \(embedding vector_cosine_ops\) WITH \(m='?16'?, ef_construction='?64'?\)/)
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
  const all = ['0001_initial_schema', '0002_ingest_and_versions', '0003_purge_outbox', '0004_search_console', '0005_engagement']
  for (const remaining of [all.slice(4), all.slice(3), all.slice(2), all.slice(1), all]) {
    const result = await createMigrator(db).migrateDown()
    t.equal(result.error, undefined)
    t.same(await pendingMigrations(db), remaining)
  }
  await migrateToLatest(db)
  t.same(await pendingMigrations(db), [])
})
