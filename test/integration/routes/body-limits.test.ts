// A request body over its route's limit, in bytes or in records, is a 413 (never a 400 or a 500),
// `no-store`, naming the limit to split by; nothing is written. Every admin POST route, found in the
// OpenAPI document so that a new one is covered too, and POST /events.

import t from 'tap'
import net from 'node:net'
import http from 'node:http'
import { buildTestApp } from '../../helper.ts'
import { rowsWritten } from '../../support/rows-written.ts'
import { EVENTS_BODY_LIMIT } from '../../../routes/events.ts'

const TOKEN = 'test-admin-token-0123456789'
const auth = { authorization: `Bearer ${TOKEN}` }
const MiB = 1024 * 1024
/** The documented byte limits (README, "Admin API and CLI"); every other admin route has the server's 1 MiB. */
const LIMITS: Record<string, number> = { '/admin/pages': 64 * MiB, '/admin/variants': 64 * MiB, '/admin/search-console': 128 * MiB }
const limitOf = (route: string) => LIMITS[route] ?? MiB
const describeLimit = (bytes: number) => `${bytes % MiB === 0 ? `${bytes / MiB} MiB` : `${bytes / 1024} KiB`} (${bytes} bytes) limit of POST`

const app = await buildTestApp(t, { ADMIN_TOKEN: TOKEN, EVENTS_CONSUMER: 'false', PURGE_TARGETS: 'varnish', VARNISH_PURGE_URL: 'http://127.0.0.1:9' })
const { db } = app.database
await app.listen({ port: 0, host: '127.0.0.1' })
const { port } = app.server.address() as net.AddressInfo

const written = () => rowsWritten(db)

const adminPostRoutes = Object.entries((await app.inject({ url: '/openapi.json' })).json().paths as Record<string, Record<string, unknown>>)
  .filter(([path, methods]) => path.startsWith('/admin/') && 'post' in methods)
  .map(([path]) => path)

interface Answer {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

/** A request over a socket that declares `length` bytes of body and sends only `sent` of them: the limit is checked on the declaration. */
function declared(route: string, length: number, sent = '{"x":'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    let raw = ''
    socket.setEncoding('latin1')
    socket.on('data', (chunk) => {
      raw += chunk
      const end = raw.indexOf('\r\n\r\n')
      if (end === -1) return
      const length = Number(/\r\ncontent-length: (\d+)/i.exec(raw.slice(0, end))?.[1] ?? 0)
      if (raw.length < end + 4 + length) return
      const [statusLine, ...lines] = raw.slice(0, end).split('\r\n')
      const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]))
      socket.destroy()
      resolve({ status: Number(statusLine!.split(' ')[1]), headers, body: raw.slice(end + 4, end + 4 + length) })
    })
    socket.on('error', reject)
    socket.write(`POST ${route} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n${sent}`)
  })
}

/** A real body, sent chunked (no Content-Length): the limit is checked on the bytes as they arrive. */
function chunked(route: string, body: string, headers: Record<string, string> = auth): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ port, host: '127.0.0.1', path: route, method: 'POST', headers: { ...headers, 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
    })
    // The server may answer and close before the whole body is written.
    req.on('error', (err) => ((err as NodeJS.ErrnoException).code === 'EPIPE' || (err as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(err)))
    for (let i = 0; i < body.length; i += 64 * 1024) req.write(body.slice(i, i + 64 * 1024))
    req.end()
  })
}

t.test('the admin POST routes are all found', async (t) => {
  t.ok(adminPostRoutes.length >= 5, adminPostRoutes.join(', '))
  for (const route of ['/admin/pages', '/admin/variants', '/admin/segments', '/admin/search-console', '/admin/purge']) t.ok(adminPostRoutes.includes(route), route)
})

t.test('every admin route: a body over its byte limit is 413, no-store, naming the limit', async (t) => {
  const before = await written()
  for (const route of adminPostRoutes) {
    const limit = limitOf(route)
    const res = await declared(route, limit + 1)
    t.equal(res.status, 413, `${route}: 413 (${res.body})`)
    t.equal(res.headers['cache-control'], 'no-store', `${route}: no-store`)
    const body = JSON.parse(res.body)
    t.equal(body.error, 'TOO_LARGE', route)
    t.equal(body.message, `the request body is larger than the ${describeLimit(limit)} ${route}; send it in smaller batches`, route)
  }
  t.same(await written(), before, 'nothing written')
})

t.test('a real 2 MB body to a 1 MiB route, sent chunked: 413 as it arrives', async (t) => {
  const before = await written()
  const res = await chunked('/admin/segments', JSON.stringify({ segments: [{ slug: 'big', description: 'x'.repeat(2 * MiB) }] }))
  t.equal(res.status, 413)
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(JSON.parse(res.body).message, `the request body is larger than the ${describeLimit(MiB)} /admin/segments; send it in smaller batches`)
  const unauthenticated = await chunked('/admin/segments', JSON.stringify({ segments: [{ slug: 'big', description: 'x'.repeat(2 * MiB) }] }), {})
  t.equal(unauthenticated.status, 401, 'without the token: 401 before any of the body is read')
  t.same(await written(), before, 'nothing written')
})

t.test('a batch over its record limit is 413 naming the limit, however few bytes it is', async (t) => {
  const zeros = (n: number) => Array.from({ length: n }, () => 0)
  const table: Array<[string, object, RegExp]> = [
    ['/admin/pages', { pages: zeros(10_001) }, /^pages: at most 10,000 a request to POST \/admin\/pages \(got 10,001\); split the batch into requests of up to 10,000$/],
    ['/admin/variants', { variants: zeros(10_001) }, /^variants: at most 10,000 a request to POST \/admin\/variants \(got 10,001\)/],
    ['/admin/segments', { segments: zeros(1_001) }, /^segments: at most 1,000 a request to POST \/admin\/segments \(got 1,001\)/],
    ['/admin/purge', { paths: Array.from({ length: 1_001 }, (_, i) => `/p/${i}`) }, /^paths: at most 1,000 a request to POST \/admin\/purge \(got 1,001\)/],
    ['/admin/purge', { tags: Array.from({ length: 1_001 }, (_, i) => `t-${i}`) }, /^tags: at most 1,000 a request to POST \/admin\/purge \(got 1,001\)/],
    ['/admin/search-console', { startDate: '2026-10-01', endDate: '2026-10-31', rows: zeros(250_001) }, /^rows: at most 250,000 a request to POST \/admin\/search-console \(got 250,001\)/],
  ]
  const before = await written()
  for (const [route, payload, message] of table) {
    const res = await app.inject({ method: 'POST', url: route, headers: auth, payload })
    t.equal(res.statusCode, 413, `${route}: 413 (${res.body.slice(0, 200)})`)
    t.equal(res.headers['cache-control'], 'no-store')
    t.match(res.json(), { statusCode: 413, error: 'TOO_LARGE', message }, route)
  }
  // The issue's case: 2 MB of small pages is 45,000 records, over the 10,000 a request.
  const pages = Array.from({ length: 45_000 }, (_, i) => ({ path: `/bulk/page-${i}`, kind: 'seo', title: 'T' }))
  const payload = JSON.stringify({ pages })
  t.ok(payload.length > 2_000_000, `${payload.length} bytes`)
  const res = await app.inject({ method: 'POST', url: '/admin/pages', headers: { ...auth, 'content-type': 'application/json' }, payload })
  t.equal(res.statusCode, 413, res.body.slice(0, 200))
  t.match(res.json().message, /^pages: at most 10,000 a request to POST \/admin\/pages \(got 45,000\)/)
  t.same(await written(), before, 'nothing written')
})

t.test('within the limits, a field over its own length is still a 400 naming record and field', async (t) => {
  const res = await app.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { pages: [{ path: '/big/one', kind: 'seo', title: 'T', body_html: 'x'.repeat(2 * MiB) }] } })
  t.equal(res.statusCode, 400)
  t.same(res.json().details, [{ record: 0, field: 'body_html', message: `must be at most 500000 characters (got ${2 * MiB})` }])
  // 10,000 records is within the limit: what is wrong with them is a 400 per record, not a 413.
  const atLimit = await app.inject({ method: 'POST', url: '/admin/pages', headers: auth, payload: { pages: Array.from({ length: 10_000 }, () => 0) } })
  t.equal(atLimit.statusCode, 400)
  t.match(atLimit.json(), { error: 'VALIDATION_FAILED', message: '10000 problem(s) in the pages batch; nothing was written' })
})

t.test('POST /events: 413 names its 64 KiB limit', async (t) => {
  const res = await app.inject({ method: 'POST', url: '/events', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ events: [], pad: 'x'.repeat(EVENTS_BODY_LIMIT) }) })
  t.equal(res.statusCode, 413)
  t.equal(res.headers['cache-control'], 'no-store')
  t.equal(res.json().message, `the request body is larger than the ${describeLimit(EVENTS_BODY_LIMIT)} /events; send it in smaller batches`)
})
