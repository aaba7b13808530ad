// Configuration of the crawl feedback loop: weights, sitemaps, robots.txt and the Search Console pull.

import t from 'tap'
import { loadConfig } from '../../src/config.ts'

t.test('defaults', async (t) => {
  const config = loadConfig({})
  t.equal(config.crawlWeightDecay, 0.5)
  t.equal(config.crawlWeightFloor, 0.05)
  t.equal(config.sitemapShardSize, 50_000)
  t.equal(config.sitemapMinWeight, 0)
  t.equal(config.sitemapTtlSeconds, 3_600)
  t.same(config.robotsDisallow, ['/admin/'])
  t.equal(config.searchConsoleApiUrl, 'https://searchconsole.googleapis.com')
  t.equal(config.searchConsoleTokenUrl, undefined)
  t.equal(config.searchConsoleMaxRetries, 5)
})

t.test('explicit values', async (t) => {
  const config = loadConfig({
    CRAWL_WEIGHT_DECAY: '0.75', CRAWL_WEIGHT_FLOOR: '.1', SITEMAP_SHARD_SIZE: '1000', SITEMAP_MIN_WEIGHT: '0.2', SITEMAP_TTL_SECONDS: '600',
    ROBOTS_DISALLOW: '/admin/, /search,/tmp', SEARCH_CONSOLE_API_URL: 'http://127.0.0.1:9/', SEARCH_CONSOLE_TOKEN_URL: 'http://127.0.0.1:9/token', SEARCH_CONSOLE_MAX_RETRIES: '0',
  })
  t.match(config, { crawlWeightDecay: 0.75, crawlWeightFloor: 0.1, sitemapShardSize: 1000, sitemapMinWeight: 0.2, sitemapTtlSeconds: 600, searchConsoleMaxRetries: 0 })
  t.same(config.robotsDisallow, ['/admin/', '/search', '/tmp'])
  t.equal(config.searchConsoleApiUrl, 'http://127.0.0.1:9', 'no trailing slash')
  t.equal(config.searchConsoleTokenUrl, 'http://127.0.0.1:9/token')
  t.same(loadConfig({ ROBOTS_DISALLOW: 'none' }).robotsDisallow, [], 'none disallows nothing')
})

t.test('bad values are named', async (t) => {
  const table: Array<[Record<string, string>, RegExp]> = [
    [{ CRAWL_WEIGHT_DECAY: '1.5' }, /CRAWL_WEIGHT_DECAY="1.5": expected a number from 0 to 1/],
    [{ CRAWL_WEIGHT_FLOOR: 'low' }, /CRAWL_WEIGHT_FLOOR="low": expected a number from 0 to 1/],
    [{ SITEMAP_SHARD_SIZE: '50001' }, /SITEMAP_SHARD_SIZE="50001": expected an integer from 1 to 50000/],
    [{ SITEMAP_MIN_WEIGHT: '-0.1' }, /SITEMAP_MIN_WEIGHT="-0.1": expected a number from 0 to 1/],
    [{ ROBOTS_DISALLOW: '/ok,admin' }, /ROBOTS_DISALLOW: "admin" is not a path starting with \//],
    [{ SEARCH_CONSOLE_API_URL: 'ftp://x' }, /SEARCH_CONSOLE_API_URL: scheme ftp: is not accepted/],
  ]
  for (const [env, message] of table) t.throws(() => loadConfig(env), message, JSON.stringify(env))
})
