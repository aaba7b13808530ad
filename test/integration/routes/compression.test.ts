// Compressed at render time, never per hit: the coding a request gets, its ETag and its 304, HEAD, and
// a page too large to compress within the render budget, through the real app.

import t from 'tap'
import { brotliDecompressSync, gunzipSync } from 'node:zlib'
import { buildTestApp } from '../../helper.ts'
import { metricValue } from '../../support/metrics.ts'
import { until } from '../../support/until.ts'

const TOKEN = 'compression-test-admin-token-0123456789'
const PAGE = '/crm/dentists/austin'

t.test('each request gets the coding it prefers, with that representation\'s ETag, 304 and length', async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off' })
  const identity = await app.inject({ url: PAGE })
  const renders = await metricValue(app, 'variant_origin_renders_total')
  const gzip = await app.inject({ url: PAGE, headers: { 'accept-encoding': 'gzip, deflate' } })
  const br = await app.inject({ url: PAGE, headers: { 'accept-encoding': 'gzip, deflate, br' } })
  t.equal(await metricValue(app, 'variant_origin_renders_total'), renders, 'one render serves every coding: none is compressed per hit')
  t.equal(identity.headers['content-encoding'], undefined)
  t.equal(gzip.headers['content-encoding'], 'gzip')
  t.equal(br.headers['content-encoding'], 'br')
  t.same(gunzipSync(gzip.rawPayload), identity.rawPayload)
  t.same(brotliDecompressSync(br.rawPayload), identity.rawPayload)
  for (const res of [identity, gzip, br]) {
    t.equal(res.headers.vary, 'Accept-Encoding')
    t.equal(res.headers['content-length'], String(res.rawPayload.length))
    t.match(res.headers.etag, /^"[A-Za-z0-9_-]{27}"$/, 'a strong ETag')
  }
  t.equal(new Set([identity, gzip, br].map((r) => r.headers.etag)).size, 3, 'one ETag per representation (RFC 9110 8.8.3)')
  process.stdout.write(`# ${PAGE}: identity ${identity.rawPayload.length} B, gzip ${gzip.rawPayload.length} B, br ${br.rawPayload.length} B\n`)

  const conditional = await app.inject({ url: PAGE, headers: { 'accept-encoding': 'gzip', 'if-none-match': String(gzip.headers.etag) } })
  t.equal(conditional.statusCode, 304, "the gzip ETag validates the gzip representation")
  t.equal(conditional.headers.etag, gzip.headers.etag)
  t.equal(conditional.headers.vary, 'Accept-Encoding')
  t.equal(conditional.headers['content-encoding'], undefined, 'a 304 has no body to code')
  const otherCoding = await app.inject({ url: PAGE, headers: { 'accept-encoding': 'br', 'if-none-match': String(gzip.headers.etag) } })
  t.equal(otherCoding.statusCode, 200, 'not the brotli one: another representation, sent in full')
  t.equal(otherCoding.headers['content-encoding'], 'br')
  const byDate = await app.inject({ url: PAGE, headers: { 'accept-encoding': 'br', 'if-modified-since': String(identity.headers['last-modified']) } })
  t.equal(byDate.statusCode, 304)
  t.equal(byDate.headers.etag, br.headers.etag)

  for (const [acceptEncoding, full] of [['', identity], ['gzip', gzip], ['br', br]] as const) {
    const head = await app.inject({ method: 'HEAD', url: PAGE, headers: { 'accept-encoding': acceptEncoding } })
    t.equal(head.rawPayload.length, 0)
    t.equal(head.headers['content-length'], full.headers['content-length'], `HEAD (${acceptEncoding || 'identity'}): the GET's length`)
    t.equal(head.headers.etag, full.headers.etag)
    t.equal(head.headers['content-encoding'], full.headers['content-encoding'])
  }

  const notFound = await app.inject({ url: '/crm/no/such-page', headers: { 'accept-encoding': 'br, gzip' } })
  t.equal(notFound.statusCode, 404)
  t.equal(notFound.headers['content-encoding'], undefined, 'a 404 is a few hundred bytes with a short life: not compressed')
  t.notOk('vary' in notFound.headers)
})

t.test('a page too large to compress within the render budget goes out uncompressed, and its codings follow', async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off', RENDER_BUDGET_MS: '1', ADMIN_TOKEN: TOKEN })
  let bodyHtml = ''
  for (let i = 0; bodyHtml.length < 490_000; i++) bodyHtml += `<p>Paragraph ${i}: scheduling, invoices and ${(i * 7919) % 10007} other things a clinic does.</p>`
  const ingest = await app.inject({ method: 'POST', url: '/admin/pages', headers: { authorization: `Bearer ${TOKEN}` }, payload: { pages: [{ path: '/huge/page/one', kind: 'seo', title: 'Huge', body_html: bodyHtml, vertical: 'crm' }] } })
  t.equal(ingest.statusCode, 200, ingest.body)
  const first = await app.inject({ url: '/huge/page/one', headers: { 'accept-encoding': 'br, gzip' } })
  t.equal(first.statusCode, 200)
  t.equal(first.headers['x-cache'], 'MISS')
  t.equal(first.headers['content-encoding'], undefined, 'the render did not wait for brotli over a 490 KB page')
  t.equal(first.headers.vary, 'Accept-Encoding', 'it says it may vary by coding all the same')
  let later = first
  await until('the codings to replace the entry', async () => (later = await app.inject({ url: '/huge/page/one', headers: { 'accept-encoding': 'br, gzip' } })).headers['content-encoding'] === 'br', { timeoutMs: 10_000 })
  t.equal(later.headers['x-cache'], 'HIT-L1', 'the coded entry replaced the identity one in place, without a render')
  t.same(brotliDecompressSync(later.rawPayload), first.rawPayload)
  t.ok(later.rawPayload.length < first.rawPayload.length / 5, `${later.rawPayload.length} bytes instead of ${first.rawPayload.length}`)
  t.equal(later.headers['last-modified'], first.headers['last-modified'])
  t.equal(later.headers['cache-control'], first.headers['cache-control'], 'the same entry: the same lifetimes')
})
