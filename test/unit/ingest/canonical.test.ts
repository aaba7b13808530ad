// Canonical URLs at write time: absolute https, self-referencing by default (PUBLIC_BASE_URL + path),
// and every problem named by record and field.

import t from 'tap'
import { validatePages } from '../../../src/ingest/validation.ts'

const BASE = 'https://www.example.test'

t.test('a page without canonical_url points at itself', async (t) => {
  const { pages, problems } = validatePages([{ path: '/crm/austin', kind: 'seo', title: 'CRM' }, { path: '/crm/dallas', kind: 'seo', title: 'CRM', canonical_url: '' }], BASE)
  t.same(problems, [])
  t.same(pages.map((p) => p.canonical_url), [`${BASE}/crm/austin`, `${BASE}/crm/dallas`])
})

t.test('an explicit canonical (cross-domain or another path) is kept when absolute https', async (t) => {
  const { pages, problems } = validatePages([{ path: '/a', kind: 'seo', title: 'A', canonical_url: 'https://other.example.test/b?x=1' }], BASE)
  t.same(problems, [])
  t.equal(pages[0]!.canonical_url, 'https://other.example.test/b?x=1')
})

t.test('relative, http, whitespace, fragments and overlong URLs are refused, named by record and field', async (t) => {
  const { problems } = validatePages(
    [
      { path: '/ok', kind: 'seo', title: 'ok', canonical_url: `${BASE}/ok` },
      { path: '/a', kind: 'seo', title: 'A', canonical_url: '/a' },
      { path: '/b', kind: 'seo', title: 'B', canonical_url: 'http://www.example.test/b' },
      { path: '/c', kind: 'seo', title: 'C', canonical_url: 'https://www.example.test/c d' },
      { path: '/d', kind: 'seo', title: 'D', canonical_url: 'https://www.example.test/d#top' },
      { path: '/e', kind: 'seo', title: 'E', canonical_url: `${BASE}/${'e'.repeat(2048)}` },
      { path: '/f', kind: 'seo', title: 'F', canonical_url: 42 },
    ],
    BASE,
  )
  const https = 'must be an absolute https URL such as https://www.example.com/path'
  t.same(problems, [
    { record: 1, field: 'canonical_url', message: https },
    { record: 2, field: 'canonical_url', message: https },
    { record: 3, field: 'canonical_url', message: https },
    { record: 4, field: 'canonical_url', message: 'must not contain a fragment (#...)' },
    { record: 5, field: 'canonical_url', message: 'must be at most 2048 characters (got 2073)' },
    { record: 6, field: 'canonical_url', message: 'must be a string, got number' },
  ])
})
