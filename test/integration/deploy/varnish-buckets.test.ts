// Sticky experiment buckets in the generated VCL, in a real varnishd in front of a tiny node:http origin
// that echoes what it received: the bucket comes from the vo_bucket cookie or is drawn at random (and
// then set as that cookie), never from the client's X-Bucket header, never for crawlers, survives a
// restart, and splits the cache only for pages whose origin answer varies on X-Bucket.

import http from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { CRAWLER_USER_AGENT, renderVarnishVcl } from '../../../src/cdn/varnish-vcl.ts'
import { DEMO_SEGMENTS } from '../../../src/demo/demo-site.ts'
import { freePort } from '../../support/net.ts'
import { findVarnishd, startVarnish, type Varnish } from '../../support/varnish.ts'

const BUCKETS = 4
const BROWSER = 'Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0'
const COOKIE = /^vo_bucket=(\d+); Path=\/; Max-Age=2592000; SameSite=Lax$/

interface Reply {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

const varnishd = findVarnishd()
if (varnishd === undefined) {
  if (process.env.CI) t.fail('varnishd is not installed: .ci/run installs the Debian packages varnish and varnish-modules')
  else t.plan(0, 'varnishd is not installed (apt-get install varnish varnish-modules): skipping the Varnish bucket tests')
} else {
  await runBucketTests(varnishd)
}

async function runBucketTests(varnishd: string): Promise<void> {
  t.setTimeout(120_000)

  // The origin: /exp* varies on the bucket, /plain* does not, /rand* is no-store, /missing is a 404,
  // /restart* lives one second. Each echoes the X-Bucket, X-Segment and marker it received.
  const fetches = new Map<string, number>()
  const fetchesOf = (path: string): Record<string, number> =>
    Object.fromEntries([...fetches].filter(([key]) => key.startsWith(`${path}|`)).map(([key, n]) => [key.slice(path.length + 1), n]))
  const origin = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!
    if (path === '/health/live') {
      res.writeHead(200, { 'cache-control': 'no-store' }).end('ok')
      return
    }
    const bucket = req.headers['x-bucket'] === undefined ? 'none' : String(req.headers['x-bucket'])
    fetches.set(`${path}|${bucket}`, (fetches.get(`${path}|${bucket}`) ?? 0) + 1)
    const headers: Record<string, string> = {
      'content-type': 'text/plain',
      'x-seen-bucket': bucket,
      'x-seen-segment': String(req.headers['x-segment'] ?? 'none'),
      'x-seen-marker': String(req.headers['x-vo-bucket-new'] ?? 'none'),
      'x-seen-cookie': String(req.headers.cookie ?? 'none'),
    }
    if (path.startsWith('/exp')) Object.assign(headers, { vary: 'X-Segment, X-Bucket', 'cache-control': 'public, max-age=60', etag: '"exp"' })
    else if (path.startsWith('/plain')) Object.assign(headers, { vary: 'X-Segment', 'cache-control': 'public, max-age=60' })
    else if (path.startsWith('/rand')) Object.assign(headers, { 'cache-control': 'no-store' })
    else if (path.startsWith('/restart')) Object.assign(headers, { vary: 'X-Segment, X-Bucket', 'cache-control': 'public, max-age=1' })
    else {
      res.writeHead(404, { ...headers, 'cache-control': 'public, max-age=60' }).end('not found')
      return
    }
    res.writeHead(200, headers).end(`${path} for bucket ${bucket}`)
  })
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => origin.close(() => resolve())))
  const originPort = (origin.address() as AddressInfo).port

  const varnish: Varnish = await startVarnish(varnishd, { host: '127.0.0.1', port: originPort }, await freePort())
  t.teardown(() => varnish.close())
  // The committed VCL has 20 buckets; the same template with 4, compiled and loaded by varnishadm.
  await varnish.loadVcl('buckets4', renderVarnishVcl(DEMO_SEGMENTS.map((s) => ({ slug: s.slug, utmSources: s.utm_sources, isDefault: s.is_default })), { experimentBuckets: BUCKETS }))

  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })
  t.teardown(() => agent.destroy())
  /** A browser's request unless `headers` says otherwise; a header given as undefined is not sent. */
  const get = (path: string, headers: Record<string, string | undefined> = {}): Promise<Reply> =>
    new Promise((resolve, reject) => {
      const sent = Object.fromEntries(Object.entries({ 'user-agent': BROWSER, ...headers }).filter((entry): entry is [string, string] => entry[1] !== undefined))
      const req = http.request(`${varnish.url}${path}`, { headers: sent, agent, timeout: 20_000 }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk: string) => (body += chunk))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      })
      req.on('timeout', () => req.destroy(new Error(`${path}: no answer within 20 s`)))
      req.on('error', reject)
      req.end()
    })
  /** The bucket a response's Set-Cookie gives, undefined without one; fails on any other Set-Cookie. */
  const newBucket = (t: Test, reply: Reply): number | undefined => {
    const cookies = reply.headers['set-cookie'] ?? []
    if (cookies.length === 0) return undefined
    t.equal(cookies.length, 1, 'one Set-Cookie')
    const match = COOKIE.exec(cookies[0]!)
    t.ok(match, `Set-Cookie ${cookies[0]} is vo_bucket=<n>; Path=/; Max-Age=2592000; SameSite=Lax`)
    return match === null ? undefined : Number(match[1])
  }

  await t.test('a first visit gets a random bucket as a cookie, and the origin sees it; the next visit keeps it', async (t) => {
    const first = await get('/exp/first')
    t.equal(first.status, 200)
    const bucket = newBucket(t, first)
    t.ok(bucket !== undefined && Number.isInteger(bucket) && bucket >= 0 && bucket < BUCKETS, `bucket ${bucket} in 0..${BUCKETS - 1}`)
    t.equal(first.headers['x-seen-bucket'], String(bucket), 'the origin saw X-Bucket')
    t.equal(first.headers['x-seen-marker'], 'none', 'the edge\'s marker stays at the edge')
    t.equal(first.headers['x-seen-cookie'], 'none', 'cookies still never reach the origin on pages')
    t.equal(first.headers['x-seen-segment'], 'general', 'the segment is resolved as before')
    t.equal(first.headers['cache-control'], 'private, max-age=60', 'a response that sets a cookie is for the browser only')
    t.equal(first.headers['x-edge-cache'], 'MISS')

    const again = await get('/exp/first', { cookie: `vo_bucket=${bucket}` })
    t.equal(again.status, 200)
    t.notOk(again.headers['set-cookie'], 'no Set-Cookie once the browser has the bucket')
    t.equal(again.headers['x-seen-bucket'], String(bucket), 'the same bucket')
    t.equal(again.headers['x-edge-cache'], 'HIT', 'the object the first visit stored')
    t.equal(again.headers['cache-control'], 'public, max-age=60', 'the origin\'s Cache-Control for everyone else')
    t.same(fetchesOf('/exp/first'), { [String(bucket)]: 1 })

    const amongOthers = await get('/exp/first', { cookie: `_ga=GA1.2.3; vo_bucket = ${bucket} ; user_segment=smb` })
    t.notOk(amongOthers.headers['set-cookie'])
    t.equal(amongOthers.headers['x-seen-bucket'], String(bucket), 'read among other cookies, spaces allowed')
    t.equal(amongOthers.headers['x-seen-segment'], 'smb', 'and the segment cookie still counts')
  })

  await t.test('the client never chooses: its X-Bucket header and the edge\'s marker are ignored', async (t) => {
    const withCookie = await get('/exp/spoof', { cookie: 'vo_bucket=1', 'x-bucket': '3' })
    t.equal(withCookie.headers['x-seen-bucket'], '1', 'the cookie wins over the header')
    t.notOk(withCookie.headers['set-cookie'])
    for (let i = 0; i < 10; i++) {
      const without = await get('/exp/spoof', { 'x-bucket': '7' })
      const bucket = newBucket(t, without)
      t.ok(bucket !== undefined && bucket < BUCKETS, `a random bucket, ${bucket}, not the header's 7`)
      t.equal(without.headers['x-seen-bucket'], String(bucket))
    }
    const marker = await get('/exp/spoof', { cookie: 'vo_bucket=2', 'x-vo-bucket-new': '1' })
    t.equal(marker.headers['x-seen-bucket'], '2')
    t.notOk(marker.headers['set-cookie'], 'a client-sent marker sets no cookie')
    t.equal(fetchesOf('/exp/spoof')['7'], undefined, 'the origin never saw bucket 7')
  })

  await t.test('an out-of-range or garbage cookie is replaced by a fresh bucket; the first vo_bucket counts', async (t) => {
    for (const value of [String(BUCKETS), '20', '-1', 'abc', '1.5', '', '"2"', '0x1', '99999999999999999999']) {
      const reply = await get('/exp/garbage', { cookie: `vo_bucket=${value}` })
      const bucket = newBucket(t, reply)
      t.ok(bucket !== undefined && bucket >= 0 && bucket < BUCKETS, `vo_bucket=${value}: a fresh bucket, ${bucket}`)
      t.equal(reply.headers['x-seen-bucket'], String(bucket))
    }
    const twice = await get('/exp/garbage', { cookie: 'vo_bucket=2; vo_bucket=3' })
    t.equal(twice.headers['x-seen-bucket'], '2')
    t.notOk(twice.headers['set-cookie'])
    const leadingZero = await get('/exp/garbage', { cookie: 'vo_bucket=03' })
    t.equal(leadingZero.headers['x-seen-bucket'], '3', 'digits are read as a number')
    const lookalike = await get('/exp/garbage', { cookie: 'xvo_bucket=1' })
    t.ok(newBucket(t, lookalike) !== undefined, 'another cookie whose name ends in vo_bucket is not it')
  })

  await t.test('crawlers and requests without a User-Agent get no bucket and no cookie: one object for them, apart from the buckets', async (t) => {
    t.equal(CRAWLER_USER_AGENT, 'bot|crawl|spider|slurp|facebookexternalhit|preview|lighthouse|headless')
    for (const ua of [undefined, '', ' ', 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)', 'Mozilla/5.0 (compatible; BINGBOT/2.0)', 'facebookexternalhit/1.1', 'Mozilla/5.0 HeadlessChrome/120.0', 'Chrome-Lighthouse']) {
      const reply = await get('/exp/crawled', { 'user-agent': ua })
      t.equal(reply.status, 200)
      t.notOk(reply.headers['set-cookie'], `${JSON.stringify(ua)}: no Set-Cookie`)
      t.equal(reply.headers['x-seen-bucket'], 'none', `${JSON.stringify(ua)}: no X-Bucket`)
      t.equal(reply.headers['cache-control'], 'public, max-age=60')
    }
    const spoofing = await get('/exp/crawled', { 'user-agent': 'Googlebot/2.1', 'x-bucket': '1' })
    t.equal(spoofing.headers['x-seen-bucket'], 'none', 'not even through the header')
    t.same(fetchesOf('/exp/crawled'), { none: 1 }, 'every crawler shares one object')
    const withCookie = await get('/exp/crawled', { 'user-agent': 'Googlebot/2.1', cookie: 'vo_bucket=2' })
    t.equal(withCookie.headers['x-seen-bucket'], '2', 'a valid cookie counts for any User-Agent')
    t.notOk(withCookie.headers['set-cookie'])
  })

  await t.test('a page that varies on X-Bucket is one backend fetch per bucket; one that does not, one in all', async (t) => {
    for (let visitor = 0; visitor < 40; visitor++) {
      const reply = await get('/exp/load', { cookie: `vo_bucket=${visitor % BUCKETS}` })
      t.equal(reply.headers['x-seen-bucket'], String(visitor % BUCKETS), `visitor ${visitor} gets its bucket's copy`)
      t.equal(reply.headers['x-edge-cache'], visitor < BUCKETS ? 'MISS' : 'HIT')
    }
    t.same(fetchesOf('/exp/load'), { 0: 1, 1: 1, 2: 1, 3: 1 }, '4 fetches for 40 visitors over 4 buckets')

    const plainBuckets = new Set<string>()
    for (let visitor = 0; visitor < 40; visitor++) {
      const reply = await get('/plain/load', visitor % 5 === 4 ? {} : { cookie: `vo_bucket=${visitor % BUCKETS}` })
      t.equal(reply.status, 200)
      t.equal(reply.headers['x-edge-cache'], visitor === 0 ? 'MISS' : 'HIT')
      if (visitor % 5 === 4) plainBuckets.add(String(newBucket(t, reply)))
      else t.notOk(reply.headers['set-cookie'])
    }
    t.equal(Object.values(fetchesOf('/plain/load')).reduce((a, b) => a + b, 0), 1, 'one backend fetch in total, whatever the buckets')
    t.ok(plainBuckets.size >= 1, 'cookie-less visitors still get a bucket on a page without an experiment')
  })

  await t.test('a conditional request answered 304 sets the new bucket\'s cookie too; a 404 sets none', async (t) => {
    for (let bucket = 0; bucket < BUCKETS; bucket++) await get('/exp/etag', { cookie: `vo_bucket=${bucket}` })
    const notModified = await get('/exp/etag', { 'if-none-match': '"exp"' })
    t.equal(notModified.status, 304)
    const bucket = newBucket(t, notModified)
    t.ok(bucket !== undefined && bucket < BUCKETS, `304 with vo_bucket=${bucket}`)
    const missing = await get('/missing')
    t.equal(missing.status, 404)
    t.notOk(missing.headers['set-cookie'], 'no cookie on an answer that is not a page')
    t.ok(missing.headers['x-seen-bucket'] !== 'none', 'though the request carried a bucket to the origin')
  })

  await t.test('a restart (the refresh past stale-while-revalidate) keeps the bucket', async (t) => {
    for (const path of ['/restart/cookie', '/restart/new']) {
      for (let bucket = 0; bucket < BUCKETS; bucket++) t.equal((await get(path, { cookie: `vo_bucket=${bucket}` })).headers['x-seen-bucket'], String(bucket))
    }
    // max-age=1 and Varnish's default grace: expired but in grace, no stale-while-revalidate, so vcl_hit
    // restarts the request to fetch now. The cookies are gone by then; the bucket must not be.
    await new Promise((resolve) => setTimeout(resolve, 2_500))
    const refreshed = await get('/restart/cookie', { cookie: 'vo_bucket=2' })
    t.equal(refreshed.status, 200)
    t.equal(refreshed.headers['x-seen-bucket'], '2', 'the origin saw the same bucket after the restart')
    t.notOk(refreshed.headers['set-cookie'], 'and no new bucket was drawn')
    t.equal(refreshed.headers['x-edge-cache'], 'MISS', 'a fetch, not the stale copy')
    t.same(fetchesOf('/restart/cookie'), { 0: 1, 1: 1, 2: 2, 3: 1 })

    const cookieless = await get('/restart/new')
    const drawn = newBucket(t, cookieless)
    t.ok(drawn !== undefined, 'a new visitor gets its cookie through a restart')
    t.equal(cookieless.headers['x-seen-bucket'], String(drawn), 'for the bucket the origin saw')
    t.equal(cookieless.headers['x-edge-cache'], 'MISS')
    t.equal(fetchesOf('/restart/new')[String(drawn)], 2, 'the refresh of that bucket\'s copy')
  })

  await t.test(`over 400 cookie-less requests every bucket 0..${BUCKETS - 1} occurs, and no other`, async (t) => {
    const counts = new Map<number, number>()
    const mismatches: string[] = []
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < 400) {
        next++
        const reply = await get('/rand/page')
        const cookie = String(reply.headers['set-cookie']?.[0] ?? '')
        const bucket = Number(COOKIE.exec(cookie)?.[1] ?? NaN)
        counts.set(bucket, (counts.get(bucket) ?? 0) + 1)
        if (reply.headers['x-seen-bucket'] !== String(bucket)) mismatches.push(`${cookie} / ${reply.headers['x-seen-bucket']}`)
      }
    }
    await Promise.all(Array.from({ length: 4 }, worker))
    t.same([...counts.keys()].sort(), [0, 1, 2, 3], `buckets seen: ${JSON.stringify(Object.fromEntries(counts))}`)
    t.equal([...counts.values()].reduce((a, b) => a + b, 0), 400)
    for (const [bucket, n] of counts) t.ok(n >= 60, `bucket ${bucket}: ${n} of 400, near a quarter`)
    t.same(mismatches, [], 'the origin saw each request\'s bucket')
  })
}
