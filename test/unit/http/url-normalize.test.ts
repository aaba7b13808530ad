import t from 'tap'
import { isCanonicalPagePath, isTrackingParam, normalizeRequestUrl } from '../../../src/http/url-normalize.ts'

t.test('canonical URLs pass through untouched', async (t) => {
  for (const url of ['/crm#fragment-never-reaches-a-server', '/', '/crm', '/crm/dentists/austin', '/a.b/c_d~e-f']) {
    const result = normalizeRequestUrl(url)
    t.equal(result.kind, 'canonical', url)
  }
  t.equal(normalizeRequestUrl('/a?b=1&c=2', new Set(['b', 'c'])).kind, 'canonical', 'allowed parameters, sorted')
})

t.test('non-canonical URLs redirect to the canonical path', async (t) => {
  const table: Array<[string, string]> = [
    ['/crm/?utm_source=x', '/crm'],
    ['/crm?utm_source=linkedin&utm_medium=cpc', '/crm'],
    ['/crm?gclid=1&fbclid=2&msclkid=3&ref=hn', '/crm'],
    ['/crm?b=2&utm_campaign=x&a=1', '/crm'],
    ['/crm?b=2&a=1', '/crm'],
    ['/a?b=1&c=2', '/a'],
    ['/CRM/Dentists/Austin', '/crm/dentists/austin'],
    ['/crm//dentists///austin/', '/crm/dentists/austin'],
    ['/crm/./x/../dentists', '/crm/dentists'],
    ['/crm?', '/crm'],
    ['/crm?UTM_SOURCE=x', '/crm'],
    ['/crm%2Fdentists', '/crm/dentists'],
  ]
  for (const [url, location] of table) {
    const result = normalizeRequestUrl(url)
    t.same(result.kind === 'redirect' ? result.location : result, location, url)
  }
})

t.test('QUERY_ALLOWLIST: allowed names kept in lower case and sorted, every other parameter dropped', async (t) => {
  const allow = new Set(['a', 'b'])
  const table: Array<[string, string]> = [
    ['/crm?b=2&utm_campaign=x&a=1', '/crm?a=1&b=2'],
    ['/crm?B=2&A=1&c=3', '/crm?a=1&b=2'],
    ['/crm?b=2&b=1', '/crm?b=1&b=2'],
    ['/crm?gclid=1&x=1', '/crm'],
  ]
  for (const [url, location] of table) {
    const result = normalizeRequestUrl(url, allow)
    t.same(result.kind === 'redirect' ? result.location : result, location, url)
  }
  t.equal(normalizeRequestUrl('/crm?a=1&b=2', allow).kind, 'canonical')
})

t.test('a redirect can never leave this origin', async (t) => {
  const hostile = [
    '//evil.example/',
    '//evil.example/x?utm_source=a',
    '/\\evil.example',
    '/\\/evil.example/',
    '/%2F%2Fevil.example',
    '/%5C%5Cevil.example',
    '/%2f%5cevil.example',
    '///evil.example/',
    '/..//evil.example',
    '/%2e%2e//evil.example',
    '/./\\evil.example?utm_medium=x',
  ]
  for (const url of hostile) {
    const result = normalizeRequestUrl(url)
    if (result.kind === 'redirect') {
      t.match(result.location, /^\/(?![/\\])/, `${url} -> ${result.location} stays a same-origin path`)
      t.notMatch(result.location, /[\\]|%5c|%2f/i, `${url}: no encoded separators survive`)
    } else {
      t.not(result.kind, 'redirect', `${url} -> ${result.kind}`)
    }
  }
})

t.test('paths that can never be pages are invalid, not redirected', async (t) => {
  for (const url of ['/a%0d%0aSet-Cookie:%20x=1', '/%E2%82%AC', '/a b', '/<script>', '/%ff', 'http://evil.example/', '*', `/${'a'.repeat(3000)}`, '/a"b']) {
    t.equal(normalizeRequestUrl(url).kind, 'invalid', url)
  }
})

t.test('tracking parameters', async (t) => {
  for (const name of ['utm_source', 'UTM_Medium', 'gclid', 'fbclid', 'msclkid', 'ref', 'gbraid', 'mc_eid']) t.ok(isTrackingParam(name), name)
  for (const name of ['page', 'q', 'utm', 'reference']) t.notOk(isTrackingParam(name), name)
  t.ok(isCanonicalPagePath('/a/b'))
  t.notOk(isCanonicalPagePath('/a/../b'))
  t.notOk(isCanonicalPagePath('/a/'))
})
