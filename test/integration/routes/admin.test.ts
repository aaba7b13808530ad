// Ingest through the admin API: auth, all-or-nothing validation, hash-skipped re-embedding, variants
// scoped to their page or vertical, cache invalidation, the CDN purges written with the change, and the
// OpenAI provider against a local embeddings server.

import t from 'tap'
import { buildTestApp } from '../../helper.ts'
import { startFakeOpenAI } from '../../support/fake-openai.ts'

const TOKEN = 'test-admin-token-0123456789'
const auth = { authorization: `Bearer ${TOKEN}` }

t.test('without ADMIN_TOKEN the admin API does not exist', async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off' })
  const res = await app.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { pages: [] } })
  t.equal(res.statusCode, 404)
})

t.test('the admin API', async (t) => {
  // The purge target answers nothing (port 9): what ingest queued stays in the outbox to be read.
  const app = await buildTestApp(t, { ADMIN_TOKEN: TOKEN, REDIS_URL: 'off', PURGE_TARGETS: 'varnish', VARNISH_PURGE_URL: 'http://127.0.0.1:9' })
  const { db } = app.database
  const countPages = async () => Number((await db.selectFrom('pages').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()).n)
  const pageId = async (path: string) => Number((await db.selectFrom('pages').select('id').where('path', '=', path).executeTakeFirstOrThrow()).id)
  /** The outbox rows written since the last call, as [tags, soft]. */
  let outboxSeen = 0
  const queuedPurges = async () => {
    const rows = await db.selectFrom('purge_outbox').select(['id', 'tags', 'paths', 'soft']).where('id', '>', outboxSeen).orderBy('id').execute()
    outboxSeen = Math.max(outboxSeen, ...rows.map((r) => Number(r.id)))
    return rows.map((r) => ({ tags: [...r.tags].sort(), paths: r.paths, soft: r.soft }))
  }

  t.test('a missing or wrong token is 401, no-store', async (t) => {
    for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: TOKEN }, { authorization: `Basic ${TOKEN}` }]) {
      const res = await app.inject({ method: 'POST', url: '/admin/pages', headers, payload: { pages: [] } })
      t.equal(res.statusCode, 401, JSON.stringify(headers))
      t.equal(res.headers['www-authenticate'], 'Bearer realm="variant-origin admin"')
      t.equal(res.headers['cache-control'], 'no-store')
    }
  })

  t.test('a bad batch is 400 naming every bad record and field, and writes nothing', async (t) => {
    const before = await countPages()
    const res = await app.inject({
      method: 'POST',
      url: '/admin/pages',
      headers: auth,
      payload: {
        pages: [
          { path: '/ok/page', kind: 'seo', title: 'Fine' },
          { path: '/Bad Path/', kind: 'blog', title: '', canonical_url: 'http://insecure.example/x', crawl_weight: 3 },
          'not an object',
          { path: '/ok/page', kind: 'seo', title: 'Dup', surprise: true },
        ],
      },
    })
    t.equal(res.statusCode, 400)
    t.equal(res.headers['cache-control'], 'no-store')
    const body = res.json()
    t.equal(body.error, 'VALIDATION_FAILED')
    t.equal(body.message, '8 problem(s) in the pages batch; nothing was written')
    t.same(body.details, [
      { record: 1, field: 'path', message: 'must be a canonical path: lower-case a-z 0-9 . _ ~ -, starting with /, no trailing slash, no . or .. segments' },
      { record: 1, field: 'kind', message: 'must be "landing" or "seo"' },
      { record: 1, field: 'canonical_url', message: 'must be an absolute https URL such as https://www.example.com/path' },
      { record: 1, field: 'crawl_weight', message: 'must be a number from 0 to 1' },
      { record: 1, field: 'title', message: 'is required' },
      { record: 2, field: '(record)', message: 'must be a JSON object' },
      { record: 3, field: 'surprise', message: 'is not a known field' },
      { record: 3, field: 'path', message: 'duplicates record 0 in this batch' },
    ])
    t.equal(await countPages(), before, 'nothing written')
    t.same(await queuedPurges(), [], 'no purge queued')
    const missing = await app.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { page: [] } })
    t.equal(missing.statusCode, 400)
    t.match(missing.json().message, /pages/)
  })

  t.test('pages: insert, update, unchanged; only changed text is embedded; caches invalidated', async (t) => {
    const target = '/payroll/dentists/austin'
    const warm = await app.inject({ url: target })
    t.equal((await app.inject({ url: target })).headers['x-cache'], 'HIT-L1')
    const pages = [
      { path: '/crm/vets/austin', kind: 'seo', title: 'CRM for Vets in Austin', intent_text: 'crm software for vets in austin', vertical: 'crm', body_html: '<p>Hi<script>x()</script></p>' },
      { path: '/crm/vets/boston', kind: 'seo', title: 'CRM for Vets in Boston', intent_text: 'crm software for vets in boston', vertical: 'crm', crawl_weight: 0.9 },
      { path: target, kind: 'seo', title: 'Payroll for Dentists in Austin, updated', intent_text: 'payroll software for dentists in austin texas', vertical: 'payroll' },
    ]
    const first = await app.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { pages } })
    t.equal(first.statusCode, 200, first.body)
    t.match(first.json(), { received: 3, inserted: 2, updated: 1, unchanged: 0, embedded: 3, queued: 1 })
    t.ok(first.json().invalidated >= 1)
    t.same(
      await queuedPurges(),
      [{ tags: [`p-${await pageId(target)}`, 't-index', 't-not-found', 't-sitemap'].sort(), paths: [], soft: true }],
      'the CDN purge is queued with the change: the updated page in every segment, the index, sitemaps, and the 404s new pages replace',
    )

    const after = await app.inject({ url: target })
    t.equal(after.headers['x-cache'], 'MISS', 'the updated page is rendered again')
    t.match(after.body, 'Payroll for Dentists in Austin, updated')
    t.not(after.headers.etag, warm.headers.etag)
    const created = await app.inject({ url: '/crm/vets/austin' })
    t.equal(created.statusCode, 200)
    t.notMatch(created.body, /<script>x/, 'body sanitized at write time')
    t.match(created.headers['cache-control'], /s-maxage=\d+/)

    const second = await app.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { pages } })
    t.match(second.json(), { received: 3, inserted: 0, updated: 0, unchanged: 3, embedded: 0, queued: 0 }, 'identical content: nothing rewritten or embedded')
    t.same(await queuedPurges(), [], 'nor purged')
    const again = await app.inject({ url: target })
    t.equal(again.headers['last-modified'], after.headers['last-modified'], 'Last-Modified unchanged')

    const retitled = pages.map((p) => (p.path === '/crm/vets/boston' ? { ...p, title: 'CRM for Veterinarians in Boston' } : p))
    const third = await app.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { pages: retitled } })
    t.match(third.json(), { updated: 1, unchanged: 2, embedded: 0 }, 'a title change updates the row but keeps its vector')
    const row = await db.selectFrom('pages').select(['crawl_weight', 'intent_embedding', 'embedding_version']).where('path', '=', '/crm/vets/boston').executeTakeFirstOrThrow()
    t.ok(Math.abs(row.crawl_weight - 0.9) < 1e-6)
    t.ok(row.intent_embedding !== null && row.embedding_version !== null)
    t.same(await queuedPurges(), [{ tags: [`p-${await pageId('/crm/vets/boston')}`, 't-index', 't-sitemap'], paths: [], soft: true }], 'a retitled page: its own purge, no 404s')
  })

  t.test('variants belong to a page or a vertical: validated, scoped, invalidated and purged with their page', async (t) => {
    await app.inject({ url: '/crm', headers: { 'x-segment': 'smb' } })
    const payroll = await app.inject({ url: '/payroll', headers: { 'x-segment': 'smb' } })
    const bad = await app.inject({
      method: 'POST',
      url: '/admin/variants',
      headers: auth,
      payload: {
        variants: [
          { key: 'x', segment: 'martians', headline: 'Hi', cta_url: 'javascript:alert(1)', page: '/crm' },
          { key: 'y', segment: 'smb', headline: 'No scope' },
          { key: 'z', segment: 'smb', headline: 'Two scopes', page: '/crm', vertical: 'crm' },
          { key: 'w', segment: 'smb', headline: 'Bad path', page: 'crm' },
        ],
      },
    })
    t.equal(bad.statusCode, 400)
    t.same(bad.json().details, [
      { record: 0, field: 'segment', message: 'is not a known segment (known: developer, enterprise, general, smb)' },
      { record: 0, field: 'cta_url', message: 'must be a path on this site (/signup) or an absolute https URL' },
      { record: 1, field: 'page', message: 'is required: give the landing page this variant belongs to ("page": "/crm"), or "vertical" for copy shared by a vertical\'s landing pages' },
      { record: 2, field: 'vertical', message: 'give "page" or "vertical", not both: a variant belongs to one landing page or to one vertical' },
      { record: 3, field: 'page', message: 'must be the canonical path of a landing page, such as /crm' },
    ])
    const unknownScope = await app.inject({
      method: 'POST',
      url: '/admin/variants',
      headers: auth,
      payload: {
        variants: [
          { key: 'ok-1', segment: 'smb', headline: 'Fine', page: '/crm' },
          { key: 'u-1', segment: 'smb', headline: 'Unknown page', page: '/no-such-page' },
          { key: 'u-2', segment: 'smb', headline: 'SEO page', page: '/crm/dentists/austin' },
          { key: 'u-3', segment: 'smb', headline: 'Unknown vertical', vertical: 'bakeries' },
        ],
      },
    })
    t.equal(unknownScope.statusCode, 400)
    t.same(unknownScope.json().details, [
      { record: 1, field: 'page', message: 'no page has the path /no-such-page: ingest the landing page first (or give "vertical")' },
      { record: 2, field: 'page', message: '/crm/dentists/austin is an SEO page; variants belong to landing pages' },
      { record: 3, field: 'vertical', message: 'no landing page has the vertical "bakeries": ingest a landing page of that vertical first' },
    ])
    t.same(await db.selectFrom('content_variants').select('id').where('variant_key', 'in', ['ok-1', 'u-1', 'u-2', 'u-3']).execute(), [], 'nothing written')
    t.same(await queuedPurges(), [], 'nothing purged')

    const variant = {
      key: 'smb-crm-spring',
      segment: 'smb',
      page: '/crm',
      headline: 'Spring offer: CRM customer relationship management software, track every lead and close more deals',
      subhead: 'Half price for three months.',
      features: ['Lead tracking', 'Deal pipeline'],
      cta_label: 'Claim the offer',
      cta_url: '/crm',
      text: 'customer relationship management software CRM track every lead and close more deals',
    }
    const res = await app.inject({ method: 'POST', url: '/admin/variants', headers: auth, payload: { variants: [variant] } })
    t.equal(res.statusCode, 200, res.body)
    t.match(res.json(), { received: 1, inserted: 1, embedded: 1, queued: 1 })
    t.same(await queuedPurges(), [{ tags: [`p-${await pageId('/crm')}`], paths: [], soft: true }], 'its page is purged at the CDN, in every segment')
    const smb = await app.inject({ url: '/crm', headers: { 'x-segment': 'smb' } })
    t.equal(smb.headers['x-cache'], 'MISS')
    t.match(smb.body, 'Spring offer', 'the nearer new variant is chosen for smb')
    const otherPage = await app.inject({ url: '/payroll', headers: { 'x-segment': 'smb' } })
    t.equal(otherPage.headers['x-cache'], 'HIT-L1', 'another page is untouched')
    t.equal(otherPage.body, payroll.body, 'and never shows /crm\'s variant')

    const same = await app.inject({ method: 'POST', url: '/admin/variants', headers: auth, payload: { variants: [{ ...variant, subhead: 'Now 60% off.' }] } })
    t.match(same.json(), { updated: 1, embedded: 0 }, 'copy change with the same embedded text keeps the vector')
    t.match((await app.inject({ url: '/crm', headers: { 'x-segment': 'smb' } })).body, 'Now 60% off.')
    await queuedPurges()

    // Moved to another page: both pages change.
    const moved = await app.inject({ method: 'POST', url: '/admin/variants', headers: auth, payload: { variants: [{ ...variant, subhead: 'Now 60% off.', page: '/helpdesk' }] } })
    t.match(moved.json(), { updated: 1, embedded: 0 })
    t.same(await queuedPurges(), [{ tags: [`p-${await pageId('/crm')}`, `p-${await pageId('/helpdesk')}`].sort(), paths: [], soft: true }], 'the page it left and the page it joined')
    t.notMatch((await app.inject({ url: '/crm', headers: { 'x-segment': 'smb' } })).body, 'Spring offer')
  })

  t.test('a new segment: every instance learns it, per-segment pages are invalidated and purged, and a page shows only its own or its vertical\'s variant', async (t) => {
    const res = await app.inject({ method: 'POST', url: '/admin/segments', headers: auth, payload: { segments: [{ slug: 'agency', utm_sources: ['Partner'] }] } })
    t.equal(res.statusCode, 200)
    t.match(res.json(), { received: 1, upserted: 1, queued: 1 })
    t.same(await queuedPurges(), [{ tags: ['s-agency', 's-developer', 's-enterprise', 's-general', 's-smb'], paths: [], soft: true }], 'every per-segment rendering at the CDN')
    const described = await app.inject({ method: 'POST', url: '/admin/segments', headers: auth, payload: { segments: [{ slug: 'agency', description: 'Agencies', utm_sources: ['partner'] }] } })
    t.match(described.json(), { queued: 0, invalidated: 0 }, 'a description changes no page')

    const crm = await app.inject({ url: '/crm', headers: { 'x-segment': 'agency' } })
    t.equal(crm.headers['x-segment'], 'agency')
    t.notMatch(crm.body, /data-variant=/, 'no agency variant in /crm\'s scope: its own content, not another product\'s variant')
    t.match(crm.body, 'Our customer relationship management software')

    const scoped = await app.inject({
      method: 'POST',
      url: '/admin/variants',
      headers: auth,
      payload: {
        variants: [
          { key: 'agency-payroll', segment: 'agency', page: '/payroll', headline: 'Payroll for agencies and their contractors' },
          { key: 'agency-helpdesk-vertical', segment: 'agency', vertical: 'helpdesk', headline: 'Help desk for agencies, one inbox per client' },
        ],
      },
    })
    t.equal(scoped.statusCode, 200, scoped.body)
    t.match((await app.inject({ url: '/payroll', headers: { 'x-segment': 'agency' } })).body, 'Payroll for agencies', 'its own page')
    t.match((await app.inject({ url: '/helpdesk', headers: { 'x-segment': 'agency' } })).body, 'Help desk for agencies', 'its vertical\'s landing page')
    t.notMatch((await app.inject({ url: '/crm', headers: { 'x-segment': 'agency' } })).body, /agencies/i, 'never another page\'s or vertical\'s')

    const bad = await app.inject({ method: 'POST', url: '/admin/segments', headers: auth, payload: { segments: [{ slug: 'A B', is_default: 'yes' }] } })
    t.equal(bad.statusCode, 400)
    t.equal(bad.json().details.length, 2)
  })

  t.test('an embedder of another model than the active version is a 409 that says what to run', async (t) => {
    const fake = await startFakeOpenAI()
    t.teardown(() => fake.close())
    const openaiApp = await buildTestApp(t, { ADMIN_TOKEN: TOKEN, REDIS_URL: 'off', OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseURL })
    const res = await openaiApp.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { pages: [{ path: '/x', kind: 'seo', title: 'X' }] } })
    t.equal(res.statusCode, 409)
    t.match(res.json().message, /active embedding version is local-hashed-ngrams-v1 \(1536 dimensions\) but the configured embedder is text-embedding-3-small \(1536\).*npm run reembed/)
    t.equal(fake.requests.length, 0, 'nothing sent to the provider')
  })
})

t.test('OpenAI-compatible provider on an empty database: ingest, and 422 on a dimension mismatch', async (t) => {
  const fake = await startFakeOpenAI()
  t.teardown(() => fake.close())
  const app = await buildTestApp(t, { ADMIN_TOKEN: TOKEN, REDIS_URL: 'off', SEED_DEMO: 'false', OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseURL })
  const pages = Array.from({ length: 30 }, (_, i) => ({ path: `/guides/topic-${i}`, kind: 'seo', title: `Guide ${i}`, intent_text: `guide number ${i} about payroll` }))
  fake.script = ['wrong-dimensions']
  const wrong = await app.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { pages } })
  t.equal(wrong.statusCode, 422)
  t.match(wrong.json().message, /768-dimensional vectors but EMBEDDING_DIMENSIONS is 1536/)
  t.equal((await app.database.db.selectFrom('pages').select('id').execute()).length, 0, 'nothing written')

  const ok = await app.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { pages } })
  t.equal(ok.statusCode, 200, ok.body)
  t.match(ok.json(), { inserted: 30, embedded: 30 })
  const version = await app.database.db.selectFrom('embedding_versions').selectAll().where('active', '=', true).executeTakeFirstOrThrow()
  t.match(version, { model: 'text-embedding-3-small', dimensions: 1536 })
  const page = await app.inject({ url: '/guides/topic-3' })
  t.equal(page.statusCode, 200)
  t.match(page.body, /<aside class="related">/, 'related pages by the provider vectors')
})
