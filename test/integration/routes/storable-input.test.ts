// Text PostgreSQL cannot store (U+0000 anywhere, an unpaired UTF-16 surrogate, which JSON allows as
// "\ud800") is a 400 naming the record and field, on every admin, import and event input, and nothing is
// written: no 500 from the database, and no U+FFFD silently stored in place of what was sent.

import t from 'tap'
import { Redis } from 'ioredis'
import { buildTestApp, TEST_REDIS_URL } from '../../helper.ts'
import { rowsWritten } from '../../support/rows-written.ts'

const TOKEN = 'test-admin-token-0123456789'
const auth = { authorization: `Bearer ${TOKEN}` }
const BASE = 'https://www.example.test'

const app = await buildTestApp(t, { ADMIN_TOKEN: TOKEN, EVENTS_CONSUMER: 'false', PURGE_TARGETS: 'varnish', VARNISH_PURGE_URL: 'http://127.0.0.1:9' })
const { db } = app.database
const redis = new Redis(TEST_REDIS_URL)
t.teardown(() => redis.disconnect())

/** Everything an input could have written: rows of every table it touches, the weights, and the event stream. */
const written = async () => ({
  ...(await rowsWritten(db)),
  weights: (await db.selectFrom('pages').select('crawl_weight').orderBy('id').execute()).map((r) => r.crawl_weight).join(','),
  stream: await redis.xlen(app.events.keys.stream),
})

const goodPage = { path: '/storable/ok', kind: 'seo', title: 'Fine' }
const goodVariant = { key: 'storable-ok', segment: 'general', page: '/crm', headline: 'Fine' }
const goodSegment = { slug: 'storable-ok', description: 'Fine' }
const goodRow = { keys: [`${BASE}/crm`], clicks: 1, impressions: 10, ctr: 0.1, position: 2 }
const goodEvent = () => ({ type: 'view', path: '/crm', ts: Date.now() - 1000 })

interface Case {
  name: string
  url: string
  body: (bad: string) => object
  /** The record the problem is reported for, and its field. */
  record: number
  field: string | ((bad: string) => string)
}

// Each bad record comes after a good one, which must not be written either.
const cases: Case[] = [
  ...['title', 'meta_description', 'body_html', 'intent_text'].map((field) => ({
    name: `page ${field}`,
    url: '/admin/pages',
    body: (bad: string) => ({ pages: [goodPage, { path: '/storable/bad', kind: 'seo', title: 'T', [field]: `a${bad}b` }] }),
    record: 1,
    field,
  })),
  { name: 'page canonical_url', url: '/admin/pages', body: (bad) => ({ pages: [goodPage, { path: '/storable/bad', kind: 'seo', title: 'T', canonical_url: `${BASE}/a${bad}b` }] }), record: 1, field: 'canonical_url' },
  { name: 'page path', url: '/admin/pages', body: (bad) => ({ pages: [goodPage, { path: `/storable/${bad}`, kind: 'seo', title: 'T' }] }), record: 1, field: 'path' },
  ...['headline', 'subhead', 'cta_label', 'social_proof', 'text'].map((field) => ({
    name: `variant ${field}`,
    url: '/admin/variants',
    body: (bad: string) => ({ variants: [goodVariant, { ...goodVariant, key: 'storable-bad', headline: 'H', [field]: `a${bad}b` }] }),
    record: 1,
    field,
  })),
  { name: 'variant segment', url: '/admin/variants', body: (bad) => ({ variants: [goodVariant, { ...goodVariant, key: 'storable-bad', segment: `general${bad}` }] }), record: 1, field: 'segment' },
  { name: 'variant cta_url', url: '/admin/variants', body: (bad) => ({ variants: [goodVariant, { ...goodVariant, key: 'storable-bad', cta_url: `/signup${bad}` }] }), record: 1, field: 'cta_url' },
  { name: 'variant features', url: '/admin/variants', body: (bad) => ({ variants: [goodVariant, { ...goodVariant, key: 'storable-bad', features: ['fine', `a${bad}`] }] }), record: 1, field: 'features[1]' },
  { name: 'variant metadata value', url: '/admin/variants', body: (bad) => ({ variants: [goodVariant, { ...goodVariant, key: 'storable-bad', metadata: { a: { b: `x${bad}` } } }] }), record: 1, field: 'metadata.a.b' },
  { name: 'variant metadata array item', url: '/admin/variants', body: (bad) => ({ variants: [goodVariant, { ...goodVariant, key: 'storable-bad', metadata: { list: ['ok', 1, bad] } }] }), record: 1, field: 'metadata.list[2]' },
  {
    name: 'variant metadata key',
    url: '/admin/variants',
    body: (bad) => ({ variants: [goodVariant, { ...goodVariant, key: 'storable-bad', metadata: { a: { [`k${bad}`]: 1 } } }] }),
    record: 1,
    field: (bad) => `metadata.a[${JSON.stringify(`k${bad}`)}]`,
  },
  { name: 'segment description', url: '/admin/segments', body: (bad) => ({ segments: [goodSegment, { slug: 'storable-bad', description: `d${bad}` }] }), record: 1, field: 'description' },
  { name: 'segment slug', url: '/admin/segments', body: (bad) => ({ segments: [goodSegment, { slug: `storable${bad}` }] }), record: 1, field: 'slug' },
  {
    name: 'Search Console row URL',
    url: '/admin/search-console',
    body: (bad) => ({ startDate: '2026-10-01', endDate: '2026-10-31', rows: [goodRow, { ...goodRow, keys: [`${BASE}/crm/${bad}`] }] }),
    record: 1,
    field: 'keys',
  },
  ...['path', 'segment', 'type'].map((field) => ({
    name: `event ${field}`,
    url: '/events',
    body: (bad: string) => ({ events: [goodEvent(), { ...goodEvent(), [field]: field === 'path' ? `/crm${bad}` : field === 'type' ? `view${bad}` : `general${bad}` }] }),
    record: 1,
    field,
  })),
]

const BAD = [
  { what: 'NUL (U+0000)', text: '\u0000', message: /^contains a NUL character \(U\+0000\) at position \d+, which PostgreSQL cannot store; remove it$/ },
  { what: 'an unpaired surrogate (\\ud800)', text: '\ud800', message: /^contains an unpaired UTF-16 surrogate \(\\ud800\) at position \d+, which is not a Unicode character/ },
  { what: 'an unpaired low surrogate (\\udfff)', text: '\udfff', message: /^contains an unpaired UTF-16 surrogate \(\\udfff\) at position \d+/ },
]

t.test('every text field: 400 naming record and field, nothing written', async (t) => {
  for (const bad of BAD) {
    for (const c of cases) {
      const label = `${c.name} with ${bad.what}`
      const before = await written()
      // JSON.stringify writes both as escapes ("\u0000", "\ud800"), as a client's JSON encoder does.
      const res = await app.inject({ method: 'POST', url: c.url, headers: { ...auth, 'content-type': 'application/json' }, payload: JSON.stringify(c.body(bad.text)) })
      t.equal(res.statusCode, 400, `${label}: 400 (${res.body.slice(0, 200)})`)
      t.equal(res.headers['cache-control'], 'no-store', `${label}: no-store`)
      const body = res.json()
      t.match(body, { error: 'VALIDATION_FAILED', message: /nothing was written/ }, label)
      const field = typeof c.field === 'function' ? c.field(bad.text) : c.field
      const problem = (body.details ?? []).find((d: { record: number; field: string }) => d.record === c.record && d.field === field)
      t.ok(problem, `${label}: names record ${c.record} field ${field} (got ${JSON.stringify(body.details)})`)
      t.match(problem?.message, /^(key |the page URL )?/)
      t.match(String(problem?.message).replace(/^(key |the page URL )/, ''), bad.message, `${label}: says what to fix`)
      t.same(await written(), before, `${label}: nothing written`)
    }
  }
})

t.test('characters that are storable pass and round-trip exactly', async (t) => {
  const text = 'Größe 😀 \u0001 \uffff 中文'
  const pages = await app.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { pages: [{ path: '/storable/unicode', kind: 'seo', title: text, intent_text: text }] } })
  t.equal(pages.statusCode, 200, pages.body)
  const variants = await app.inject({
    method: 'POST',
    url: '/admin/variants',
    headers: auth,
    payload: { variants: [{ ...goodVariant, key: 'storable-unicode', headline: text, features: [text], metadata: { [text]: { list: [text] } } }] },
  })
  t.equal(variants.statusCode, 200, variants.body)
  const segments = await app.inject({ method: 'POST', url: '/admin/segments', headers: auth, payload: { segments: [{ slug: 'storable-unicode', description: text }] } })
  t.equal(segments.statusCode, 200, segments.body)
  t.equal((await db.selectFrom('pages').select('title').where('path', '=', '/storable/unicode').executeTakeFirstOrThrow()).title, text)
  const variant = await db.selectFrom('content_variants').select(['headline', 'features', 'metadata']).where('variant_key', '=', 'storable-unicode').executeTakeFirstOrThrow()
  t.same(variant, { headline: text, features: [text], metadata: { [text]: { list: [text] } } })
  t.equal((await db.selectFrom('segments').select('description').where('slug', '=', 'storable-unicode').executeTakeFirstOrThrow()).description, text)
})
