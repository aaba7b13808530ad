// The project's VCL in a real varnishd in front of the real origin: edge hits, segments kept apart, a
// segment added through the admin API honoured by the VCL generated for it (GET /admin/cdn/varnish.vcl),
// tracking parameters out of the key, purges by tag and path through the origin's outbox, TTLs that
// follow the crawl weight, and grace covering an origin that is down.

import http from 'node:http'
import { spawnSync } from 'node:child_process'
import { gunzipSync } from 'node:zlib'
import { readFile } from 'node:fs/promises'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildTestApp } from '../../helper.ts'
import { freePort } from '../../support/net.ts'
import { rawRequest } from '../../support/raw-http.ts'
import { findVarnishd, startVarnish, VCL_PATH, vclFor, type Varnish } from '../../support/varnish.ts'
import { DEMO_SEGMENTS, demoPages, demoVariants } from '../../../src/demo/demo-site.ts'
import { renderVarnishVcl } from '../../../src/cdn/varnish-vcl.ts'
import { sharedTtlForPage } from '../../../src/http/cache-policy.ts'
import { TRACKING_PARAMS } from '../../../src/http/url-normalize.ts'
import { outboxDepth } from '../../../src/purge/purge-outbox.ts'
import { until as waitUntil } from '../../support/until.ts'

const TOKEN = 'varnish-test-admin-token-0123456789'
/** Short, so the test can step past stale-while-revalidate into the stale-if-error window. */
const SWR_SECONDS = 3

interface Reply {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

/** Plain node:http, so the test controls every header (cookies included) and the source address. */
function request(baseUrl: string, path: string, options: { method?: string; headers?: Record<string, string>; localAddress?: string; body?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${baseUrl}${path}`, { method: options.method ?? 'GET', headers: options.headers, localAddress: options.localAddress, agent: false, timeout: 10_000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (body += chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
    req.on('timeout', () => req.destroy(new Error(`${path}: no answer within 10 s`)))
    req.on('error', reject)
    req.end(options.body)
  })
}

/** X-Varnish holds the request's id, plus the id of the request that stored the object on a hit. */
const varnishIds = (reply: { headers: http.IncomingHttpHeaders }): number => String(reply.headers['x-varnish'] ?? '').split(' ').filter((id) => id !== '').length
/** Which cached object a hit was served from (the second X-Varnish id); undefined on a miss or pass. */
const objectId = (reply: { headers: http.IncomingHttpHeaders }): string | undefined => String(reply.headers['x-varnish'] ?? '').split(' ')[1]

/** Generous bounds: they only matter on a machine too busy to answer quickly, never on a pass. */
const until = (what: string, check: () => boolean | Promise<boolean>) => waitUntil(what, check, { timeoutMs: 30_000 })

const varnishd = findVarnishd()
if (varnishd === undefined) {
  if (process.env.CI) t.fail('varnishd is not installed: .ci/run installs the Debian packages varnish and varnish-modules')
  else t.plan(0, 'varnishd is not installed (apt-get install varnish varnish-modules): skipping the Varnish tests')
} else {
  await runVarnishTests(varnishd)
}

async function runVarnishTests(varnishd: string): Promise<void> {
  const varnishPort = await freePort()
  const app: FastifyInstance = await buildTestApp(t, {
    CDN_FLAVOUR: 'varnish',
    ADMIN_TOKEN: TOKEN,
    PURGE_TARGETS: 'varnish',
    VARNISH_PURGE_URL: `http://127.0.0.1:${varnishPort}`,
    STALE_WHILE_REVALIDATE_SECONDS: String(SWR_SECONDS),
    REDIS_URL: 'off',
    // A slice of the demo site through the admin API: seeding all 540 pages costs half a minute.
    SEED_DEMO: 'false',
  })
  const seo = demoPages().filter((p) => p.kind === 'seo')
  const lightPage = seo.reduce((a, b) => (b.crawl_weight < a.crawl_weight ? b : a))
  const heavyPage = seo.reduce((a, b) => (b.crawl_weight > a.crawl_weight ? b : a))
  const site = {
    segments: DEMO_SEGMENTS,
    pages: [...demoPages().filter((p) => p.kind === 'landing'), lightPage, heavyPage],
    variants: demoVariants().map(({ variant_key, ...variant }) => ({ key: variant_key, ...variant })),
  }
  for (const [kind, records] of Object.entries(site)) {
    const response = await app.inject({ method: 'POST', url: `/admin/${kind}`, headers: { authorization: `Bearer ${TOKEN}` }, payload: { [kind]: records } })
    if (response.statusCode !== 200) throw new Error(`ingest ${kind}: ${response.statusCode} ${response.body}`)
  }
  await app.listen({ port: 0, host: '127.0.0.1' })
  const originPort = (app.server.address() as { port: number }).port
  const varnish: Varnish = await startVarnish(varnishd, { host: '127.0.0.1', port: originPort }, varnishPort)
  t.teardown(() => varnish.close())
  const get = (path: string, headers: Record<string, string> = {}): Promise<Reply> => request(varnish.url, path, { headers })

  /** Until the outbox has delivered every queued purge to varnishd. */
  async function purgesDelivered(): Promise<void> {
    await until('the purge outbox to deliver to varnishd', async () => (await outboxDepth(app.database.db)) === 0)
    const failed = await app.database.db.selectFrom('purge_outbox').select(['status', 'last_error']).where('status', '!=', 'done').execute()
    if (failed.length > 0) throw new Error(`purge not delivered: ${JSON.stringify(failed)}`)
  }

  /** The admin API's purge, then until the outbox has delivered it to varnishd. */
  async function purge(body: { paths?: string[]; tags?: string[]; soft?: boolean }): Promise<void> {
    const response = await app.inject({ method: 'POST', url: '/admin/purge', headers: { authorization: `Bearer ${TOKEN}` }, payload: body })
    if (response.statusCode !== 202 || response.json().queued !== 1) throw new Error(`purge not queued: ${response.statusCode} ${response.body}`)
    await purgesDelivered()
  }

  /** A fresh copy at the edge (a HIT): earlier tests' soft purges may have left it stale, mid-refresh. */
  async function freshAtEdge(path: string, headers: Record<string, string> = {}): Promise<Reply> {
    let reply: Reply | undefined
    await until(`a fresh ${path} at the edge`, async () => (reply = await get(path, headers)).headers['x-edge-cache'] === 'HIT')
    return reply!
  }

  // The ingest above queued soft purges for a varnishd that was not running yet: delivered late, they
  // would mark pages the tests below just cached as stale.
  await purgesDelivered()

  await t.test('the committed VCL compiles (varnishd -C) and only its backend lines are rewritten for the test', async (t) => {
    const committed = await readFile(VCL_PATH, 'utf8')
    t.match(committed, /^vcl 4\.1;/, 'Varnish 4.1 syntax')
    const generated = await readFile(varnish.vclFile, 'utf8')
    const changed = committed.split('\n').filter((line, i) => line !== generated.split('\n')[i])
    t.same(changed.map((line) => line.trim()), ['.host = "origin";', '.port = "3000";'])
    const compiled = spawnSync(varnishd, ['-C', '-f', varnish.vclFile, '-n', `${varnish.workdir}/compile`], { encoding: 'utf8', timeout: 60_000 })
    t.equal(compiled.status, 0, compiled.stderr.slice(0, 2000))
    t.throws(() => vclFor('vcl 4.1;\nbackend b { .host = "elsewhere"; }', 'x', 1), /must keep the lines/, 'a VCL without the marked lines fails loudly')
    // Every later request needs the probe's verdict "healthy": say so here rather than as a 503 later.
    t.match(varnish.adm('backend.list'), /\bhealthy\b/, 'the health probe reaches the origin')
  })

  await t.test('the second request for a page is a Varnish hit', async (t) => {
    const first = await get('/crm')
    t.equal(first.status, 200)
    t.equal(first.headers['x-edge-cache'], 'MISS')
    t.equal(varnishIds(first), 1)
    const second = await get('/crm')
    t.equal(second.headers['x-edge-cache'], 'HIT')
    t.equal(varnishIds(second), 2, 'X-Varnish names the request that stored it')
    t.equal(second.body, first.body)
    t.equal(second.headers.etag, first.headers.etag)
    t.notOk(second.headers['surrogate-control'], 'Surrogate-Control stays at the edge')
    t.match(second.headers['cache-control'], /^public, max-age=60, s-maxage=\d+/, 'browsers get the origin Cache-Control')
  })

  await t.test('segments: cookie, header and utm_source each get their own copy; unknown values are the default', async (t) => {
    const bodies = new Map<string, string>()
    for (const { slug } of DEMO_SEGMENTS) {
      const byCookie = await get('/payroll', { cookie: `_ga=GA1.2.3; user_segment=${slug}; theme=dark` })
      t.equal(byCookie.status, 200)
      t.equal(byCookie.headers['x-segment'], slug, `cookie ${slug}`)
      t.notOk(byCookie.headers['set-cookie'])
      t.match(byCookie.headers['cache-control'], /^public/, 'cacheable: the cookie became X-Segment before the origin')
      bodies.set(slug, byCookie.body)
      const byHeader = await get('/payroll', { 'x-segment': ` ${slug.toUpperCase()} ` })
      t.equal(byHeader.headers['x-edge-cache'], 'HIT', `header ${slug} is the same copy as cookie ${slug}`)
      t.equal(byHeader.body, byCookie.body)
    }
    t.equal(new Set(bodies.values()).size, DEMO_SEGMENTS.length, 'one distinct page per segment')
    // After every copy is cached, each request still gets its own segment's copy.
    for (const { slug } of [...DEMO_SEGMENTS].reverse()) {
      const again = await get('/payroll', { cookie: `user_segment="${slug}"` })
      t.equal(again.headers['x-edge-cache'], 'HIT')
      t.equal(again.headers['x-segment'], slug)
      t.equal(again.body, bodies.get(slug), `no leak into ${slug}`)
    }
    const defaultSlug = DEMO_SEGMENTS.find((s) => s.is_default)!.slug
    const unknowns: Array<Record<string, string>> = [{ cookie: 'user_segment=root' }, { 'x-segment': 'admin' }, { cookie: 'user_segment=' + 'x'.repeat(100) }, {}]
    for (const headers of unknowns) {
      const unknown = await get('/payroll', headers)
      t.equal(unknown.headers['x-segment'], defaultSlug, `${JSON.stringify(headers)} is the default segment`)
      t.equal(unknown.headers['x-edge-cache'], 'HIT', 'and never a new cache entry')
      t.equal(unknown.body, bodies.get(defaultSlug))
    }
    const headerWins = await get('/payroll', { 'x-segment': 'smb', cookie: 'user_segment=enterprise' })
    t.equal(headerWins.headers['x-segment'], 'smb', 'X-Segment before the cookie, as at the origin')

    for (const { slug, utm_sources } of DEMO_SEGMENTS) {
      for (const source of utm_sources) {
        const byUtm = await get(`/payroll?utm_source=${source.toUpperCase()}&utm_medium=cpc`)
        t.equal(byUtm.status, 200, `utm_source=${source}`)
        t.equal(byUtm.headers['x-segment'], slug, `utm_source=${source} -> ${slug}`)
        t.equal(byUtm.headers['x-edge-cache'], 'HIT', 'the tracking parameters are not in the key')
        t.equal(byUtm.body, bodies.get(slug))
        t.same(byUtm.headers['set-cookie'], [`user_segment=${slug}; Path=/; Max-Age=2592000; SameSite=Lax; HttpOnly`], 'the segment follows the browser')
        t.match(byUtm.headers['cache-control'], /^private, max-age=60/, 'a response that sets a cookie is not for shared caches')
        t.notMatch(byUtm.headers['cache-control'], /s-maxage/)
      }
    }
    const cookieBeatsUtm = await get('/payroll?utm_source=linkedin', { cookie: 'user_segment=developer' })
    t.equal(cookieBeatsUtm.headers['x-segment'], 'developer')
    t.notOk(cookieBeatsUtm.headers['set-cookie'])
    const unknownUtm = await get('/payroll?utm_source=myspace')
    t.equal(unknownUtm.headers['x-segment'], defaultSlug)
    t.notOk(unknownUtm.headers['set-cookie'])
  })

  await t.test('a page that is the same for every segment is one backend fetch and one object; a landing page with variants, one per segment', async (t) => {
    for (const [path, perSegment] of [[heavyPage.path, false], ['/helpdesk', true]] as const) {
      await purge({ paths: [path] })
      const fetchesBefore = varnish.stats('MAIN.backend_req')['MAIN.backend_req']!
      const first = []
      for (const { slug } of DEMO_SEGMENTS) first.push(await get(path, { 'x-segment': slug }))
      const fetches = varnish.stats('MAIN.backend_req')['MAIN.backend_req']! - fetchesBefore
      const again = []
      for (const { slug } of DEMO_SEGMENTS) again.push(await get(path, { 'x-segment': slug }))
      t.ok(again.every((r) => r.headers['x-edge-cache'] === 'HIT'), `${path}: every segment is then a hit`)
      const objects = new Set(again.map(objectId)).size
      if (perSegment) {
        t.equal(fetches, DEMO_SEGMENTS.length, `${path}: one backend fetch per segment`)
        t.equal(objects, DEMO_SEGMENTS.length, `${path}: one object per segment`)
        t.ok(first.every((r) => r.headers.vary === 'X-Segment, Accept-Encoding'))
      } else {
        t.equal(fetches, 1, `${path}: ${DEMO_SEGMENTS.length} segments, 1 backend fetch`)
        t.equal(objects, 1, `${path}: ${DEMO_SEGMENTS.length} segments, 1 object`)
        t.same(first.map((r) => r.headers['x-edge-cache']), ['MISS', 'HIT', 'HIT', 'HIT'])
        t.ok(first.every((r) => r.headers.vary === 'Accept-Encoding' && r.headers['x-segment'] === undefined), 'no Vary on the segment, no X-Segment')
      }
    }
  })

  await t.test('compressed at the origin: Varnish asks for gzip, fetches once and keeps one object for every Accept-Encoding', async (t) => {
    const path = heavyPage.path
    await purge({ paths: [path] })
    const fetchesBefore = varnish.stats('MAIN.backend_req')['MAIN.backend_req']!
    const replies = []
    for (const acceptEncoding of ['gzip', 'br, gzip', 'br', 'identity', '']) replies.push(await rawRequest(`${varnish.url}${path}`, { headers: { 'accept-encoding': acceptEncoding } }))
    t.equal(varnish.stats('MAIN.backend_req')['MAIN.backend_req']! - fetchesBefore, 1, 'one backend fetch for five Accept-Encodings')
    const [first, ...rest] = replies
    t.equal(first!.headers['x-edge-cache'], 'MISS')
    t.ok(rest.every((reply) => reply.headers['x-edge-cache'] === 'HIT'), 'the others are hits')
    t.equal(new Set(rest.map(objectId)).size, 1, 'all on the one object the first request stored')
    const origin = { identity: await app.inject({ url: path }), gzip: await app.inject({ url: path, headers: { 'accept-encoding': 'gzip' } }) }
    t.equal(origin.gzip.headers['content-encoding'], 'gzip')
    t.ok(origin.gzip.rawPayload.length < origin.identity.rawPayload.length / 2, `the origin's gzip is ${origin.gzip.rawPayload.length} bytes for ${origin.identity.rawPayload.length}`)
    t.equal(first!.headers['content-encoding'], 'gzip', 'the object is the gzip one: Varnish asked the origin for gzip')
    t.same(first!.body, origin.gzip.rawPayload, "the origin's gzip bytes as they were compressed at render time")
    t.equal(first!.headers.etag, origin.gzip.headers.etag, 'with the ETag of the gzip representation')
    t.equal(replies[1]!.headers['content-encoding'], 'gzip', 'a client asking for brotli first gets the gzip object (Varnish keeps one)')
    t.equal(replies[2]!.headers['content-encoding'], undefined, 'brotli alone: Varnish unzips for it')
    for (const reply of replies.slice(2)) {
      t.equal(reply.headers['content-encoding'], undefined)
      t.same(reply.body, origin.identity.rawPayload, 'a client without gzip gets the identity bytes, unzipped by Varnish')
    }
    t.same(gunzipSync(first!.body), origin.identity.rawPayload)
  })

  await t.test('edits reach the CDN: a variant and a page changed through the admin API show through Varnish within seconds', async (t) => {
    const admin = { authorization: `Bearer ${TOKEN}` }
    const crmSmb = site.variants.find((v) => v.page === '/crm' && v.segment === 'smb')!
    await get('/crm', { 'x-segment': 'smb' })
    t.equal((await get('/crm', { 'x-segment': 'smb' })).headers['x-edge-cache'], 'HIT', 'cached at the edge')
    await get(heavyPage.path)
    t.equal((await get(heavyPage.path)).headers['x-edge-cache'], 'HIT')

    const started = Date.now()
    const variant = await app.inject({ method: 'POST', url: '/admin/variants', headers: admin, payload: { variants: [{ ...crmSmb, headline: 'CRM for small teams: the spring offer' }] } })
    t.equal(variant.statusCode, 200, variant.body)
    t.equal(variant.json().queued, 1, 'the purge was queued with the change')
    const page = await app.inject({ method: 'POST', url: '/admin/pages', headers: admin, payload: { pages: [{ ...heavyPage, title: `${heavyPage.title}, revised` }] } })
    t.equal(page.statusCode, 200, page.body)
    await until('the new headline through Varnish', async () => (await get('/crm', { 'x-segment': 'smb' })).body.includes('the spring offer'))
    await until('the new title through Varnish', async () => (await get(heavyPage.path)).body.includes(`${heavyPage.title}, revised`))
    const seconds = (Date.now() - started) / 1000
    t.ok(seconds < 10, `visible through Varnish after ${seconds.toFixed(1)} s (its TTL was hours)`)
    const other = await get('/crm', { 'x-segment': 'enterprise' })
    t.notMatch(other.body, 'the spring offer', 'another segment keeps its own variant')
    await purgesDelivered()
  })

  await t.test('a segment added at run time: the VCL from GET /admin/cdn/varnish.vcl, loaded into varnishd, honours it', async (t) => {
    const admin = { authorization: `Bearer ${TOKEN}` }
    const defaultSlug = DEMO_SEGMENTS.find((s) => s.is_default)!.slug
    /** The id of the default segment's cached copy of /crm, once there is a fresh one. */
    const defaultCopy = async (): Promise<string | undefined> => {
      let hit: Reply | undefined
      await until('a fresh default copy of /crm', async () => {
        hit = await get('/crm')
        return hit.headers['x-edge-cache'] === 'HIT'
      })
      return objectId(hit!)
    }
    const before = await defaultCopy()
    t.equal(objectId(await get('/crm', { 'x-segment': 'partners' })), before, 'before: the committed VCL sends partners to the default copy')

    const added = await app.inject({ method: 'POST', url: '/admin/segments', headers: admin, payload: { segments: [{ slug: 'partners', utm_sources: ['PartnerStack'] }] } })
    t.equal(added.statusCode, 200, added.body)
    // New resolution rules soft-purge every segment's copies: let that land before comparing copies.
    await purgesDelivered()
    const served = await app.inject({ url: '/admin/cdn/varnish.vcl', headers: admin })
    t.equal(served.statusCode, 200)
    t.match(served.headers['content-type'], /^text\/plain/)
    t.equal(served.headers['cache-control'], 'no-store')
    t.match(served.body, `(?i)^\\s*(developer|enterprise|general|partners|smb)\\s*$`, 'partners is in the allowlist')
    t.equal((await app.inject({ url: '/admin/cdn/varnish.vcl' })).statusCode, 401, 'admin only')
    await varnish.loadVcl('vo_partners', served.body)
    t.teardown(() => {
      // The rest of the file runs the committed VCL again; the probe of a discarded VCL stops with it.
      varnish.adm('vcl.use', 'boot')
      varnish.adm('vcl.discard', 'vo_partners')
    })
    t.match(varnish.adm('vcl.list'), /^active\b.*\bvo_partners\s*$/m, 'the generated VCL is the active one')
    const generalCopy = await defaultCopy()

    const byHeader = await get('/crm', { 'x-segment': ' Partners ' })
    t.equal(byHeader.status, 200)
    t.equal(byHeader.headers['x-edge-cache'], 'MISS', 'header: a copy of its own, not the default one')
    // The origin names the segment it rendered on the pages that vary by segment.
    if (byHeader.headers['x-segment'] !== undefined) t.equal(byHeader.headers['x-segment'], 'partners', 'the origin rendered partners')
    const partnersCopy = objectId(await get('/crm', { 'x-segment': 'partners' }))
    t.ok(partnersCopy !== undefined && partnersCopy !== generalCopy, 'the partners copy is not the default one')

    const byCookie = await get('/crm', { cookie: 'theme=dark; user_segment=partners' })
    t.equal(byCookie.headers['x-edge-cache'], 'HIT', 'cookie')
    t.equal(objectId(byCookie), partnersCopy, 'cookie: the partners copy')
    t.equal(byCookie.body, byHeader.body)

    const byUtm = await get('/crm?utm_source=partnerstack&utm_medium=referral')
    t.equal(byUtm.headers['x-edge-cache'], 'HIT', 'utm_source')
    t.equal(objectId(byUtm), partnersCopy, 'utm_source=partnerstack: the partners copy')
    t.same(byUtm.headers['set-cookie'], ['user_segment=partners; Path=/; Max-Age=2592000; SameSite=Lax; HttpOnly'], 'the edge resolved partners and keeps it for the browser')

    const unknowns: Array<Record<string, string>> = [{ 'x-segment': 'resellers' }, { cookie: 'user_segment=resellers' }]
    for (const headers of unknowns) {
      const unknown = await get('/crm', headers)
      t.equal(objectId(unknown), generalCopy, `${JSON.stringify(headers)} is still the default segment`)
      if (unknown.headers['x-segment'] !== undefined) t.equal(unknown.headers['x-segment'], defaultSlug)
    }
    const unknownUtm = await get('/crm?utm_source=partnerstack2')
    t.equal(objectId(unknownUtm), generalCopy, 'an unknown utm_source is the default segment')
    t.notOk(unknownUtm.headers['set-cookie'])
  })

  await t.test('query strings are not part of the key: none by default, only QUERY_ALLOWLIST\'s with an allowlist', async (t) => {
    const base = await freshAtEdge('/helpdesk')
    t.equal(base.status, 200)
    for (const name of [...TRACKING_PARAMS, 'utm_campaign', 'UTM_Content', 'GCLID', 'referrer', 'x', 'page']) {
      const tracked = await get(`/helpdesk?${name}=abc123`)
      t.equal(tracked.headers['x-edge-cache'], 'HIT', `${name} is not part of the key`)
      t.equal(tracked.body, base.body)
    }
    t.equal((await get('/helpdesk?fbclid&ref')).headers['x-edge-cache'], 'HIT', 'parameters without a value too')
    t.equal((await get(`/helpdesk?r=${Math.random()}`)).headers['x-edge-cache'], 'HIT', 'a random query cannot split the cache')
    const withCookies = await get('/helpdesk', { cookie: 'session=abc; _ga=GA1.2.3' })
    t.equal(withCookies.headers['x-edge-cache'], 'HIT', 'cookies other than the segment do not make a page uncacheable')

    // With QUERY_ALLOWLIST=page,sort: those two are kept (sorted, any case of name), everything else goes.
    await varnish.loadVcl('allowlist', renderVarnishVcl(DEMO_SEGMENTS.map((s) => ({ slug: s.slug, utmSources: s.utm_sources, isDefault: s.is_default })), { queryAllowlist: ['page', 'sort'] }))
    try {
      // The origin of this test keeps no parameter: it answers the kept ones with its 301, which is what the edge caches under that key.
      const first = await get('/helpdesk?sort=a&gclid=1&x=2&page=2')
      t.equal(first.headers['x-edge-cache'], 'MISS', 'a key of its own')
      const reordered = await get('/helpdesk?page=2&utm_source=x&sort=a&y=1')
      t.equal(reordered.headers['x-edge-cache'], 'HIT', 'the same allowed parameters in another order: the same entry')
      t.equal(objectId(await get('/helpdesk?sort=a&page=2')), objectId(reordered), 'that very object')
      t.equal((await get('/helpdesk?pages=2&x=1')).headers['x-edge-cache'], 'HIT', 'a name that only starts like an allowed one is dropped')
      t.equal(objectId(await get('/helpdesk?SORT=a&Page=2')), undefined, 'names are matched in any case (kept, not dropped): the origin\'s 301 to lower case is a key of its own')
    } finally {
      varnish.adm('vcl.use', 'boot')
      varnish.adm('vcl.discard', 'allowlist')
    }
  })

  await t.test('purges: only from the origin network; by tag and by path through POST /admin/purge and the outbox', async (t) => {
    const outsider = await request(varnish.url, '/crm', { method: 'PURGE', localAddress: '127.0.0.2', headers: { 'xkey-purge': 'v-crm' } })
    t.equal(outsider.status, 403, 'a purge from outside the ACL is refused')
    t.equal((await get('/crm')).headers['x-edge-cache'], 'HIT', 'and purged nothing')
    const odd = await request(varnish.url, '/crm', { method: 'BREW' })
    t.equal(odd.status, 405)
    t.equal((await request(varnish.url, '/metrics', { localAddress: '127.0.0.2' })).status, 403, '/metrics is for the origin network only')
    t.not((await get('/metrics')).status, 403, 'and passes from it')
    const viaEdge = await request(varnish.url, '/admin/purge', {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', cookie: 'session=1' },
      body: JSON.stringify({ tags: ['no-such-tag'] }),
    })
    t.equal(viaEdge.status, 202, 'POST passes through Varnish with its body and headers')
    t.equal(viaEdge.headers['x-edge-cache'], 'PASS')
    await until('that purge to be delivered', async () => (await outboxDepth(app.database.db)) === 0)

    for (const { slug } of DEMO_SEGMENTS) await get('/crm', { 'x-segment': slug })
    await get('/helpdesk')
    await purge({ tags: ['v-crm'] })
    for (const { slug } of DEMO_SEGMENTS) {
      const after = await get('/crm', { 'x-segment': slug })
      t.equal(after.headers['x-edge-cache'], 'MISS', `tag v-crm evicted the ${slug} copy`)
      t.equal(after.status, 200)
    }
    t.equal((await get('/helpdesk')).headers['x-edge-cache'], 'HIT', 'other tags are untouched')

    await purge({ tags: ['s-enterprise'] })
    t.equal((await get('/crm', { 'x-segment': 'enterprise' })).headers['x-edge-cache'], 'MISS', 'segment tag: the enterprise copy')
    t.equal((await get('/crm', { 'x-segment': 'smb' })).headers['x-edge-cache'], 'HIT', 'segment tag: not the smb copy')

    // Fresh copies first: a stale one's background refresh landing after the purge would be a hit.
    for (const { slug } of DEMO_SEGMENTS) await freshAtEdge('/payroll', { 'x-segment': slug })
    await purge({ paths: ['/payroll'] })
    for (const { slug } of DEMO_SEGMENTS) t.equal((await get('/payroll', { 'x-segment': slug })).headers['x-edge-cache'], 'MISS', `path purge evicted the ${slug} copy`)
    t.equal((await get('/crm', { 'x-segment': 'smb' })).headers['x-edge-cache'], 'HIT', 'and only that path')

    const direct = await request(varnish.url, '/', { method: 'PURGE', headers: { 'xkey-purge': 'no-such-tag' } })
    t.equal(direct.status, 200)
    t.match(direct.body, /Purged 0 objects/)
  })

  await t.test("a page's TTL in Varnish follows its crawl weight", async (t) => {
    // X-Edge-Ttl (obj.ttl) is a debug header for the purge ACL only: requests here come from 127.0.0.1.
    const [light, heavy] = [lightPage, heavyPage]
    t.ok(heavy.crawl_weight - light.crawl_weight > 0.5, `weights ${light.crawl_weight} and ${heavy.crawl_weight}`)
    await purge({ paths: [light.path, heavy.path] }) // earlier tests cached them: their TTL has been running
    const ttls: number[] = []
    for (const page of [light, heavy]) {
      const reply = await get(page.path)
      t.equal(reply.status, 200, page.path)
      const expected = sharedTtlForPage(page.path, page.crawl_weight)
      const ttl = Number(reply.headers['x-edge-ttl'])
      t.ok(ttl <= expected && ttl > expected - 5, `${page.path} (weight ${page.crawl_weight}): Varnish TTL ${ttl} s, origin s-maxage ${expected} s`)
      t.equal(Number(reply.headers['x-edge-grace']), 86_400, 'grace covers stale-if-error')
      ttls.push(ttl)
    }
    t.ok(ttls[1]! > ttls[0]! * 2, 'the heavily crawled page stays much longer')
    const outsider = await request(varnish.url, light.path, { localAddress: '127.0.0.2' })
    t.equal(outsider.headers['x-edge-cache'], 'HIT')
    t.notOk(outsider.headers['x-edge-ttl'], 'no debug headers outside the purge ACL')
    t.notOk(outsider.headers.xkey, 'nor the tags')
  })

  await t.test('stale-while-revalidate: a soft-purged page is served stale once, refreshed in the background', async (t) => {
    const before = await get('/crm', { 'x-segment': 'developer' })
    t.equal(before.status, 200)
    await purge({ tags: ['v-crm'], soft: true })
    const stale = await get('/crm', { 'x-segment': 'developer' })
    t.equal(stale.headers['x-edge-cache'], 'STALE', 'inside stale-while-revalidate')
    t.equal(stale.body, before.body)
    await until('the background refresh', async () => (await get('/crm', { 'x-segment': 'developer' })).headers['x-edge-cache'] === 'HIT')
    t.pass('a fresh copy replaced it')
  })

  await t.test('the origin down: grace serves the stale copy (stale-if-error), before and after the probe marks it sick', async (t) => {
    const before = await freshAtEdge('/helpdesk', { 'x-segment': 'smb' })
    t.equal(before.status, 200)
    await purge({ tags: ['v-helpdesk'], soft: true })
    // Past stale-while-revalidate: with a healthy origin this would be fetched anew. A fixed sleep on
    // purpose: the passage of time is the point, and asking Varnish meanwhile would refresh the object.
    await new Promise((resolve) => setTimeout(resolve, (SWR_SECONDS + 0.5) * 1000))
    const closing = app.close()
    await until('the origin to refuse connections', async () => {
      try {
        await request(`http://127.0.0.1:${originPort}`, '/health/live')
        return false
      } catch {
        return true
      }
    })
    // The probe needs three failures 2 s apart to call the origin sick: Varnish still thinks it healthy,
    // so this request tries a refresh, which fails, and falls back to the stale copy.
    t.notMatch(varnish.adm('backend.list'), /\bsick\b/, 'the probe has not noticed yet')
    const beforeProbe = await get('/helpdesk', { 'x-segment': 'smb' })
    t.equal(beforeProbe.status, 200, 'the refresh failed: the stale copy, not an error')
    t.equal(beforeProbe.headers['x-edge-cache'], 'STALE')
    t.equal(beforeProbe.body, before.body)
    await until('the health probe to mark the origin sick', async () => /\bsick\b/.test(varnish.adm('backend.list')))
    const sick = await get('/helpdesk', { 'x-segment': 'smb' })
    t.equal(sick.status, 200)
    t.equal(sick.headers['x-edge-cache'], 'STALE', 'a sick origin: the stale copy straight away')
    t.equal(sick.body, before.body)
    t.ok(Number(sick.headers.age) >= SWR_SECONDS, `Age ${sick.headers.age} counts from the render`)
    const never = await get('/no-such-page-was-ever-cached')
    t.equal(never.status, 503, 'nothing cached: the error')
    await closing
  })
}
