// Sitemaps and robots.txt: the index and its shards valid against the sitemaps.org XSDs (xmllint),
// crawl-weight order with ties by id, published pages only, threshold, keyset batches, ETag/304,
// 404s, caching headers, and these routes winning over the page catch-all.

import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { sql } from 'kysely'
import { buildTestApp } from '../../helper.ts'
import { EMPTY_URLSET, SitemapService, xmlLoc } from '../../../src/sitemaps/sitemap-service.ts'

const BASE = 'https://www.example.test'
const URLSET_XSD = path.join(path.dirname(createRequire(import.meta.url).resolve('sitemap-schema/package.json')), 'schema', 'sitemap.xsd')
const SITEINDEX_XSD = fileURLToPath(new URL('../../fixtures/siteindex.xsd', import.meta.url))
const work = mkdtempSync(path.join(tmpdir(), 'vo-sitemaps-'))
t.teardown(() => rmSync(work, { recursive: true, force: true }))

let files = 0
function xmllint(xml: string, schema: string): Promise<{ code: number; stderr: string }> {
  const file = path.join(work, `doc-${files++}.xml`)
  writeFileSync(file, xml)
  return new Promise((resolve) => {
    execFile('xmllint', ['--noout', '--schema', schema, file], (err, _stdout, stderr) => resolve({ code: err === null ? 0 : Number((err as { code?: number }).code ?? 1), stderr }))
  })
}

const locs = (xml: string) => [...xml.matchAll(/<loc>([^<]*)<\/loc>/g)].map((m) => m[1]!)
const W3C_DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/

async function collect(stream: NodeJS.ReadableStream): Promise<string> {
  let out = ''
  for await (const chunk of stream) out += String(chunk)
  return out
}

t.test('<loc> text is URL-escaped beyond ASCII and entity-escaped', async (t) => {
  t.equal(xmlLoc(`https://x.test/b\u00fccher?a=1&b='2'<>"`), 'https://x.test/b%C3%BCcher?a=1&amp;b=&apos;2&apos;&lt;&gt;&quot;')
  t.equal(xmlLoc('https://x.test/plain'), 'https://x.test/plain')
})

t.test('sitemaps and robots.txt', async (t) => {
  const app = await buildTestApp(t, { SEED_DEMO: 'false', REDIS_URL: 'off', SITEMAP_SHARD_SIZE: '3', SITEMAP_TTL_SECONDS: '7200', ROBOTS_DISALLOW: '/admin/,/search' })
  const { db } = app.database
  // Weights with ties (ordered by id within a tie), a draft, and an archived page.
  const rows: Array<[string, number, string]> = [
    ['/w/low', 0.1, 'published'],
    ['/w/top', 0.9, 'published'],
    ['/w/tie-a', 0.5, 'published'],
    ['/w/tie-b', 0.5, 'published'],
    ['/w/draft', 1, 'draft'],
    ['/w/mid', 0.7, 'published'],
    ['/w/zero', 0, 'published'],
    ['/w/gone', 0.95, 'archived'],
    ['/w/tie-c', 0.5, 'published'],
  ]
  for (const [p, w, status] of rows) {
    await sql`INSERT INTO pages (path, kind, title, canonical_url, crawl_weight, status, updated_at) VALUES (${p}, 'seo', ${p}, ${BASE + p + '?a=1&b=2'}, ${w}, ${status}, '2026-05-04T03:02:01.500Z')`.execute(db)
  }
  const expectedOrder = ['/w/top', '/w/mid', '/w/tie-a', '/w/tie-b', '/w/tie-c', '/w/low', '/w/zero'].map((p) => `${BASE}${p}?a=1&amp;b=2`)

  t.test('the index lists the shards; each shard is valid and the whole is in crawl-weight order', async (t) => {
    const index = await app.inject({ url: '/sitemap.xml' })
    t.equal(index.statusCode, 200)
    t.equal(index.headers['content-type'], 'application/xml; charset=utf-8')
    t.match(index.headers['cache-control'], /^public, max-age=60, s-maxage=7200, stale-while-revalidate=600, stale-if-error=86400$/)
    t.equal(index.headers['cdn-cache-control'], 'max-age=7200, stale-while-revalidate=600, stale-if-error=86400')
    t.equal(index.headers['surrogate-key'], 't-sitemap')
    t.match(index.headers.etag, /^W\/"sm-\d+-index-[a-z0-9]+"$/)
    t.ok(index.headers['last-modified'])
    t.same(locs(index.body), [`${BASE}/sitemaps/0.xml`, `${BASE}/sitemaps/1.xml`, `${BASE}/sitemaps/2.xml`])
    t.match(index.body, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<sitemapindex xmlns="http:\/\/www.sitemaps.org\/schemas\/sitemap\/0.9">/)
    const indexCheck = await xmllint(index.body, SITEINDEX_XSD)
    t.equal(indexCheck.code, 0, indexCheck.stderr)

    const all: string[] = []
    for (let shard = 0; shard < 3; shard++) {
      const res = await app.inject({ url: `/sitemaps/${shard}.xml` })
      t.equal(res.statusCode, 200)
      t.equal(res.headers['content-type'], 'application/xml; charset=utf-8')
      t.match(res.headers['cache-control'], /s-maxage=7200/)
      const check = await xmllint(res.body, URLSET_XSD)
      t.equal(check.code, 0, check.stderr)
      t.ok(locs(res.body).length <= 3, 'at most SITEMAP_SHARD_SIZE URLs')
      for (const m of res.body.matchAll(/<lastmod>([^<]*)<\/lastmod>/g)) t.match(m[1], W3C_DATETIME)
      all.push(...locs(res.body))
    }
    t.same(all, expectedOrder, 'weight descending, ties by id, published only')
    t.match((await app.inject({ url: '/sitemaps/0.xml' })).body, /<lastmod>2026-05-04T03:02:01.500Z<\/lastmod>/, 'lastmod is the row updated_at')
  })

  t.test('404 for shards out of range and names that are not shards', async (t) => {
    for (const url of ['/sitemaps/3.xml', '/sitemaps/99999999.xml', '/sitemaps/01.xml', '/sitemaps/a.xml', '/sitemaps/0.xml.gz']) {
      const res = await app.inject({ url })
      t.equal(res.statusCode, 404, url)
      t.match(res.headers['cache-control'], /s-maxage=60/, url)
    }
  })

  t.test('ETag and If-None-Match: 304 until the pages change', async (t) => {
    const first = await app.inject({ url: '/sitemaps/1.xml' })
    const etag = String(first.headers.etag)
    const again = await app.inject({ url: '/sitemaps/1.xml', headers: { 'if-none-match': etag } })
    t.equal(again.statusCode, 304)
    t.equal(again.body, '')
    t.equal(again.headers['cache-control'], first.headers['cache-control'])
    t.equal(again.headers.etag, etag)
    const index = await app.inject({ url: '/sitemap.xml' })
    t.equal((await app.inject({ url: '/sitemap.xml', headers: { 'if-none-match': String(index.headers.etag) } })).statusCode, 304)
    t.not(index.headers.etag, etag, 'each document has its own validator')

    await sql`UPDATE pages SET crawl_weight = 0.99 WHERE path = '/w/low'`.execute(db)
    const changed = await app.inject({ url: '/sitemaps/1.xml', headers: { 'if-none-match': etag } })
    t.equal(changed.statusCode, 200, 'a write to pages is a new version')
    t.not(changed.headers.etag, etag)
    const reordered = await app.inject({ url: '/sitemaps/0.xml' })
    t.equal(locs(reordered.body)[0], `${BASE}/w/low?a=1&amp;b=2`, 'the new weight moved the page to the front')
    await sql`UPDATE pages SET crawl_weight = 0.1 WHERE path = '/w/low'`.execute(db)
  })

  t.test('boundaries are computed once per version; threshold leaves light pages out; keyset batches', async (t) => {
    const service = new SitemapService(db, { publicBaseUrl: BASE, sitemapShardSize: 2, sitemapMinWeight: 0.5 }, app.log)
    const state = await service.state()
    await service.state()
    t.equal(service.boundaryComputations, 1, 'same version: cached')
    t.equal(state.shardCount, 3)
    const urls: string[] = []
    for (let i = 0; i < state.shardCount; i++) urls.push(...locs(await collect(service.shardStream(state, i))))
    t.same(urls, expectedOrder.slice(0, 5), 'pages under SITEMAP_MIN_WEIGHT are left out')

    // 4,507 rows in one shard read 1,000 at a time: several keyset batches, still in order, nothing twice.
    await sql`INSERT INTO pages (path, kind, title, canonical_url, crawl_weight) SELECT '/bulk/p-' || i, 'seo', 'P', ${BASE} || '/bulk/p-' || i, (i % 7) / 10.0 FROM generate_series(1, 4500) i`.execute(db)
    const big = new SitemapService(db, { publicBaseUrl: BASE, sitemapShardSize: 5000, sitemapMinWeight: 0 }, app.log, { batchRows: 1000 })
    const bigState = await big.state()
    t.equal(bigState.shardCount, 1)
    const xml = await collect(big.shardStream(bigState, 0))
    const bulk = locs(xml)
    t.equal(bulk.length, 4507)
    t.equal(new Set(bulk).size, 4507)
    const expected = await sql<{ canonical_url: string }>`SELECT canonical_url FROM pages WHERE status = 'published' ORDER BY crawl_weight DESC, id`.execute(db)
    t.same(bulk, expected.rows.map((r) => r.canonical_url.replace(/&/g, '&amp;')))
    const check = await xmllint(xml, URLSET_XSD)
    t.equal(check.code, 0, check.stderr)
    await service.state()
    t.equal(service.boundaryComputations, 2, 'the insert bumped the version')
    t.same(locs(await collect(service.shardStream(state, 99))), [], 'a shard past the boundaries is empty')
    // A shard that would pass the byte limit is cut at the last whole entry, still valid, and logged.
    const errors: object[] = []
    const small = new SitemapService(db, { publicBaseUrl: BASE, sitemapShardSize: 5000, sitemapMinWeight: 0 }, { error: (o: object) => void errors.push(o) }, { batchRows: 1000, maxBytes: 150_000 })
    const cut = await collect(small.shardStream(await small.state(), 0))
    t.ok(Buffer.byteLength(cut) <= 150_000, `${Buffer.byteLength(cut)} bytes`)
    t.ok(locs(cut).length > 1000, 'cut in a later batch')
    t.match(errors, [{ shard: 0, emitted: locs(cut).length }])
    t.equal((await xmllint(cut, URLSET_XSD)).code, 0)
    // Rows gone between reading the boundaries and streaming: an empty urlset, not a failed stream.
    const stale = await big.state()
    await sql`UPDATE pages SET status = 'draft' WHERE path LIKE '/bulk/%'`.execute(db)
    t.equal(await collect(big.shardStream(stale, 0)).then((x) => locs(x).length), 7, 'only what is still published')
    await sql`UPDATE pages SET status = 'draft'`.execute(db)
    t.equal(await collect(big.shardStream(stale, 0)), EMPTY_URLSET)
    await sql`UPDATE pages SET status = 'published' WHERE path LIKE '/w/%' AND path NOT IN ('/w/draft', '/w/gone')`.execute(db)
  })

  t.test('robots.txt: rules, absolute Sitemap line, cacheable, 304', async (t) => {
    const res = await app.inject({ url: '/robots.txt' })
    t.equal(res.statusCode, 200)
    t.equal(res.headers['content-type'], 'text/plain; charset=utf-8')
    t.equal(res.body, `User-agent: *\nDisallow: /admin/\nDisallow: /search\n\nSitemap: ${BASE}/sitemap.xml\n`)
    t.match(res.headers['cache-control'], /s-maxage=7200/)
    t.equal((await app.inject({ url: '/robots.txt', headers: { 'if-none-match': String(res.headers.etag) } })).statusCode, 304)
  })

  t.test('the page catch-all still serves everything else', async (t) => {
    const res = await app.inject({ url: '/w/top' })
    t.equal(res.statusCode, 200)
    t.match(res.headers['content-type'], /text\/html/)
    t.equal((await app.inject({ url: '/sitemaps' })).headers['content-type'], 'text/html; charset=utf-8', '/sitemaps alone is a page path (404 page)')
  })
})
