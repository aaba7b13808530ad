import t from 'tap'
import {
  cacheTag,
  crawlWeightToTtl,
  MAX_SHARED_TTL_SECONDS,
  MIN_SHARED_TTL_SECONDS,
  pathJitterFactor,
  publicCacheHeaders,
  sharedTtlForPage,
  tagHeaderFor,
} from '../../../src/http/cache-policy.ts'

t.test('crawl weight sets the shared TTL: 3600 + w * 82800', async (t) => {
  const table: Array<[number, number]> = [
    [0, 3600],
    [0.5, 45000],
    [1, 86400],
    [0.25, 24300],
    [-1, 3600], // clamped
    [2, 86400], // clamped
    [Number.NaN, 3600],
  ]
  for (const [weight, ttl] of table) t.equal(crawlWeightToTtl(weight), ttl, `w=${weight}`)
})

t.test('per-path jitter stays within +/-15%, is deterministic, and spreads paths', async (t) => {
  const paths = Array.from({ length: 2000 }, (_, i) => `/seo/page-${i}`)
  const factors = paths.map(pathJitterFactor)
  t.ok(factors.every((f) => f >= 0.85 && f <= 1.15), 'every factor in [0.85, 1.15]')
  t.same(paths.map(pathJitterFactor), factors, 'same path, same factor')
  const spread = Math.max(...factors) - Math.min(...factors)
  t.ok(spread > 0.25, `factors spread over most of the window (spread ${spread.toFixed(3)})`)
  // Pages written together must not expire together: the factors fill the window evenly.
  const buckets = new Array<number>(10).fill(0)
  for (const f of factors) buckets[Math.min(9, Math.floor(((f - 0.85) / 0.3) * 10))]! += 1
  t.ok(buckets.every((n) => n > 120 && n < 280), `even spread over ten slices of the window: ${buckets.join(' ')}`)
})

t.test('page TTL at weights 0, 0.5 and 1 lies within the jitter bounds', async (t) => {
  for (const weight of [0, 0.5, 1]) {
    const base = crawlWeightToTtl(weight)
    for (let i = 0; i < 200; i++) {
      const ttl = sharedTtlForPage(`/p/${i}`, weight)
      if (ttl < Math.floor(base * 0.85) || ttl > Math.ceil(base * 1.15) || !Number.isInteger(ttl)) {
        t.fail(`w=${weight} /p/${i}: ttl ${ttl} outside [${base * 0.85}, ${base * 1.15}]`)
      }
    }
    t.pass(`w=${weight}: 200 paths within [${Math.floor(base * 0.85)}, ${Math.ceil(base * 1.15)}]`)
  }
  t.ok(sharedTtlForPage('/x', 0) >= MIN_SHARED_TTL_SECONDS * 0.85)
  t.ok(sharedTtlForPage('/x', 1) <= MAX_SHARED_TTL_SECONDS * 1.15)
})

const settings = { browserMaxAgeSeconds: 60, staleWhileRevalidateSeconds: 600, staleIfErrorSeconds: 86400 }

t.test('headers per CDN flavour', async (t) => {
  const tags = ['p-1', 's-smb', 'v-crm', 't-seo']
  const cacheControl = 'public, max-age=60, s-maxage=5000, stale-while-revalidate=600, stale-if-error=86400'
  const targeted = 'max-age=5000, stale-while-revalidate=600, stale-if-error=86400'
  const table = [
    { flavour: 'generic', expected: { 'cache-control': cacheControl, 'cdn-cache-control': targeted, 'surrogate-key': 'p-1 s-smb v-crm t-seo' } },
    { flavour: 'fastly', expected: { 'cache-control': cacheControl, 'surrogate-control': targeted, 'surrogate-key': 'p-1 s-smb v-crm t-seo' } },
    { flavour: 'varnish', expected: { 'cache-control': cacheControl, 'surrogate-control': targeted, xkey: 'p-1 s-smb v-crm t-seo' } },
    { flavour: 'cloudflare', expected: { 'cache-control': cacheControl, 'cdn-cache-control': targeted, 'cache-tag': 'p-1,s-smb,v-crm,t-seo' } },
    { flavour: 'akamai', expected: { 'cache-control': cacheControl, 'cdn-cache-control': targeted, 'edge-cache-tag': 'p-1,s-smb,v-crm,t-seo' } },
    { flavour: 'cloudfront', expected: { 'cache-control': cacheControl } },
  ] as const
  for (const { flavour, expected } of table) {
    t.same(publicCacheHeaders({ ...settings, cdnFlavour: flavour }, 5000, tags), expected, flavour)
  }
})

t.test('browser max-age never exceeds the shared TTL; no tags means no tag header', async (t) => {
  const headers = publicCacheHeaders({ ...settings, cdnFlavour: 'generic', browserMaxAgeSeconds: 600 }, 60, [])
  t.equal(headers['cache-control'], 'public, max-age=60, s-maxage=60, stale-while-revalidate=600, stale-if-error=86400')
  t.notOk('surrogate-key' in headers)
  t.equal(tagHeaderFor('cloudfront', ['a']), undefined)
})

t.test('cache tags are safe for every CDN', async (t) => {
  t.equal(cacheTag('page', 42), 'p-42')
  t.equal(cacheTag('vertical', 'Real Estate, "Inc"'), 'v-real_estate___inc_')
  t.equal(cacheTag('segment', 'smb'), 's-smb')
  t.equal(cacheTag('template', 'seo'), 't-seo')
})
