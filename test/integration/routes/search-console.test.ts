// Search Console import through the admin API: validation (400, nothing written), weights by canonical
// path, decay of absent pages, history, one set-based UPDATE, eviction, and s-maxage following weight.

import t from 'tap'
import { sql } from 'kysely'
import { buildTestApp } from '../../helper.ts'
import { startFakeCdn } from '../../support/fake-cdn.ts'
import { sharedTtlForPage } from '../../../src/http/cache-policy.ts'
import { crawlWeightFromSearch, decayedCrawlWeight } from '../../../src/search-console/weights.ts'

const TOKEN = 'test-admin-token-0123456789'
const auth = { authorization: `Bearer ${TOKEN}` }
const BASE = 'https://www.example.test'
const row = (path: string, clicks: number, impressions: number, host = BASE) => ({ keys: [`${host}${path}`], clicks, impressions, ctr: impressions === 0 ? 0 : clicks / impressions, position: 3.5 })
/** crawl_weight is a PostgreSQL real: compare at its precision. */
const r6 = (x: number) => Math.round(x * 1e6) / 1e6
const sMaxAge = (cacheControl: string | string[] | undefined) => Number(/s-maxage=(\d+)/.exec(String(cacheControl))?.[1])

t.test('Search Console import', async (t) => {
  const cdn = await startFakeCdn()
  t.teardown(() => cdn.close())
  const app = await buildTestApp(t, { ADMIN_TOKEN: TOKEN, SEED_DEMO: 'false', PURGE_TARGETS: 'varnish', VARNISH_PURGE_URL: cdn.url, CRAWL_WEIGHT_DECAY: '0.5', CRAWL_WEIGHT_FLOOR: '0.05' })
  const { db } = app.database
  const post = (url: string, payload: object) => app.inject({ method: 'POST', url, headers: auth, payload })
  t.equal((await post('/admin/segments', { segments: [{ slug: 'general', is_default: true }] })).statusCode, 200)
  const pages = [
    { path: '/docs/a', kind: 'seo', title: 'A' },
    { path: '/docs/b', kind: 'seo', title: 'B' },
    { path: '/docs/c', kind: 'seo', title: 'C', crawl_weight: 0.8 },
    { path: '/docs/d', kind: 'seo', title: 'D', crawl_weight: 0.02 },
  ]
  t.equal((await post('/admin/pages', { pages })).statusCode, 200)
  const weight = async (path: string) => Number((await db.selectFrom('pages').select('crawl_weight').where('path', '=', path).executeTakeFirstOrThrow()).crawl_weight)
  const version = async () => Number((await db.selectFrom('sitemap_version').select('version').executeTakeFirstOrThrow()).version)
  const imports = async () => (await db.selectFrom('search_console_imports').selectAll().orderBy('id').execute())

  t.test('a malformed import is 400 naming row and field, and writes nothing', async (t) => {
    const res = await post('/admin/search-console', {
      startDate: '2026-10-31',
      endDate: '2026-10-01',
      rows: [row('/docs/a', 1, 10), { keys: ['/docs/b'], clicks: 1, impressions: -4, ctr: 0.1, position: 2 }, { keys: [`${BASE}/docs/c`], clicks: 'x', impressions: 1, ctr: 0, position: 1 }],
    })
    t.equal(res.statusCode, 400)
    const body = res.json()
    t.equal(body.message, '4 problem(s) in the Search Console batch; nothing was written')
    t.same(body.details, [
      { record: -1, field: 'endDate', message: 'must not be before startDate' },
      { record: 1, field: 'keys', message: '"/docs/b" is not an absolute http(s) URL' },
      { record: 1, field: 'impressions', message: 'must be a number >= 0, got -4' },
      { record: 2, field: 'clicks', message: 'must be a number >= 0, got "x"' },
    ])
    const empty = await post('/admin/search-console', { startDate: '2026-10-01', endDate: '2026-10-31', rows: [] })
    t.equal(empty.statusCode, 400)
    t.match(empty.json().details, [{ field: 'rows', message: /at least one row/ }])
    const missing = await post('/admin/search-console', { endDate: '2026-10-31', rows: [] })
    t.equal(missing.statusCode, 400)
    t.match(missing.json().message, /startDate/)
    t.same(await imports(), [])
    t.equal(await weight('/docs/c'), 0.8)
    t.equal((await app.inject({ method: 'POST', url: '/admin/search-console', payload: { startDate: '2026-10-01', endDate: '2026-10-31', rows: [row('/docs/a', 1, 2)] } })).statusCode, 401)
  })

  t.test('an import whose rows match no page is 400 naming rows, and writes nothing (no decay of every page)', async (t) => {
    const weightsBefore = await db.selectFrom('pages').select(['path', 'crawl_weight']).orderBy('path').execute()
    const outboxBefore = await db.selectFrom('purge_outbox').select('id').orderBy('id').execute() // the ingest's own purges
    const res = await post('/admin/search-console', {
      startDate: '2026-10-01',
      endDate: '2026-10-31',
      softPurge: true,
      rows: [row('/elsewhere/x', 5, 10, 'https://other.example'), row('/elsewhere/y', 1, 10), { keys: [`${BASE}/%C3%9Cber`], clicks: 1, impressions: 1, ctr: 1, position: 1 }],
    })
    t.equal(res.statusCode, 400, res.body)
    const body = res.json()
    t.equal(body.message, '1 problem(s) in the Search Console batch; nothing was written')
    t.match(body.details, [{ record: -1, field: 'rows', message: /no row's URL matched a page/ }])
    t.match(body.details[0].message, 'https://other.example/elsewhere/x')
    t.match(body.details[0].message, `${BASE}/%C3%9Cber`)
    t.match(body.details[0].message, /under PUBLIC_BASE_URL \(https:\/\/www\.example\.test\)/)
    t.same(await imports(), [], 'no import row')
    t.same(await db.selectFrom('search_console_rows').select('page_id').execute(), [], 'no history')
    t.same(await db.selectFrom('pages').select(['path', 'crawl_weight']).orderBy('path').execute(), weightsBefore, 'no weight changed: /docs/c (0.8) did not decay')
    t.same(await db.selectFrom('purge_outbox').select('id').orderBy('id').execute(), outboxBefore, 'no purge queued')
  })

  t.test('weights by canonical path, decay, unknown URLs counted, history, eviction, s-maxage follows weight', async (t) => {
    const before = await app.inject({ url: '/docs/a' })
    t.equal(before.statusCode, 200)
    t.equal(sMaxAge(before.headers['cache-control']), sharedTtlForPage('/docs/a', 0))
    t.equal((await app.inject({ url: '/docs/a' })).headers['x-cache'], 'HIT-L1')
    const cBefore = await app.inject({ url: '/docs/c' })
    t.equal(sMaxAge(cBefore.headers['cache-control']), sharedTtlForPage('/docs/c', await weight('/docs/c')))
    const versionBefore = await version()

    const res = await post('/admin/search-console', {
      startDate: '2026-10-01',
      endDate: '2026-10-31',
      responseAggregationType: 'byPage',
      rows: [row('/docs/a', 60, 600), row('/docs/a/', 40, 400, 'http://example.test'), row('/docs/b', 0, 50), row('/nope', 5, 10), { keys: [`${BASE}/%C3%9Cber`], clicks: 1, impressions: 1, ctr: 1, position: 1 }],
    })
    t.equal(res.statusCode, 200, res.body)
    t.equal(res.headers['cache-control'], 'no-store')
    const result = res.json()
    t.match(result, { received: 5, matched: 2, unknown: 2, changed: 1, decayed: 1, queued: 0 })
    t.same(result.unknownSample, [`${BASE}/nope`, `${BASE}/%C3%9Cber`])
    t.ok(result.evicted >= 2, 'the cached renderings of /docs/a and /docs/c were dropped')
    t.equal(await version(), versionBefore + 2, 'two statements wrote pages: the batch UPDATE and the decay UPDATE, whatever the row count')

    const expectedA = crawlWeightFromSearch(100, 1000)
    t.equal(r6(await weight('/docs/a')), r6(expectedA), 'two URLs of one path add up: 100 clicks / 1000 impressions')
    t.equal(await weight('/docs/b'), 0)
    t.equal(r6(await weight('/docs/c')), r6(decayedCrawlWeight(0.8, 0.5, 0.05)), 'absent page decays by the same rule as the pure function')
    t.equal(r6(await weight('/docs/d')), 0.02, 'under the floor: unchanged')

    const [imported] = await imports()
    t.match(imported, { source: 'api', rows_received: 5, pages_matched: 2, urls_unknown: 2, pages_changed: 1, pages_decayed: 1 })
    t.equal(imported!.start_date.toISOString().slice(0, 10), '2026-10-01')
    const history = await sql<{ path: string; in_import: boolean; clicks: number; impressions: number; ctr: number | null; position: number | null; weight_before: number; weight_after: number }>`
      SELECT p.path, r.in_import, r.clicks, r.impressions, r.ctr, r.position, r.weight_before, r.weight_after
      FROM search_console_rows r JOIN pages p ON p.id = r.page_id WHERE r.import_id = ${imported!.id} ORDER BY p.path`.execute(db)
    t.same(history.rows.map((h) => ({ ...h, weight_before: r6(h.weight_before), weight_after: r6(h.weight_after) })), [
      { path: '/docs/a', in_import: true, clicks: 100, impressions: 1000, ctr: 0.1, position: 3.5, weight_before: 0, weight_after: r6(expectedA) },
      { path: '/docs/b', in_import: true, clicks: 0, impressions: 50, ctr: 0, position: 3.5, weight_before: 0, weight_after: 0 },
      { path: '/docs/c', in_import: false, clicks: 0, impressions: 0, ctr: null, position: null, weight_before: 0.8, weight_after: 0.4 },
    ])

    const after = await app.inject({ url: '/docs/a' })
    t.equal(after.headers['x-cache'], 'MISS', 'rendered again after the import')
    t.equal(sMaxAge(after.headers['cache-control']), sharedTtlForPage('/docs/a', await weight('/docs/a')))
    t.ok(sMaxAge(after.headers['cache-control']) > sMaxAge(before.headers['cache-control']) + 5000, 'a heavier page is kept longer by the CDN')
    const cAfter = await app.inject({ url: '/docs/c' })
    t.equal(sMaxAge(cAfter.headers['cache-control']), sharedTtlForPage('/docs/c', 0.4))
  })

  t.test('softPurge queues soft CDN purges of the changed pages and the sitemaps, in the same transaction', async (t) => {
    // Ingesting the pages above queued purges of its own: only the rows after them are the import's.
    const { last } = await db.selectFrom('purge_outbox').select((eb) => eb.fn.max('id').as('last')).executeTakeFirstOrThrow()
    const res = await post('/admin/search-console', { startDate: '2026-11-01', endDate: '2026-11-07', softPurge: true, source: 'json', rows: [row('/docs/b', 30, 100)] })
    t.equal(res.statusCode, 200, res.body)
    t.match(res.json(), { matched: 1, changed: 1, decayed: 2, queued: 2 })
    const outbox = await db.selectFrom('purge_outbox').select(['target', 'paths', 'tags', 'soft']).where('id', '>', last ?? 0).orderBy('id').execute()
    t.same(outbox, [
      { target: 'varnish', paths: ['/docs/b', '/docs/a', '/docs/c'], tags: [], soft: true },
      { target: 'varnish', paths: [], tags: ['t-sitemap'], soft: true },
    ])
    t.equal((await imports())[1]!.source, 'json')
  })

  t.test('a large batch is still two statements on pages', async (t) => {
    // Written with SQL: the embedder has nothing to do with weights, and it would take seconds.
    await sql`INSERT INTO pages (path, kind, title, canonical_url) SELECT '/bulk/p-' || i, 'seo', 'P ' || i, ${BASE} || '/bulk/p-' || i FROM generate_series(0, 599) i`.execute(db)
    const many = Array.from({ length: 600 }, (_, i) => ({ path: `/bulk/p-${i}` }))
    const v = await version()
    const res = await post('/admin/search-console', { startDate: '2026-11-08', endDate: '2026-11-14', rows: many.map((p, i) => row(p.path, i, 1000)) })
    t.equal(res.statusCode, 200, res.body)
    t.match(res.json(), { matched: 600, changed: 599, unknown: 0 })
    t.equal(await version(), v + 2)
    t.equal(r6(await weight('/bulk/p-599')), r6(crawlWeightFromSearch(599, 1000)))
  })
  // Every changed row is reported, written to history and evicted, whatever the batch size. (An import
  // of 4 changed pages once answered `matched: 2`: its locking read skipped the rows its own UPDATE had
  // changed, so those pages changed weight without history or eviction and were counted as `unknown`.)
  t.test('an import changing N pages reports, records and evicts all N', async (t) => {
    const INITIAL = 0.125 // exact as a real
    /** GET every path, a few at a time. */
    const getAll = async (paths: readonly string[]) => {
      const responses = []
      for (let i = 0; i < paths.length; i += 8) responses.push(...(await Promise.all(paths.slice(i, i + 8).map((url) => app.inject({ url })))))
      return responses
    }

    for (const n of [2, 3, 4, 10, 1000]) {
      t.test(`${n} changed pages`, async (t) => {
        // Fresh pages per case (earlier imports decay earlier pages, never these), written with SQL like
        // the large batch above: ingesting would embed them, which has nothing to do with weights.
        await sql`INSERT INTO pages (path, kind, title, canonical_url, crawl_weight)
          SELECT '/n' || ${n}::int || '/p-' || i, 'seo', 'P ' || i, ${BASE} || '/n' || ${n}::int || '/p-' || i, ${INITIAL}::real FROM generate_series(0, ${n - 1}::int) i`.execute(db)
        const paths = Array.from({ length: n }, (_, i) => `/n${n}/p-${i}`)
        // The pages requested before and after the import: all of them, but every 10th (and the last) of
        // the 1,000, whose renders would otherwise take most of the suite's time here (~5 ms each on the
        // embedded database). The database checks below cover every page.
        const probed = n <= 10 ? paths : paths.filter((_, i) => i % 10 === 0 || i === n - 1)
        const first = await getAll(probed)
        t.same(first.flatMap((r, i) => (r.statusCode === 200 && sMaxAge(r.headers['cache-control']) === sharedTtlForPage(probed[i]!, INITIAL) ? [] : [probed[i]])), [], 'each page renders with the s-maxage of its old weight')
        t.same((await getAll(probed)).map((r) => r.headers['x-cache']), probed.map(() => 'HIT-L1'), 'and is cached before the import')

        // Every new weight differs from INITIAL, and most from each other.
        const clicks = paths.map((_, i) => 300 + (i % 500))
        const expected = new Map(paths.map((path, i) => [path, crawlWeightFromSearch(clicks[i]!, 1000)]))
        const res = await post('/admin/search-console', { startDate: '2026-12-01', endDate: '2026-12-07', rows: paths.map((path, i) => row(path, clicks[i]!, 1000)) })
        t.equal(res.statusCode, 200, res.body)
        const result = res.json()
        t.match(result, { received: n, matched: n, unknown: 0, changed: n })
        t.same(result.unknownSample, [])
        t.ok(result.evicted >= probed.length, `evicted ${result.evicted} cached responses`)

        const imported = await db.selectFrom('search_console_imports').selectAll().where('id', '=', result.importId).executeTakeFirstOrThrow()
        t.match(imported, { rows_received: n, pages_matched: n, urls_unknown: 0, pages_changed: n })
        const history = await sql<{ path: string; weight_before: number; weight_after: number }>`
          SELECT p.path, r.weight_before, r.weight_after FROM search_console_rows r JOIN pages p ON p.id = r.page_id
          WHERE r.import_id = ${result.importId} AND r.in_import`.execute(db)
        t.equal(history.rows.length, n, 'one history row per imported page')
        t.same(history.rows.filter((h) => !expected.has(h.path) || r6(h.weight_before) !== INITIAL || r6(h.weight_after) !== r6(expected.get(h.path)!)), [], 'weight_before is the weight replaced, weight_after the new one')
        const weights = await db.selectFrom('pages').select(['path', 'crawl_weight']).where('path', 'in', paths).execute()
        t.same(weights.filter((w) => r6(w.crawl_weight) !== r6(expected.get(w.path)!)), [], 'every page has its new weight')

        const next = await getAll(probed)
        const stale = next.flatMap((r, i) => (r.headers['x-cache'] === 'MISS' && sMaxAge(r.headers['cache-control']) === sharedTtlForPage(probed[i]!, expected.get(probed[i]!)!) ? [] : [`${probed[i]}: ${String(r.headers['x-cache'])} ${String(r.headers['cache-control'])}`]))
        t.same(stale, [], 'each page renders again, with the s-maxage of its new weight')
      })
    }
  })
})
