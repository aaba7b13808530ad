// Who the client is (issue 12 items 6 and 9e): X-Forwarded-For and X-Request-Id are believed only from
// a proxy TRUST_PROXY names. By default no peer is trusted: rotating X-Forwarded-For from one peer is
// one client for the POST /events rate limit, and a client's X-Request-Id never becomes a log line's id,
// on the Fastify route or on the hit fast path.

import http from 'node:http'
import t from 'tap'
import { Redis } from 'ioredis'
import type { FastifyInstance } from 'fastify'
import { buildApp, loggerOptions } from '../../../app.ts'
import { TEST_REDIS_URL, testConfig } from '../../helper.ts'
import { captureLogLines } from '../../support/log-lines.ts'
import { deleteKeysWithPrefix } from '../../support/redis-keys.ts'

const PAGE = '/crm/dentists/austin'
const raw = new Redis(TEST_REDIS_URL)
t.teardown(() => raw.disconnect())

/** The real app on a real socket, its log lines captured, its Redis keys removed afterwards. */
async function start(name: string, env: Record<string, string>, database: Record<string, string> = {}) {
  const { lines, stream } = captureLogLines()
  const prefix = `vo-test-${process.pid}-trust-${name}:`
  const config = testConfig({ REDIS_KEY_PREFIX: prefix, LOG_LEVEL: 'info', EVENTS_CONSUMER: 'false', EVENTS_RATE_LIMIT_PER_MINUTE: '5', ...database, ...env })
  const app = await buildApp(config, { logger: { ...(loggerOptions(config, false) as object), stream } })
  t.teardown(async () => {
    await app.close()
    await deleteKeysWithPrefix(TEST_REDIS_URL, prefix)
  })
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, base, prefix, lines }
}

const first = await start('default', {})
// The second app shares the first one's (embedded) database: one PostgreSQL start for the file.
const shared = { DATABASE_URL: first.app.database.connectionString, DB_POOL_MAX: '1', SEED_DEMO: 'false' }
const trusting = await start('trusting', { TRUST_PROXY: '127.0.0.1' }, shared)

let ts = Date.now()
const event = () => JSON.stringify({ type: 'view', path: '/crm', ts: ts++ })

/** A real request, from 127.0.0.1 unless `localAddress` says otherwise (Linux answers for all of 127/8). */
function request(base: string, path: string, options: { method?: string; headers?: Record<string, string>; body?: string; localAddress?: string } = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${base}${path}`, { method: options.method ?? 'GET', headers: options.headers, localAddress: options.localAddress, agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }))
    })
    req.on('error', reject)
    req.end(options.body)
  })
}
const postEvent = (base: string, forwardedFor: string) =>
  request(base, '/events', { method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-for': forwardedFor }, body: event() })
const rateKey = (prefix: string, address: string) => `${prefix}events-rate-limit:POST/events-${address}`

t.test('default: no peer is trusted; rotating X-Forwarded-For is still one client', async (t) => {
  const { base, prefix } = first
  const statuses: number[] = []
  for (let i = 1; i <= 6; i++) statuses.push((await postEvent(base, `203.0.113.${i}`)).status)
  t.same(statuses, [202, 202, 202, 202, 202, 429], 'six addresses claimed from 127.0.0.1: the sixth request is over the limit of 5')
  t.equal(Number(await raw.get(rateKey(prefix, '127.0.0.1'))), 6, 'counted under the socket address')
  t.equal(await raw.exists(rateKey(prefix, '203.0.113.1')), 0, 'never under a forwarded one')

  // A peer on a private network (the case the issue measured: 500 rotating addresses, all accepted).
  const fromPrivate = async (i: number) =>
    (await first.app.inject({ method: 'POST', url: '/events', remoteAddress: '10.1.2.3', headers: { 'content-type': 'application/json', 'x-forwarded-for': `198.51.100.${i}` }, payload: event() })).statusCode
  const privateStatuses: number[] = []
  for (let i = 1; i <= 6; i++) privateStatuses.push(await fromPrivate(i))
  t.same(privateStatuses, [202, 202, 202, 202, 202, 429], 'a peer on 10/8 does not choose its own key either')
})

t.test('TRUST_PROXY=127.0.0.1: the forwarded address is the client, from that peer only', async (t) => {
  const { app, base, prefix } = trusting
  const statuses: number[] = []
  for (let i = 1; i <= 6; i++) statuses.push((await postEvent(base, `203.0.113.${i}`)).status)
  t.same(statuses, [202, 202, 202, 202, 202, 202], 'six clients behind the trusted proxy: each its own key')
  t.equal(Number(await raw.get(rateKey(prefix, '203.0.113.1'))), 1)
  t.equal(await raw.exists(rateKey(prefix, '127.0.0.1')), 0, 'the proxy itself is not the client')

  const same: number[] = []
  for (let i = 0; i < 6; i++) same.push((await postEvent(base, '203.0.113.50')).status)
  t.same(same, [202, 202, 202, 202, 202, 429], 'one client behind the proxy is still limited')

  // Through two proxies, the first untrusted address from the right is the client: what a client
  // writes before the proxy's own entry does not count.
  await postEvent(base, '192.0.2.66, 203.0.113.77')
  t.equal(Number(await raw.get(rateKey(prefix, '203.0.113.77'))), 1, 'the address the trusted proxy saw')
  t.equal(await raw.exists(rateKey(prefix, '192.0.2.66')), 0, 'not the one the client wrote')

  // Another peer (not named) is its own client, whatever it forwards.
  for (let i = 1; i <= 2; i++) {
    await app.inject({ method: 'POST', url: '/events', remoteAddress: '10.9.9.9', headers: { 'content-type': 'application/json', 'x-forwarded-for': `198.51.100.${i}` }, payload: event() })
  }
  t.equal(Number(await raw.get(rateKey(prefix, '10.9.9.9'))), 2)
  t.equal(await raw.exists(rateKey(prefix, '198.51.100.1')), 0)
})

t.test('X-Request-Id: only from a trusted proxy, only a bounded token; on both paths', async (t) => {
  const ids = (lines: Array<Record<string, unknown>>) => lines.filter((l) => l.msg === 'request').map((l) => [l.reqId, l.cache])
  const generated = /^[0-9a-z]+-[0-9a-z]+-[0-9a-z]+$/

  // Not trusted: a MISS (the Fastify route) and a HIT-L1 (the fast path) both get generated ids.
  first.lines.length = 0
  const servedBefore = first.app.hitFastPath.served
  t.equal((await request(first.base, PAGE, { headers: { 'x-request-id': 'forged-1' } })).headers['x-cache'], 'MISS')
  t.equal((await request(first.base, PAGE, { headers: { 'x-request-id': 'forged-2' } })).headers['x-cache'], 'HIT-L1')
  t.equal(first.app.hitFastPath.served, servedBefore + 1, 'the hit was answered in front of Fastify')
  const untrusted = ids(first.lines)
  t.equal(untrusted.length, 2)
  for (const [id] of untrusted) t.match(id, generated, `a client's id is not used: ${id}`)
  t.same(untrusted.map(([, cache]) => cache), ['MISS', 'HIT-L1'])

  // Trusted: the proxy's id on both paths, when it is a bounded token.
  const app: FastifyInstance = trusting.app
  trusting.lines.length = 0
  t.equal((await request(trusting.base, PAGE, { headers: { 'x-request-id': 'cdn-1' } })).headers['x-cache'], 'MISS')
  const served = app.hitFastPath.served
  t.equal((await request(trusting.base, PAGE, { headers: { 'x-request-id': 'edge.pop:AMS-2_f81d4fae' } })).headers['x-cache'], 'HIT-L1')
  t.equal(app.hitFastPath.served, served + 1, 'the fast path answered')
  t.same(ids(trusting.lines), [['cdn-1', 'MISS'], ['edge.pop:AMS-2_f81d4fae', 'HIT-L1']])

  // Trusted peer, but not a bounded token: generated, on the fast path and on Fastify's route.
  for (const bad of ['a'.repeat(129), 'two words', 'id"with"quotes', 'caf\u00e9', '']) {
    trusting.lines.length = 0
    const headers = { 'x-request-id': bad }
    t.equal((await request(trusting.base, PAGE, { headers })).headers['x-cache'], 'HIT-L1')
    const viaFastify = await app.inject({ url: '/crm/dentists/boston', headers })
    t.equal(viaFastify.statusCode, 200)
    const logged = ids(trusting.lines)
    t.equal(logged.length, 2, JSON.stringify(bad).slice(0, 20))
    for (const [id] of logged) t.match(id, generated, `${JSON.stringify(bad).slice(0, 20)}: not a bounded token, so generated`)
  }
  t.equal(app.hitFastPath.served, served + 1 + 5, 'those hits too went through the fast path')

  // A peer TRUST_PROXY does not name, with a well-formed id: generated, on both paths.
  trusting.lines.length = 0
  t.equal((await request(trusting.base, PAGE, { headers: { 'x-request-id': 'forged-3' }, localAddress: '127.0.0.2' })).headers['x-cache'], 'HIT-L1')
  await app.inject({ url: PAGE, remoteAddress: '10.9.9.9', headers: { 'x-request-id': 'forged-4' } })
  const other = ids(trusting.lines)
  t.equal(other.length, 2)
  for (const [id] of other) t.match(id, generated, `an untrusted peer's id is not used: ${id}`)
})
