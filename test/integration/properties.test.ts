// Property tests (fast-check) over thousands of generated requests against one running app: what a
// page answers depends only on its canonical path and resolved segment; every Location is a path on this
// origin; nothing a request injected comes back in a response header; a response that sets a cookie is
// never for shared caches; no generated path, header, query or admin body gets a 5xx.

import t from 'tap'
import fc from 'fast-check'
import { buildTestApp } from '../helper.ts'

const TOKEN = 'property-test-admin-token-0123456789'
const app = await buildTestApp(t, { REDIS_URL: 'off', ADMIN_TOKEN: TOKEN })
const SEGMENTS = ['general', 'enterprise', 'smb', 'developer']
const PATHS = ['/', '/crm', '/payroll', '/helpdesk', '/crm/dentists/austin', '/payroll/gyms/denver', '/helpdesk/plumbers/boston', '/no/such/page']
/** What generated values carry, so a response can be searched for it; never part of a page. */
const MARK = 'Zq9X'

const pathVariant = fc.record({
  path: fc.constantFrom(...PATHS),
  upper: fc.boolean(),
  trailingSlash: fc.boolean(),
  doubleSlash: fc.boolean(),
})
const token = fc.stringMatching(/^[A-Za-z0-9_.-]{1,12}$/)
const marked = token.map((s) => `${MARK}${s}`)
const query = fc.array(fc.tuple(fc.oneof(token, fc.constantFrom('utm_source', 'UTM_SOURCE', 'utm_medium', 'gclid', 'page', 'ref')), fc.oneof(marked, fc.constantFrom('linkedin', 'google', 'github', 'newsletter'))), { maxLength: 4 })
const headers = fc.record(
  {
    'x-segment': fc.oneof(fc.constantFrom(...SEGMENTS, 'SMB', ' enterprise ', 'martians'), marked),
    cookie: fc.oneof(
      fc.constantFrom(...SEGMENTS).map((s) => `user_segment=${s}`),
      fc.tuple(token, marked).map(([name, value]) => `${name}=${value}; user_segment=${value}`),
      marked.map((v) => `session=${v}`),
    ),
    'x-forwarded-for': fc.constantFrom('10.1.2.3', '203.0.113.9, 10.0.0.1'),
    'x-request-id': marked,
    'if-none-match': marked.map((v) => `"${v}"`),
    'x-forwarded-host': marked.map((v) => `${v}.evil.example`),
    'accept-language': marked,
  },
  { requiredKeys: [] },
)

function requestUrl(p: { path: string; upper: boolean; trailingSlash: boolean; doubleSlash: boolean }, params: Array<[string, string]>): string {
  let path = p.upper ? p.path.toUpperCase() : p.path
  if (p.doubleSlash) path = path.replace(/\//g, '//')
  if (p.trailingSlash && path !== '/') path = `${path}/`
  const search = params.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')
  return search === '' ? path : `${path}?${search}`
}

/** The reference answer: the canonical path asked for with the resolved segment only. */
const references = new Map<string, string>()
async function reference(path: string, segment: string): Promise<string> {
  const key = `${path}|${segment}`
  let body = references.get(key)
  if (body === undefined) {
    body = (await app.inject({ url: path, headers: { 'x-segment': segment } })).body
    references.set(key, body)
  }
  return body
}

t.test('a page depends only on its canonical path and resolved segment; Locations stay here; nothing injected comes back; Set-Cookie is never shared; no 5xx', async (t) => {
  let requests = 0
  await fc.assert(
    fc.asyncProperty(pathVariant, query, headers, async (p, params, hdrs) => {
      const url = requestUrl(p, params)
      let res = await app.inject({ url, headers: hdrs })
      requests++
      if (res.statusCode >= 500) throw new Error(`${url}: ${res.statusCode}`)
      for (const [name, value] of Object.entries(res.headers)) {
        if (String(value).includes(MARK)) throw new Error(`${url}: response header ${name} carries injected bytes: ${String(value)}`)
      }
      if (res.headers['set-cookie'] !== undefined && !/\b(private|no-store)\b/.test(String(res.headers['cache-control']))) {
        throw new Error(`${url}: Set-Cookie on a shared response (${String(res.headers['cache-control'])})`)
      }
      if (res.statusCode === 301) {
        const location = String(res.headers.location)
        if (!/^\/(?![/\\])/.test(location)) throw new Error(`${url}: Location ${location} leaves the origin`)
        res = await app.inject({ url: location, headers: hdrs })
        requests++
        if (res.statusCode === 301) throw new Error(`${url}: a redirect chain (${location} -> ${String(res.headers.location)})`)
      }
      if (res.statusCode === 200 || res.statusCode === 304) {
        const canonical = p.path
        const segment = String(res.headers['x-segment'] ?? 'general')
        if (res.statusCode === 200 && res.body !== (await reference(canonical, segment))) throw new Error(`${url} with ${JSON.stringify(hdrs)}: the body is not that of ${canonical} for ${segment}`)
      }
    }),
    { numRuns: 2000, seed: 20261203 },
  )
  t.ok(requests >= 2000, `${requests} generated requests`)
})

t.test('no generated admin body gets a 5xx, and a refused one writes nothing', async (t) => {
  const count = async () => Number((await app.database.db.selectFrom('pages').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()).n)
  const value = fc.oneof(fc.string({ maxLength: 40 }), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(fc.string({ maxLength: 5 }), { maxLength: 3 }), fc.dictionary(token, fc.string({ maxLength: 10 }), { maxKeys: 3 }))
  const page = fc.record(
    {
      path: fc.oneof(token.map((s) => `/prop/${s.toLowerCase()}`), fc.string({ maxLength: 20 }), fc.constant('')),
      kind: fc.oneof(fc.constantFrom('seo', 'landing', ''), fc.string({ maxLength: 8 })),
      title: fc.oneof(fc.string({ minLength: 1, maxLength: 60 }), value),
      meta_description: value,
      body_html: fc.oneof(fc.string({ maxLength: 200 }), fc.constant('<script>x</script><p>ok</p>')),
      canonical_url: fc.oneof(fc.webUrl(), value),
      crawl_weight: value,
      vertical: value,
    },
    { requiredKeys: ['path', 'kind', 'title'] },
  )
  const variant = fc.record({ key: token, segment: fc.constantFrom(...SEGMENTS, 'x'), page: fc.constantFrom('/crm', '/prop/x', 'crm'), headline: fc.string({ maxLength: 40 }), metadata: value }, { requiredKeys: [] })
  const segment = fc.record({ slug: fc.oneof(token.map((s) => s.toLowerCase()), fc.string({ maxLength: 10 })), utm_sources: value, description: fc.string({ maxLength: 30 }) }, { requiredKeys: [] })
  const body = fc.oneof(
    fc.tuple(fc.constant('/admin/pages'), fc.array(fc.oneof(page, fc.anything()), { minLength: 1, maxLength: 3 }).map((pages) => ({ pages }))),
    fc.tuple(fc.constant('/admin/variants'), fc.array(fc.oneof(variant, fc.anything()), { minLength: 1, maxLength: 3 }).map((variants) => ({ variants }))),
    fc.tuple(fc.constant('/admin/segments'), fc.array(fc.oneof(segment, fc.anything()), { minLength: 1, maxLength: 3 }).map((segments) => ({ segments }))),
  )
  let requests = 0
  await fc.assert(
    fc.asyncProperty(body, async ([url, payload]) => {
      const before = await count()
      const res = await app.inject({ method: 'POST', url, headers: { authorization: `Bearer ${TOKEN}` }, payload: payload as object })
      requests++
      if (res.statusCode >= 500) throw new Error(`${url} ${JSON.stringify(payload)}: ${res.statusCode} ${res.body}`)
      if (res.statusCode >= 400 && (await count()) !== before) throw new Error(`${url}: refused (${res.statusCode}) yet pages were written`)
      if (res.statusCode >= 400 && res.headers['cache-control'] !== 'no-store') throw new Error(`${url}: a ${res.statusCode} that is not no-store`)
    }),
    { numRuns: 600, seed: 20261203 },
  )
  t.ok(requests >= 600, `${requests} generated admin bodies`)
})
