import t from 'tap'
import { buildTestApp } from '../helper.ts'

const busy = (ms: number): void => {
  const until = Date.now() + ms
  while (Date.now() < until) {
    // the event loop is blocked, as under a CPU-bound overload
  }
}
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

t.test('over the event-loop delay threshold: 503 + Retry-After + no-store, probes exempt, then recovery', async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off', LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS: '100', LOAD_SHED_SAMPLE_INTERVAL_MS: '200', LOAD_SHED_RETRY_AFTER_SECONDS: '7' })
  t.equal((await app.inject({ url: '/crm/dentists/austin' })).statusCode, 200, 'served while the loop is healthy')

  // under-pressure compares the mean of the loop-delay histogram (10 ms resolution) over each 200 ms
  // sample window with the threshold. A window holds at most ~21 samples, so one 3 s stall lifts its mean
  // past (21 * 10 + 3000) / 22 - 10 > 100 ms. The stall is recorded when the histogram's own timer next
  // fires, so the first or the second sample after the block sees it: poll until the shed shows. The
  // probes go in the same batch as the page, inside the one 200 ms window the pressure lasts.
  busy(3_000)
  const batch = () => Promise.all([app.inject({ url: '/crm/dentists/austin' }), app.inject({ url: '/health/live' }), app.inject({ url: '/metrics' })])
  let [shed, live, metrics] = await batch()
  for (let i = 0; i < 60 && shed.statusCode !== 503; i++) {
    await sleep(5);
    [shed, live, metrics] = await batch()
  }
  t.equal(shed.statusCode, 503)
  t.equal(shed.headers['retry-after'], '7')
  t.equal(shed.headers['cache-control'], 'no-store', 'the CDN must not store the 503; it serves its stale copy')
  t.match(shed.json(), { statusCode: 503, message: /overloaded \(eventLoopDelay\); retry after 7 s/ })
  t.equal(live.statusCode, 200, 'liveness is never shed: an overloaded origin is alive')
  t.equal(metrics.statusCode, 200, 'scrapes are never shed')

  let recovered = await app.inject({ url: '/crm/dentists/austin' })
  for (let i = 0; i < 40 && recovered.statusCode === 503; i++) {
    await sleep(100)
    recovered = await app.inject({ url: '/crm/dentists/austin' })
  }
  t.equal(recovered.statusCode, 200, 'served again once the delay drops')
})

t.test('every threshold at 0 turns load shedding off', async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off', LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS: '0' })
  busy(400)
  await sleep(20)
  t.equal((await app.inject({ url: '/crm/dentists/austin' })).statusCode, 200)
})

t.test('a memory threshold sheds too', async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off', LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS: '0', LOAD_SHED_MAX_RSS_BYTES: '1024', LOAD_SHED_SAMPLE_INTERVAL_MS: '20' })
  await sleep(60)
  const shed = await app.inject({ url: '/crm/dentists/austin' })
  t.equal(shed.statusCode, 503)
  t.match(shed.json().message, /rssBytes/)
})
