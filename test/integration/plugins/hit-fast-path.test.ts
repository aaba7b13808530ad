import net from 'node:net'
import t from 'tap'
import { buildApp, loggerOptions } from '../../../app.ts'
import { testConfig } from '../../helper.ts'
import { captureLogLines } from '../../support/log-lines.ts'
import { rawRequest } from '../../support/raw-http.ts'

const PAGE = '/crm/dentists/austin'
/** Headers that belong to the connection, not to the response the origin chose. */
const CONNECTION_HEADERS = new Set(['date', 'connection', 'keep-alive', 'transfer-encoding'])
const responseHeaders = (headers: Record<string, unknown>): Record<string, string> => {
  const entries = Object.entries(headers).map(([k, v]) => [k, String(v)] as const)
  return Object.fromEntries(entries.filter(([name]) => !CONNECTION_HEADERS.has(name)).sort(([a], [b]) => a.localeCompare(b)))
}

t.test('fresh L1 hits are answered in front of Fastify, exactly as the Fastify route answers them', async (t) => {
  const { lines, stream } = captureLogLines()
  // The test's requests come from 127.0.0.1, here the trusted proxy whose X-Request-Id is logged.
  const config = testConfig({ REDIS_URL: 'off', LOG_LEVEL: 'info', TRUST_PROXY: '127.0.0.1' })
  const app = await buildApp(config, { logger: { ...(loggerOptions(config, false) as object), stream } })
  t.teardown(() => app.close())
  const base = await app.listen({ port: 0, host: '127.0.0.1' })

  const miss = await fetch(`${base}${PAGE}`)
  t.equal(miss.headers.get('x-cache'), 'MISS')
  await miss.arrayBuffer()
  t.equal(app.hitFastPath.served, 0, 'a miss goes through Fastify')

  lines.length = 0
  // Each coding is compared with the Fastify route's answer to the same Accept-Encoding.
  let hitBody: Buffer = Buffer.alloc(0)
  for (const acceptEncoding of ['', 'gzip', 'br, gzip']) {
    const hit = await rawRequest(`${base}${PAGE}`, { headers: { 'x-request-id': 'cdn-7', 'accept-encoding': acceptEncoding } })
    const viaFastify = await app.inject({ url: PAGE, headers: { 'accept-encoding': acceptEncoding } }) // inject always runs Fastify's route
    t.equal(viaFastify.headers['x-cache'], 'HIT-L1')
    t.equal(hit.status, 200)
    t.same(responseHeaders(hit.headers), responseHeaders(viaFastify.headers), `the same headers as the Fastify route (Accept-Encoding: ${acceptEncoding})`)
    t.same(hit.body, viaFastify.rawPayload, 'the same bytes')
    t.equal(hit.headers['content-encoding'], { '': undefined, gzip: 'gzip', 'br, gzip': 'br' }[acceptEncoding])
    if (acceptEncoding === '') hitBody = hit.body

    const etag = String(hit.headers.etag)
    const notModified = await rawRequest(`${base}${PAGE}`, { headers: { 'if-none-match': etag, 'accept-encoding': acceptEncoding } })
    t.equal(notModified.status, 304)
    t.equal(notModified.body.byteLength, 0)
    t.same(responseHeaders(notModified.headers), responseHeaders((await app.inject({ url: PAGE, headers: { 'if-none-match': etag, 'accept-encoding': acceptEncoding } })).headers), '304s agree too')

    const head = await rawRequest(`${base}${PAGE}`, { method: 'HEAD', headers: { 'accept-encoding': acceptEncoding } })
    t.equal(head.headers['content-length'], String(hit.body.length), 'HEAD carries the GET length')
    t.equal(head.headers.etag, etag, 'and its ETag')
    t.equal(head.body.byteLength, 0)
  }
  t.equal(app.hitFastPath.served, 9, 'the hits did not reach Fastify')
  t.match(lines, [{ msg: 'request', reqId: 'cdn-7', method: 'GET', url: PAGE, route: '/*', status: 200, cache: 'HIT-L1', segment: 'general' }], 'one log line, as for any request')

  // A segment cookie changes nothing on a page that is the same for every segment: the same public hit.
  const seoByCookie = await rawRequest(`${base}${PAGE}`, { headers: { cookie: 'user_segment=smb' } })
  t.same(seoByCookie.body, hitBody)
  t.equal(seoByCookie.headers['x-cache'], 'HIT-L1', 'one entry for every segment')
  t.equal(seoByCookie.headers['cache-control'], (await app.inject({ url: PAGE })).headers['cache-control'], 'still public')
  // On a page that differs by segment, the cookie-chosen copy is private on both paths.
  const byCookie = await rawRequest(`${base}/crm`, { headers: { cookie: 'user_segment=smb' } })
  t.equal(byCookie.headers['x-cache'], 'MISS', 'the smb entry renders through Fastify')
  for (const acceptEncoding of ['', 'gzip']) {
    const cookieHit = await rawRequest(`${base}/crm`, { headers: { cookie: 'user_segment=smb', 'accept-encoding': acceptEncoding } })
    t.equal(cookieHit.headers['x-cache'], 'HIT-L1')
    t.equal(cookieHit.headers['cache-control'], 'private, max-age=60')
    t.equal(cookieHit.headers['cdn-cache-control'], undefined)
    const viaFastify = await app.inject({ url: '/crm', headers: { cookie: 'user_segment=smb', 'accept-encoding': acceptEncoding } })
    t.same(responseHeaders(cookieHit.headers), responseHeaders(viaFastify.headers))
    t.same(cookieHit.body, viaFastify.rawPayload)
  }
  t.equal(app.hitFastPath.served, 12)

  // Everything else is Fastify's: queries (utm rules, redirects), other methods, non-canonical paths.
  const utm = await fetch(`${base}${PAGE}?utm_source=linkedin`, { redirect: 'manual' })
  t.equal(utm.status, 301)
  t.equal((await fetch(`${base}${PAGE}`, { method: 'POST' })).status, 404)
  t.equal((await fetch(`${base}/CRM/Dentists/Austin`, { redirect: 'manual' })).status, 301)
  t.equal(app.hitFastPath.served, 12)
  const before = (await app.inject({ url: '/metrics' })).body
  for (const path of ['/health/live', '/metrics', '/openapi.json', '/robots.txt', '/sitemap.xml', '/sitemaps/0.xml']) await (await fetch(`${base}${path}`)).arrayBuffer()
  const after = (await app.inject({ url: '/metrics' })).body
  const l1Misses = (body: string) => /variant_origin_cache_requests_total\{tier="l1",result="miss"\} (\d+)/.exec(body)?.[1]
  t.equal(l1Misses(after), l1Misses(before), 'other routes never touch the page cache')

  const scrape = (await app.inject({ url: '/metrics' })).body
  t.match(scrape, /http_request_duration_seconds_count\{method="GET",route="\/\*",status_code="200",cache="HIT-L1"\} 12\n/, 'fast-path and Fastify-path hits land in one histogram series')
  t.match(scrape, /variant_origin_cache_requests_total\{tier="l1",result="hit"\} 21\n/)
})

t.test('while the app closes, Fastify answers (and says it is closing)', async (t) => {
  const app = await buildApp(testConfig({ REDIS_URL: 'off' }), { logger: false })
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  await (await fetch(`${base}${PAGE}`)).arrayBuffer()
  await (await fetch(`${base}${PAGE}`)).arrayBuffer()
  t.equal(app.hitFastPath.served, 1)
  await app.close()
  t.equal(app.hitFastPath.served, 1)
})

t.test('L2 hits are answered in front of Fastify too; a miss reaches the route with the lookup already made', async (t) => {
  const { buildTestApp } = await import('../../helper.ts')
  const shared = { REDIS_KEY_PREFIX: `vo-fastpath-${process.pid}:` }
  const a = await buildTestApp(t, shared)
  const b = await buildTestApp(t, { ...shared, DATABASE_URL: a.database.connectionString, DB_POOL_MAX: '1' })
  const base = await b.listen({ port: 0, host: '127.0.0.1' })

  t.equal((await a.inject({ url: PAGE })).headers['x-cache'], 'MISS', 'instance A renders into L2')
  const fromL2 = await rawRequest(`${base}${PAGE}`, { headers: { 'accept-encoding': 'gzip, br' } })
  t.equal(fromL2.headers['x-cache'], 'HIT-L2')
  t.equal(fromL2.headers['content-encoding'], 'br', 'the coded bytes travel through Redis')
  t.equal(b.hitFastPath.served, 1, 'answered before Fastify')
  const viaFastify = await a.inject({ url: PAGE, headers: { 'accept-encoding': 'gzip, br' } })
  t.same(fromL2.body, viaFastify.rawPayload)
  const { 'x-cache': _l2, ...l2Headers } = responseHeaders(fromL2.headers)
  const { 'x-cache': _l1, ...l1Headers } = responseHeaders(viaFastify.headers)
  t.same(l2Headers, l1Headers, 'the same headers but X-Cache')
  t.equal((await fetch(`${base}${PAGE}`).then(async (r) => (await r.arrayBuffer(), r.headers.get('x-cache')))), 'HIT-L1', 'and now in L1')

  const cold = await fetch(`${base}/payroll/gyms/denver`)
  await cold.arrayBuffer()
  t.equal(cold.headers.get('x-cache'), 'MISS', 'a miss is rendered by the Fastify route')
  const scrape = (await b.inject({ url: '/metrics' })).body
  t.match(scrape, /variant_origin_cache_requests_total\{tier="l2",result="miss"\} 1\n/, 'the miss asked L2 once, not again in the route')
  t.match(scrape, /variant_origin_cache_requests_total\{tier="l2",result="hit"\} 1\n/)
  t.equal(b.hitFastPath.served, 2)
})

t.test('L1 hits are answered in a batch per event-loop turn: all of them, in order on a pipelined connection, none to a client already gone', async (t) => {
  const { lines, stream } = captureLogLines()
  const config = testConfig({ REDIS_URL: 'off', LOG_LEVEL: 'info' })
  const app = await buildApp(config, { logger: { ...(loggerOptions(config, false) as object), stream } })
  t.teardown(() => app.close())
  const base = new URL(await app.listen({ port: 0, host: '127.0.0.1' }))
  const other = '/payroll/clinics/dallas'
  for (const path of [PAGE, other]) await (await fetch(new URL(path, base))).arrayBuffer()
  const served = app.hitFastPath.served

  /** Sends `raw` on a new connection; resolves with what came back once the server ends it. */
  const exchange = (raw: string, destroyAfterWrite = false): Promise<string> =>
    new Promise((resolve, reject) => {
      const socket = net.connect(Number(base.port), base.hostname, () => {
        socket.write(raw)
        if (destroyAfterWrite) {
          socket.destroy()
          resolve('')
        }
      })
      const chunks: Buffer[] = []
      socket.on('data', (chunk: Buffer) => chunks.push(chunk))
      socket.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')))
      socket.on('error', reject)
    })
  const get = (path: string, last = false) => `GET ${path} HTTP/1.1\r\nHost: origin\r\n${last ? 'Connection: close\r\n' : ''}\r\n`

  // 20 clients at once, 5 of which hang up right after sending: the 15 others get their page.
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => exchange(get(PAGE, true), i % 4 === 0)))
  const answered = answers.filter((answer) => answer !== '')
  t.equal(answered.length, 15)
  t.ok(answered.every((answer) => answer.startsWith('HTTP/1.1 200 OK') && /\r\nx-cache: HIT-L1\r\n/.test(answer)), 'each a 200 from L1')

  // Three requests in one write on one connection: three answers, in the order asked.
  const pipelined = await exchange(get(PAGE) + get(other) + get(PAGE, true))
  const statusLines = pipelined.match(/HTTP\/1\.1 \d{3}/g) ?? []
  t.same(statusLines, ['HTTP/1.1 200', 'HTTP/1.1 200', 'HTTP/1.1 200'])
  const pages = [...pipelined.matchAll(/<link rel="canonical" href="[^"]*?(\/[a-z/-]+)"/g)].map((m) => m[1])
  t.same(pages, [PAGE, other, PAGE], 'in order')

  t.ok(app.hitFastPath.served >= served + 18, 'all in front of Fastify')
  t.same(lines.filter((line) => Number(line.level) >= 50), [], 'nothing logged as an error')
  t.equal((await fetch(new URL(PAGE, base))).status, 200, 'and the server serves on')
})
