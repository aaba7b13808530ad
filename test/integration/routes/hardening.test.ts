// What an attacker, a crawler and a busy operator found on the page path (issue 12): campaign redirects
// a shared cache could keep without what chose them, 404s filling Redis, query strings splitting the
// CDN cache, and errors a cache could keep.

import http from 'node:http'
import net from 'node:net'
import t from 'tap'
import { Redis } from 'ioredis'
import { buildTestApp, testConfig } from '../../helper.ts'
import { privateRedis } from '../../support/redis-server.ts'
import { until } from '../../support/until.ts'

const redis = await privateRedis(t)
const app = await buildTestApp(t, { REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'vo-hard:' })
const direct = new Redis(redis.url)
t.teardown(() => direct.disconnect())

/** Keys under this app's prefix, by SCAN. */
async function keys(prefix = 'vo-hard:'): Promise<string[]> {
  const found: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await direct.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    cursor = next
    found.push(...batch)
  } while (cursor !== '0')
  return found.sort()
}

t.test('a campaign URL: its redirect is never stored by a shared cache, whatever chose the segment', async (t) => {
  const table: Array<[string, Record<string, string>, { cookie: string | undefined }]> = [
    ['no segment yet: the rule sets the cookie', {}, { cookie: 'user_segment=enterprise; Path=/; Max-Age=2592000; SameSite=Lax; HttpOnly; Secure' }],
    ['a segment cookie already', { cookie: 'user_segment=smb' }, { cookie: undefined }],
    ['a segment header', { 'x-segment': 'general' }, { cookie: undefined }],
    ['an unknown header value: the rule still decides', { 'x-segment': 'martians' }, { cookie: 'user_segment=enterprise; Path=/; Max-Age=2592000; SameSite=Lax; HttpOnly; Secure' }],
  ]
  for (const query of ['utm_source=linkedin', 'UTM_SOURCE=LinkedIn', 'Utm_Source=linkedin&utm_medium=cpc']) {
    for (const [name, headers, expected] of table) {
      const res = await app.inject({ url: `/crm?${query}`, headers })
      t.equal(res.statusCode, 301, `${query}, ${name}`)
      t.equal(res.headers.location, '/crm')
      t.equal(res.headers['cache-control'], 'private, no-store', `${query}, ${name}: never public`)
      t.notOk('cdn-cache-control' in res.headers || 'surrogate-control' in res.headers)
      t.equal(res.headers['set-cookie'], expected.cookie, `${query}, ${name}: the cookie only when the rule chose the segment`)
    }
  }
  const noRule = await app.inject({ url: '/crm?utm_source=newsletter' })
  t.equal(noRule.statusCode, 301)
  t.match(noRule.headers['cache-control'], /^public, max-age=60, s-maxage=86400/, 'a utm_source no rule names: the same redirect for everyone, cacheable')
  t.notOk('set-cookie' in noRule.headers)
  t.notOk('x-segment' in noRule.headers, 'a shared redirect names no segment: it does not vary by one')
})

t.test('query strings cannot split the CDN cache: every parameter not on QUERY_ALLOWLIST is redirected away', async (t) => {
  for (const url of ['/crm?x=1', '/crm?x=1&y=2', '/crm?utm_campaign=a&x=1', '/crm/dentists/austin?page=2', '/crm?%00=1']) {
    const res = await app.inject({ url })
    t.equal(res.statusCode, 301, url)
    t.equal(res.headers.location, url.split('?')[0], `${url}: to the bare path`)
    t.match(res.headers['cache-control'], /^public, max-age=60, s-maxage=86400/, `${url}: the same cacheable 301 as tracking parameters`)
  }
  const allowing = await buildTestApp(t, { REDIS_URL: 'off', QUERY_ALLOWLIST: 'page, Sort' })
  const kept = await allowing.inject({ url: '/crm?SORT=asc&x=1&Page=2&gclid=z' })
  t.equal(kept.statusCode, 301)
  t.equal(kept.headers.location, '/crm?page=2&sort=asc', 'allowed names kept, in lower case, sorted; the rest dropped')
  t.equal((await allowing.inject({ url: '/crm?page=2&sort=asc' })).statusCode, 200, 'the canonical form is served')
  t.throws(() => testConfig({ QUERY_ALLOWLIST: 'utm_source' }), /QUERY_ALLOWLIST: utm_source is a tracking parameter/)
  t.throws(() => testConfig({ QUERY_ALLOWLIST: 'a b' }), /QUERY_ALLOWLIST: "a b" is not a parameter name/)
})

t.test('a stream of junk paths leaves Redis flat: 404s stay in L1, tag indexes hold only live keys', async (t) => {
  await app.inject({ url: '/crm/dentists/austin' }) // one real page, so the tag indexes exist
  const before = await keys()
  const memoryBefore = Number(/used_memory:(\d+)/.exec(await direct.info('memory'))?.[1])
  for (let i = 0; i < 500; i++) {
    const res = await app.inject({ url: `/crm/${i.toString(36)}x${(i * 7919).toString(36)}/junk-${i}` })
    if (res.statusCode !== 404) t.fail(`junk path ${i}: ${res.statusCode}`)
  }
  const after = await keys()
  t.same(after, before, '500 junk paths: not one Redis key more (404s are not stored per path in L2)')
  t.notOk(after.some((k) => k.includes('t-not-found')), 'no tag index of 404s')
  const memoryAfter = Number(/used_memory:(\d+)/.exec(await direct.info('memory'))?.[1])
  t.ok(memoryAfter - memoryBefore < 64 * 1024, `Redis memory flat: ${memoryAfter - memoryBefore} bytes more`)
  const again = await app.inject({ url: '/crm/0x0/junk-0' })
  t.equal(again.headers['x-cache'], 'HIT-L1', 'a repeated junk path is still answered from L1')
  t.match(again.headers['cache-control'], /^public, max-age=60, s-maxage=60/, 'the deliberate negative cache, briefly')
})

t.test('a tag index never outlives or outgrows its members', async (t) => {
  const short = await buildTestApp(t, {
    REDIS_URL: redis.url,
    REDIS_KEY_PREFIX: 'vo-hard-tags:',
    ORIGIN_FRESH_SECONDS: '1',
    STALE_WHILE_REVALIDATE_SECONDS: '0',
    STALE_IF_ERROR_SECONDS: '1',
  })
  const first = '/payroll/gyms/austin'
  const second = '/payroll/gyms/boston'
  await short.inject({ url: first })
  const index = 'vo-hard-tags:ztag:v-payroll'
  t.equal(await direct.zcard(index), 1)
  const pttl = await direct.pttl(index) // the entry lives ORIGIN_FRESH (1 s, jittered up to 15%) + STALE_IF_ERROR (1 s)
  t.ok(pttl > 0 && pttl <= 3_000, `the index expires with its last member (${pttl} ms)`)
  const [entry] = await keys('vo-hard-tags:page:')
  t.ok(entry, 'the entry is in L2')
  await until('the first entry to expire', async () => (await direct.exists(entry!)) === 0, { timeoutMs: 10_000 })
  await short.inject({ url: second })
  const members = await direct.zrange(index, 0, -1)
  t.equal(members.length, 1, 'the expired member was dropped when the next one was written')
  t.match(members[0], second)
})

t.test('errors are never cacheable and never echo the request', async (t) => {
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  const raw = (request: string): Promise<string> =>
    new Promise((resolve, reject) => {
      const socket = net.connect(Number(new URL(base).port), '127.0.0.1')
      let data = ''
      socket.on('data', (chunk) => (data += chunk.toString('latin1')))
      socket.on('end', () => resolve(data))
      socket.on('close', () => resolve(data))
      socket.on('error', reject)
      socket.end(request)
    })
  const get = (path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> =>
    new Promise((resolve, reject) => {
      const req = http.request(`${base}${path}`, { headers, agent: false }, (res) => {
        let body = ''
        res.on('data', (c: Buffer) => (body += c.toString()))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      })
      req.on('error', reject)
      req.end()
    })

  const badUrl = await get('/%ff%fe')
  t.equal(badUrl.status, 400, 'not valid percent-encoded UTF-8')
  t.equal(badUrl.headers['cache-control'], 'no-store')
  t.notMatch(badUrl.body, /%ff|%fe/i, 'the URL is not echoed')
  for (const path of ['/%00', '/crm%00x', '/%E2%82%AC', '/crm/a%0d%0aset-cookie:x=1']) {
    const res = await get(path)
    t.equal(res.status, 404, `${path}: can never be a page`)
    t.equal(res.headers['cache-control'], 'no-store', `${path}: an error, not a negative cache`)
  }
  const long = await get(`/${'a'.repeat(10_240)}`)
  t.equal(long.status, 404, 'a 10 KB path: longer than any page path can be')
  t.equal(long.headers['cache-control'], 'no-store')
  t.notMatch(long.body, /aaaa/)

  const tooLarge = await raw(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`)
  t.match(tooLarge, /^HTTP\/1\.1 431 /, 'headers over the limit')
  t.match(tooLarge, /\r\nCache-Control: no-store\r\n/i)
  const garbage = await raw('NOT HTTP AT ALL\r\n\r\n')
  t.match(garbage, /^HTTP\/1\.1 400 /, 'a malformed request')
  t.match(garbage, /\r\nCache-Control: no-store\r\n/i)
  t.notMatch(garbage, /NOT HTTP/)

  const big = await new Promise<{ status: number; headers: http.IncomingHttpHeaders }>((resolve, reject) => {
    const req = http.request(`${base}/events`, { method: 'POST', headers: { 'content-type': 'application/json' }, agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }))
    })
    req.on('error', reject)
    req.end(JSON.stringify({ events: [], pad: 'x'.repeat(200_000) }))
  })
  t.equal(big.status, 413, 'a body over its limit')
  t.equal(big.headers['cache-control'], 'no-store')
})
