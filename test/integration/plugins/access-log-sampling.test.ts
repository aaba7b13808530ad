// ACCESS_LOG_HITS: cache hits may be logged one in N, or not at all; every other request is always
// logged, and the request metric counts every request whichever lines are written.

import t from 'tap'
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp, loggerOptions } from '../../../app.ts'
import { testConfig } from '../../helper.ts'
import { captureLogLines } from '../../support/log-lines.ts'
import { metricValue } from '../../support/metrics.ts'
import { deleteKeysWithPrefix } from '../../support/redis-keys.ts'

const PAGE = '/crm/dentists/austin'

interface Logged {
  app: FastifyInstance
  base: string
  lines: Array<Record<string, unknown>>
}

/** The real app, listening (hits take the fast path in front of Fastify), with its log lines captured. */
async function loggedApp(t: Test, env: Record<string, string>): Promise<Logged> {
  const { lines, stream } = captureLogLines()
  const config = testConfig({ LOG_LEVEL: 'info', ...env })
  const app = await buildApp(config, { logger: { ...(loggerOptions(config, false) as object), stream } })
  t.teardown(async () => {
    await app.close()
    if (config.redisUrl !== undefined) await deleteKeysWithPrefix(config.redisUrl, config.redisKeyPrefix)
  })
  const base = await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, base, lines }
}

async function get(base: string, path: string, headers: Record<string, string> = {}): Promise<Response> {
  const res = await fetch(`${base}${path}`, { headers })
  await res.arrayBuffer()
  return res
}

const requestLines = (lines: Array<Record<string, unknown>>) => lines.filter((l) => l.msg === 'request')
const hitLines = (lines: Array<Record<string, unknown>>) => requestLines(lines).filter((l) => l.cache === 'HIT-L1' || l.cache === 'HIT-L2')

t.test('sample:10: 100 L1 hits give 10 lines, every miss its line, and the metric counts all 100', async (t) => {
  const { app, base, lines } = await loggedApp(t, { REDIS_URL: 'off', ACCESS_LOG_HITS: 'sample:10' })
  t.equal((await get(base, PAGE)).headers.get('x-cache'), 'MISS')
  const missPaths: string[] = []
  for (let i = 0; i < 100; i++) {
    const hit = await get(base, PAGE)
    t.equal(hit.headers.get('x-cache'), 'HIT-L1')
    // A miss every tenth hit, each a page of its own that does not exist: 404, never sampled.
    if (i % 10 === 5) {
      missPaths.push(`/crm/no-such-page-${i}`)
      t.equal((await get(base, missPaths.at(-1)!)).status, 404)
    }
  }
  t.ok(app.hitFastPath.served >= 100, 'the hits were answered by the fast path')
  const hits = hitLines(lines)
  t.equal(hits.length, 10, 'one hit line in ten')
  t.ok(hits.every((l) => l.sampleRate === 10 && l.status === 200 && l.url === PAGE), 'each carries the rate it stands for')
  t.same(requestLines(lines).filter((l) => l.cache === 'MISS').map((l) => l.url), [PAGE, ...missPaths], 'every miss logged, none sampled')
  t.ok(requestLines(lines).filter((l) => l.cache === 'MISS').every((l) => l.sampleRate === undefined), 'a miss line is not a sample')
  t.equal(await metricValue(app, 'http_request_duration_seconds_count', { cache: 'HIT-L1' }), 100, 'the metric counts every hit')
  t.equal(await metricValue(app, 'http_request_duration_seconds_count', { cache: 'MISS' }), 1 + missPaths.length)

  // Hits through Fastify's route (inject never takes the fast path) share the same count: 1 in 10.
  lines.length = 0
  for (let i = 0; i < 20; i++) t.equal((await app.inject({ url: PAGE })).headers['x-cache'], 'HIT-L1')
  t.equal(hitLines(lines).length, 2, 'the route path samples too')
  t.equal(await metricValue(app, 'http_request_duration_seconds_count', { cache: 'HIT-L1' }), 120)
})

t.test('off: no hit lines at all (L2 hits, 304s and HEADs included), every other line kept, every request counted', async (t) => {
  // L1 entries are never fresh (L1_TTL_SECONDS=0), so every hit is an L2 read from the test Redis.
  const { app, base, lines } = await loggedApp(t, { ACCESS_LOG_HITS: 'off', L1_TTL_SECONDS: '0' })
  const miss = await get(base, PAGE)
  t.equal(miss.headers.get('x-cache'), 'MISS')
  const etag = miss.headers.get('etag')!
  for (let i = 0; i < 30; i++) t.equal((await get(base, PAGE)).headers.get('x-cache'), 'HIT-L2')
  for (let i = 0; i < 5; i++) t.equal((await get(base, PAGE, { 'if-none-match': etag })).status, 304)
  for (let i = 0; i < 5; i++) t.equal((await fetch(`${base}${PAGE}`, { method: 'HEAD' })).headers.get('x-cache'), 'HIT-L2')
  const redirect = await fetch(`${base}${PAGE}?utm_source=newsletter`, { redirect: 'manual' })
  t.equal(redirect.status, 301)
  t.equal(hitLines(lines).length, 0, 'no hit line')
  t.match(requestLines(lines), [{ cache: 'MISS', url: PAGE }, { status: 301 }], 'the miss and the redirect are logged')
  t.equal(requestLines(lines).length, 2)
  t.equal(await metricValue(app, 'http_request_duration_seconds_count', { cache: 'HIT-L2' }), 40, 'the metric counts every hit')
})

t.test('all (the default): every hit has its line, without a sample rate', async (t) => {
  const { base, lines } = await loggedApp(t, { REDIS_URL: 'off' })
  for (let i = 0; i < 6; i++) await get(base, PAGE)
  t.equal(requestLines(lines).length, 6)
  t.equal(hitLines(lines).length, 5)
  t.ok(requestLines(lines).every((l) => !('sampleRate' in l)))
})
