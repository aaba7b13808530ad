import t from 'tap'
import { buildTestApp } from '../../helper.ts'
import { until } from '../../support/until.ts'

/** Blocks the event loop for `ms`, as a CPU-bound overload does: a busy loop on purpose, not a poll. */
const busy = (ms: number): void => {
  const end = Date.now() + ms
  while (Date.now() < end) {
    // the event loop is blocked, as under a CPU-bound overload
  }
}
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

t.test('over the event-loop delay threshold: 503 + Retry-After + no-store, probes exempt, then recovery', async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off', LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS: '100', LOAD_SHED_SAMPLE_INTERVAL_MS: '200', LOAD_SHED_RETRY_AFTER_SECONDS: '7' })
  t.ok(app.hasDecorator('isUnderPressure'), 'a threshold set: under-pressure is registered')
  t.equal((await app.inject({ url: '/crm/dentists/austin' })).statusCode, 200, 'served while the loop is healthy')

  // under-pressure compares the mean of the loop-delay histogram (10 ms resolution) over each 200 ms
  // sample window with the threshold. A window holds at most ~21 samples, so one 3 s stall lifts its mean
  // past (21 * 10 + 3000) / 22 - 10 > 100 ms. The stall is recorded when the histogram's own timer next
  // fires, so the first or the second sample after the block sees it: poll until the shed shows. The
  // probes go in the same batch as the page, inside the one 200 ms window the pressure lasts.
  busy(3_000)
  const batch = () => Promise.all([app.inject({ url: '/crm/dentists/austin' }), app.inject({ url: '/health/live' }), app.inject({ url: '/metrics' })])
  let [shed, live, metrics] = await batch()
  await until(
    'the page to be shed (503) after a 3 s event-loop stall',
    async () => {
      if (shed.statusCode === 503) return true
      ;[shed, live, metrics] = await batch()
      return shed.statusCode === 503
    },
    { timeoutMs: 3_000, intervalMs: 5 },
  )
  t.equal(shed.statusCode, 503)
  t.equal(shed.headers['retry-after'], '7')
  t.equal(shed.headers['cache-control'], 'no-store', 'the CDN must not store the 503; it serves its stale copy')
  t.match(shed.json(), { statusCode: 503, message: /overloaded \(eventLoopDelay\); retry after 7 s/ })
  t.equal(live.statusCode, 200, 'liveness is never shed: an overloaded origin is alive')
  t.equal(metrics.statusCode, 200, 'scrapes are never shed')

  let recovered = await app.inject({ url: '/crm/dentists/austin' })
  await until(
    'the page to be served again once the loop delay drops',
    async () => {
      if (recovered.statusCode !== 503) return true
      recovered = await app.inject({ url: '/crm/dentists/austin' })
      return recovered.statusCode !== 503
    },
    { timeoutMs: 10_000, intervalMs: 100 },
  )
  t.equal(recovered.statusCode, 200, 'served again once the delay drops')
})

t.test('every threshold at 0 turns load shedding off', async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off', LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS: '0', LOAD_SHED_MAX_HEAP_USED_BYTES: '0', LOAD_SHED_MAX_RSS_BYTES: '0', LOAD_SHED_SAMPLE_INTERVAL_MS: '20' })
  t.same(
    [app.config.loadShedMaxEventLoopDelayMs, app.config.loadShedMaxHeapUsedBytes, app.config.loadShedMaxRssBytes],
    [0, 0, 0],
    'every threshold is 0, none replaced by a default',
  )
  // "Off" means the plugin returns before registering under-pressure at all (the other tests show the
  // same decorator present when a threshold is set): no sampler, no onRequest hook, no 503 to give.
  t.notOk(app.hasDecorator('isUnderPressure'), 'under-pressure is not registered')
  t.notOk(app.hasDecorator('memoryUsage'), 'nor sampling memory')
  // A stall and then a fixed sleep on purpose: this waits for nothing to happen (several 20 ms sample
  // intervals in which a sampler, were there one, would have seen the stall).
  busy(400)
  await sleep(100)
  t.equal((await app.inject({ url: '/crm/dentists/austin' })).statusCode, 200)
})

t.test('a memory threshold sheds too', async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off', LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS: '0', LOAD_SHED_MAX_RSS_BYTES: '1024', LOAD_SHED_SAMPLE_INTERVAL_MS: '20' })
  t.ok(app.hasDecorator('isUnderPressure'), 'one threshold set: under-pressure is registered')
  let shed = await app.inject({ url: '/crm/dentists/austin' })
  await until(
    'a memory sample over the 1 KiB RSS threshold to shed the page',
    async () => {
      if (shed.statusCode === 503) return true
      shed = await app.inject({ url: '/crm/dentists/austin' })
      return shed.statusCode === 503
    },
    { timeoutMs: 2_000, intervalMs: 10 },
  )
  t.equal(shed.statusCode, 503)
  t.match(shed.json().message, /rssBytes/)
})
