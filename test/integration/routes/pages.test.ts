// The caching contract as the CDN sees it, through the real app on the embedded PostgreSQL (and on a native one in the native pass).

import t from 'tap'
import { sql } from 'kysely'
import net from 'node:net'
import { buildTestApp } from '../../helper.ts'
import { metricValue } from '../../support/metrics.ts'
import { until } from '../../support/until.ts'
import { crawlWeightToTtl, sharedTtlForPage } from '../../../src/http/cache-policy.ts'

const app = await buildTestApp(t)
const { db } = app.database

const samplePages = await db.selectFrom('pages').select(['path', 'crawl_weight']).where('kind', '=', 'seo').orderBy('crawl_weight').execute()
const seoPath = samplePages[Math.floor(samplePages.length / 2)]!.path

async function setWeight(path: string, weight: number): Promise<void> {
  await db.updateTable('pages').set({ crawl_weight: weight, updated_at: sql`now()` }).where('path', '=', path).execute()
  await app.pages.invalidatePaths([path])
}

t.test('the demo site is there: 500+ SEO pages over 3 verticals, 4 segments, a variant per segment', async (t) => {
  const counts = await db
    .selectFrom('pages')
    .select(['kind', (eb) => eb.fn.countAll<string>().as('n'), (eb) => eb.fn.count<string>('vertical').distinct().as('verticals'), (eb) => eb.fn.min('crawl_weight').as('min'), (eb) => eb.fn.max('crawl_weight').as('max')])
    .groupBy('kind')
    .orderBy('kind')
    .execute()
  const seo = counts.find((c) => c.kind === 'seo')!
  t.ok(Number(seo.n) >= 500, `${seo.n} SEO pages`)
  t.equal(Number(seo.verticals), 3)
  t.ok(Number(seo.min) < 0.05 && Number(seo.max) > 0.9, 'crawl weights spread over [0, 1]')
  const segments = await db.selectFrom('segments').select('slug').execute()
  t.equal(segments.length, 4)
  const landing = await db.selectFrom('pages').select('path').where('kind', '=', 'landing').execute()
  const variants = await db.selectFrom('content_variants').select(['segment']).execute()
  t.equal(variants.length, landing.length * segments.length, 'a variant per landing page and segment')

  const index = await app.inject({ url: '/' })
  t.equal(index.statusCode, 200)
  for (const { path } of landing) t.match(index.body, `<a href="${path}">`, `index links ${path}`)
  t.ok((index.body.match(/<a href="\/[a-z]+\/[a-z-]+\/[a-z-]+">/g) ?? []).length >= 30, 'index links SEO pages')
})

t.test('s-maxage follows the crawl weight, jittered per path', async (t) => {
  for (const weight of [0, 0.5, 1]) {
    await setWeight(seoPath, weight)
    const res = await app.inject({ url: seoPath })
    const expected = sharedTtlForPage(seoPath, weight)
    t.equal(res.statusCode, 200)
    t.equal(res.headers['cache-control'], `public, max-age=60, s-maxage=${expected}, stale-while-revalidate=600, stale-if-error=86400`, `w=${weight}`)
    t.equal(res.headers['cdn-cache-control'], `max-age=${expected}, stale-while-revalidate=600, stale-if-error=86400`)
    const base = crawlWeightToTtl(weight)
    t.ok(expected >= base * 0.85 - 1 && expected <= base * 1.15 + 1, `w=${weight}: ${expected} within +/-15% of ${base}`)
  }
})

t.test('a page response carries the whole contract', async (t) => {
  const page = await db.selectFrom('pages').select(['id', 'vertical', 'title', 'canonical_url', 'updated_at']).where('path', '=', seoPath).executeTakeFirstOrThrow()
  await app.pages.invalidatePaths([seoPath])
  const first = await app.inject({ url: seoPath })
  t.equal(first.headers['x-cache'], 'MISS')
  t.equal(first.headers['content-type'], 'text/html; charset=utf-8')
  t.equal(first.headers.vary, 'Accept-Encoding', 'an SEO page is the same for every segment: Vary names only the coding, one CDN object')
  t.notOk('x-segment' in first.headers)
  t.equal(first.headers['surrogate-key'], `p-${page.id} v-${page.vertical} t-seo`, 'no segment tag')
  t.match(first.headers.etag, /^"[A-Za-z0-9_-]{27}"$/, 'strong ETag')
  t.equal(first.headers['last-modified'], new Date(Math.floor(page.updated_at.getTime() / 1000) * 1000).toUTCString())
  t.notOk('set-cookie' in first.headers, 'no Set-Cookie on a public response')
  t.match(first.body, `<link rel="canonical" href="${page.canonical_url}">`)
  t.match(page.canonical_url, /^https:\/\/www\.example\.test\//, 'canonical is absolute https')
  t.match(first.body, '<meta property="og:title"')
  t.match(first.body, '<meta name="description"')

  const second = await app.inject({ url: seoPath })
  t.equal(second.headers['x-cache'], 'HIT-L1', 'the second request is an L1 hit')
  t.equal(second.body, first.body)
  t.equal(second.headers.etag, first.headers.etag)
})

t.test('304 for a matching validator, with the same caching headers', async (t) => {
  const full = await app.inject({ url: seoPath })
  const repeated = ['cache-control', 'cdn-cache-control', 'surrogate-key', 'etag', 'last-modified', 'vary', 'x-segment'] as const
  const table = [
    { name: 'If-None-Match', headers: { 'if-none-match': full.headers.etag as string }, status: 304 },
    { name: 'If-None-Match list', headers: { 'if-none-match': `"nope", ${full.headers.etag as string}` }, status: 304 },
    { name: 'If-Modified-Since', headers: { 'if-modified-since': full.headers['last-modified'] as string }, status: 304 },
    { name: 'stale ETag', headers: { 'if-none-match': '"stale"' }, status: 200 },
    { name: 'stale ETag beats a fresh date', headers: { 'if-none-match': '"stale"', 'if-modified-since': full.headers['last-modified'] as string }, status: 200 },
    { name: 'old date', headers: { 'if-modified-since': 'Thu, 01 Jan 2015 00:00:00 GMT' }, status: 200 },
  ]
  for (const { name, headers, status } of table) {
    const res = await app.inject({ url: seoPath, headers })
    t.equal(res.statusCode, status, name)
    if (status === 304) {
      t.equal(res.body, '', `${name}: no body`)
      for (const header of repeated) t.equal(res.headers[header], full.headers[header], `${name}: ${header}`)
      t.notOk('content-type' in res.headers, `${name}: no content-type`)
    }
  }
})

t.test('HEAD has the headers of GET and no body', async (t) => {
  for (const url of [seoPath, '/crm', '/does-not-exist', '/crm?utm_source=x']) {
    const get = await app.inject({ url })
    const head = await app.inject({ method: 'HEAD', url })
    t.equal(head.statusCode, get.statusCode, `${url}: status`)
    t.equal(head.body, '', `${url}: no body`)
    for (const name of ['cache-control', 'cdn-cache-control', 'etag', 'last-modified', 'vary', 'content-type', 'location', 'content-length']) {
      t.equal(head.headers[name], get.headers[name], `${url}: ${name}`)
    }
  }
})

t.test('tracking parameters and non-canonical paths get a cacheable same-origin 301', async (t) => {
  const table: Array<[string, string]> = [
    [`${seoPath}?utm_source=x`, seoPath],
    [`${seoPath}?gclid=abc&fbclid=def`, seoPath],
    [`${seoPath.toUpperCase()}/`, seoPath],
    [`${seoPath}?b=2&utm_medium=cpc&a=1`, seoPath],
    ['//evil.example/', '/evil.example'],
    ['/%5C%5Cevil.example', '/evil.example'],
  ]
  for (const [url, location] of table) {
    const res = await app.inject({ url })
    t.equal(res.statusCode, 301, `${url}: 301`)
    t.equal(res.headers.location, location, `${url}: Location ${location}`)
    t.match(res.headers['cache-control'], /^public, max-age=\d+, s-maxage=86400/, `${url}: cacheable`)
    t.notOk('set-cookie' in res.headers)
  }
})

t.test('raw request targets over a real socket cannot redirect off-site', async (t) => {
  // app.inject normalizes some targets itself; a raw request line reaches the router byte for byte.
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = new URL(address)
  for (const target of ['/\\evil.example?utm_source=x', '//evil.example/?gclid=1', '/%5c/evil.example', '/.//evil.example']) {
    const response = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(Number(port), '127.0.0.1', () => socket.end(`GET ${target} HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n`))
      let data = ''
      socket.on('data', (chunk) => (data += chunk.toString('latin1')))
      socket.on('end', () => resolve(data))
      socket.on('error', reject)
    })
    const status = Number(response.split(' ')[1])
    const location = /\r\nlocation: ([^\r]*)/i.exec(response)?.[1]
    t.ok(status === 301 || status === 404, `${target}: ${status}`)
    if (location !== undefined) t.match(location, /^\/(?![/\\])/, `${target} -> ${location}: same-origin path`)
  }
})

t.test('unknown paths: a 404 page cached briefly; a path no page can have, a 404 never cached', async (t) => {
  for (const url of ['/no/such/page', '/%E2%82%AC', '/a%0d%0aSet-Cookie:x=1']) {
    const res = await app.inject({ url })
    t.equal(res.statusCode, 404, url)
    const invalid = url !== '/no/such/page'
    t.equal(res.headers['cache-control'], invalid ? 'no-store' : 'public, max-age=60, s-maxage=60, stale-while-revalidate=0, stale-if-error=0', `${url}: ${invalid ? 'an error' : 'negative caching'}`)
    t.match(res.body, 'Page not found')
    t.match(res.body, '<meta name="robots" content="noindex">')
    t.notOk('etag' in res.headers)
    t.notOk('set-cookie' in res.headers)
  }
  const again = await app.inject({ url: '/no/such/page' })
  t.equal(again.headers['x-cache'], 'HIT-L1', 'the 404 is served from L1 the second time')
})

t.test('segments: each gets its own variant and its own cache entry', async (t) => {
  const bodies = new Map<string, string>()
  const payroll = await db.selectFrom('pages').select('id').where('path', '=', '/payroll').executeTakeFirstOrThrow()
  for (const segment of ['general', 'enterprise', 'smb', 'developer']) {
    const res = await app.inject({ url: '/payroll', headers: { 'x-segment': segment } })
    t.equal(res.statusCode, 200)
    t.equal(res.headers['x-segment'], segment)
    t.equal(res.headers.vary, 'X-Segment, Accept-Encoding', 'a landing page with variants varies by segment')
    t.equal(res.headers['surrogate-key'], `p-${payroll.id} s-${segment} v-payroll t-landing`)
    t.match(res.body, `data-segment="${segment}"`, `${segment} gets its own variant`)
    t.match(res.body, /Payroll/, `${segment}: the payroll variant, nearest to the page intent`)
    t.match(res.headers['cache-control'], /^public/)
    bodies.set(segment, res.body)
  }
  t.equal(new Set(bodies.values()).size, 4, 'four distinct bodies')
  for (const segment of ['enterprise', 'smb']) {
    const hit = await app.inject({ url: '/payroll', headers: { 'x-segment': segment } })
    t.equal(hit.headers['x-cache'], 'HIT-L1')
    t.equal(hit.body, bodies.get(segment), `${segment}: L1 never returns another segment's body`)
  }
  const unknown = await app.inject({ url: '/payroll', headers: { 'x-segment': 'hacker<script>' } })
  t.equal(unknown.headers['x-segment'], 'general', 'an unknown segment is the default')
  t.equal(unknown.body, bodies.get('general'))

  const viaCookie = await app.inject({ url: '/payroll', headers: { cookie: 'user_segment=developer' } })
  t.equal(viaCookie.headers['x-segment'], 'developer')
  t.equal(viaCookie.body, bodies.get('developer'))
  t.equal(viaCookie.headers['cache-control'], 'private, max-age=60', 'a cookie-chosen variant is never stored by a shared cache')
  t.notOk('cdn-cache-control' in viaCookie.headers)
})

t.test('a page that is the same for every segment is one entry: one render for four segments, public whatever chose the segment', async (t) => {
  const renders = () => metricValue(app, 'variant_origin_renders_total', { outcome: 'ok' })
  const landing = await db
    .insertInto('pages')
    .values({ path: '/no-variants', kind: 'landing', title: 'Plain landing page', canonical_url: 'https://www.example.test/no-variants', body_html: '<p>Same for all</p>', intent_text: '', vertical: 'nothing-here', template: 'landing', updated_at: new Date() })
    .returning('id')
    .executeTakeFirstOrThrow()
  for (const path of [seoPath, '/no-variants', '/']) {
    await app.pages.invalidatePaths([path])
    const before = await renders()
    const answers = []
    for (const headers of [{ 'x-segment': 'general' }, { 'x-segment': 'enterprise' }, { cookie: 'user_segment=smb' }, {}]) answers.push(await app.inject({ url: path, headers }))
    t.equal((await renders()) - before, 1, `${path}: one render for four segments`)
    t.same(answers.map((a) => a.headers['x-cache']), ['MISS', 'HIT-L1', 'HIT-L1', 'HIT-L1'], `${path}: the first segment's render serves the others`)
    t.equal(new Set(answers.map((a) => a.body)).size, 1, `${path}: the same bytes`)
    for (const answer of answers) {
      t.ok(answer.headers.vary === 'Accept-Encoding' && !('x-segment' in answer.headers), `${path}: no Vary on the segment, no X-Segment`)
      t.notMatch(String(answer.headers['surrogate-key']), /\bs-/, `${path}: no segment tag`)
      t.match(answer.headers['cache-control'], /^public/, `${path}: a cookie-chosen segment does not make it private: its bytes do not depend on it`)
    }
  }
  t.match((await app.inject({ url: '/no-variants' })).body, 'Same for all', 'a landing page with no variant in scope shows its own content')
  await db.deleteFrom('pages').where('id', '=', landing.id).execute()
  await app.pages.invalidatePaths(['/no-variants'])
})

t.test('hostile page content is escaped end to end', async (t) => {
  await db
    .insertInto('pages')
    .values({
      path: '/hostile', kind: 'seo', title: '</title><script>alert(1)</script>', meta_description: '"><svg onload=alert(1)>',
      canonical_url: 'https://www.example.test/hostile', body_html: '<p>safe</p>', intent_text: '', vertical: 'crm', template: 'seo', updated_at: new Date(),
    })
    .execute()
  const res = await app.inject({ url: '/hostile' })
  t.equal(res.statusCode, 200)
  t.notMatch(res.body, /<script>alert/)
  t.notMatch(res.body, /<svg/)
  t.match(res.body, '<title>&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt;</title>')
})

t.test('draft pages are not served', async (t) => {
  await db.updateTable('pages').set({ status: 'draft' }).where('path', '=', '/hostile').execute()
  await app.pages.invalidatePaths(['/hostile'])
  t.equal((await app.inject({ url: '/hostile' })).statusCode, 404)
})

t.test('utm rules: the redirect carries the segment in a cookie and is never shared', async (t) => {
  const res = await app.inject({ url: '/payroll?utm_source=LinkedIn&utm_medium=cpc' })
  t.equal(res.statusCode, 301)
  t.equal(res.headers.location, '/payroll')
  t.equal(res.headers['set-cookie'], 'user_segment=enterprise; Path=/; Max-Age=2592000; SameSite=Lax; HttpOnly; Secure', 'Secure: PUBLIC_BASE_URL is https')
  t.equal(res.headers['cache-control'], 'private, no-store', 'a response that sets a cookie is never public')
  t.notOk('cdn-cache-control' in res.headers)
  const followed = await app.inject({ url: '/payroll', headers: { cookie: 'user_segment=enterprise' } })
  t.match(followed.body, 'data-segment="enterprise"')
  const unknownSource = await app.inject({ url: '/payroll?utm_source=newsletter' })
  t.notOk('set-cookie' in unknownSource.headers, 'no rule, no cookie')
  t.match(unknownSource.headers['cache-control'], /^public/)
  const cookieWins = await app.inject({ url: '/payroll?utm_source=linkedin', headers: { cookie: 'user_segment=smb' } })
  t.notOk('set-cookie' in cookieWins.headers, 'an existing segment cookie is not overwritten by utm')
  t.equal(cookieWins.headers['cache-control'], 'private, no-store', 'and that answer is not for shared caches either: the campaign URL is the same')
})

t.test('segments never leak: 300 interleaved requests through header, cookie and L1', async (t) => {
  const segments = ['general', 'enterprise', 'smb', 'developer']
  await app.pages.invalidatePaths(['/crm', '/payroll', '/helpdesk'])
  let wrong = 0
  for (let i = 0; i < 300; i++) {
    const segment = segments[(i * 7 + (i >> 2)) % 4]!
    const path = ['/crm', '/payroll', '/helpdesk'][i % 3]!
    const via = i % 3 === 0 ? { cookie: `user_segment=${segment}` } : i % 3 === 1 ? { 'x-segment': segment } : { 'x-segment': segment.toUpperCase(), cookie: 'user_segment=smb' }
    const res = await app.inject({ url: path, headers: via })
    const served = /data-segment="([a-z]+)"/.exec(res.body)?.[1]
    if (served !== segment || res.headers['x-segment'] !== segment) {
      wrong++
      t.fail(`${path} via ${JSON.stringify(via)}: expected ${segment}, got ${served} (${res.headers['x-cache']})`)
    }
  }
  t.equal(wrong, 0, 'every response carried the requested segment')
})

t.test('SEO pages link related pages of the same vertical, nearest by intent', async (t) => {
  const res = await app.inject({ url: '/helpdesk/gyms/denver' })
  const links = [...res.body.matchAll(/<aside class="related">[\s\S]*?<\/aside>/g)][0]?.[0] ?? ''
  const paths = [...links.matchAll(/href="([^"]+)"/g)].map((m) => m[1]!)
  t.equal(paths.length, 6, 'RELATED_LINKS=6 by default')
  t.ok(paths.every((p) => p.startsWith('/helpdesk/')), 'same vertical')
  t.notOk(paths.includes('/helpdesk/gyms/denver'), 'not itself')
  t.ok(paths.some((p) => p.includes('/gyms/') || p.endsWith('/denver')), `nearest share words with "gyms in denver": ${paths.join(' ')}`)
})

t.test('a personalized miss over the time budget serves the default rendering, then the real one', async (t) => {
  const budgetApp = await buildTestApp(t, { RENDER_BUDGET_MS: '50', REDIS_URL: 'off' })
  const general = await budgetApp.inject({ url: '/helpdesk' })
  t.match(general.body, 'data-segment="general"')
  // Hold the database from another connection: on the embedded one any open transaction makes every query
  // of the app wait (one backend session); on a real server the lock on the two tables a render reads does.
  const { default: pg } = await import('pg')
  const blocker = new pg.Client({ connectionString: budgetApp.database.connectionString })
  await blocker.connect()
  await blocker.query('BEGIN')
  await blocker.query('LOCK TABLE pages, content_variants IN ACCESS EXCLUSIVE MODE')
  let released = false
  const release = async () => {
    if (released) return
    released = true
    await blocker.query('COMMIT')
    await blocker.end()
  }
  t.teardown(release)
  const started = Date.now()
  const stalled = await budgetApp.inject({ url: '/helpdesk', headers: { 'x-segment': 'developer' } })
  const waited = Date.now() - started
  t.ok(waited < 2000, `answered within the budget, not after the database (${waited} ms)`)
  t.equal(stalled.statusCode, 200)
  t.equal(stalled.headers['x-cache'], 'DEFAULT')
  t.equal(stalled.headers['x-segment'], 'developer')
  t.match(stalled.body, 'data-segment="general"', 'the default segment rendering')
  t.equal(stalled.headers['cache-control'], 'public, max-age=60, s-maxage=60, stale-while-revalidate=0, stale-if-error=0', 'kept briefly by shared caches')
  t.equal(await metricValue(budgetApp, 'variant_origin_render_over_budget_total'), 1, 'counted')
  await release()
  // The render that went over budget finishes in the background and fills L1.
  let after: Awaited<ReturnType<typeof budgetApp.inject>> | undefined
  await until('the background render to fill L1', async () => ((after = await budgetApp.inject({ url: '/helpdesk', headers: { 'x-segment': 'developer' } })).headers['x-cache'] === 'HIT-L1'), { timeoutMs: 2_500, intervalMs: 50 })
  t.match(after!.body, 'data-segment="developer"')
  t.equal(after!.headers['x-cache'], 'HIT-L1')
})
