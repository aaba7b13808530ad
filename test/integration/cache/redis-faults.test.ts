// Redis killed, paused and restarted under a running origin: pages keep coming from L1 and
// PostgreSQL within the budget, readiness says degraded, and the origin reconnects by itself.

import t from 'tap'
import { buildApp, loggerOptions } from '../../../app.ts'
import { deleteKeysWithPrefix } from '../../support/redis-keys.ts'
import { buildTestApp, testConfig } from '../../helper.ts'
import { captureLogLines } from '../../support/log-lines.ts'
import { privateRedis } from '../../support/redis-server.ts'
import { until as waitUntil } from '../../support/until.ts'

const redis = await privateRedis(t)
const env = { REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'vo-faults:' }

const until = (what: string, check: () => boolean | Promise<boolean>) => waitUntil(what, check, { timeoutMs: 15_000, intervalMs: 100 })

t.test('killed, restarted, paused', async (t) => {
  const a = await buildTestApp(t, env)
  const b = await buildTestApp(t, { ...env, DATABASE_URL: a.database.connectionString, DB_POOL_MAX: '1' })
  t.equal((await a.inject({ url: '/crm/dentists/boston' })).headers['x-cache'], 'MISS')

  await redis.kill()
  t.equal((await a.inject({ url: '/crm/dentists/boston' })).headers['x-cache'], 'HIT-L1', 'warm keys from L1')
  const started = Date.now()
  const cold = await a.inject({ url: '/crm/dentists/denver' })
  t.equal(cold.statusCode, 200, 'cold keys rendered from PostgreSQL')
  t.ok(Date.now() - started < 1000, `without waiting on Redis (${Date.now() - started} ms)`)
  const ready = await a.inject({ url: '/health/ready' })
  t.equal(ready.statusCode, 200)
  t.equal(ready.json().status, 'degraded')

  await redis.start()
  await until('the origin to reconnect', async () => (await a.inject({ url: '/health/ready' })).json().status === 'ok')
  await until('the second instance to reconnect', async () => (await b.inject({ url: '/health/ready' })).json().status === 'ok')
  t.equal((await a.inject({ url: '/crm/gyms/denver' })).headers['x-cache'], 'MISS')
  t.equal((await b.inject({ url: '/crm/gyms/denver' })).headers['x-cache'], 'HIT-L2', 'L2 shared again after the restart')

  redis.pause()
  try {
    const times: number[] = []
    for (const city of ['miami', 'seattle', 'portland']) {
      const began = Date.now()
      const res = await a.inject({ url: `/payroll/gyms/${city}` })
      times.push(Date.now() - began)
      t.equal(res.statusCode, 200)
    }
    t.ok(Math.max(...times) < 1000, `paused Redis costs command timeouts, not hangs: ${times.join(', ')} ms`)
    t.equal((await a.inject({ url: '/health/ready' })).json().status, 'degraded')
  } finally {
    redis.resume()
  }
  await until('Redis answering again after the pause', async () => (await a.inject({ url: '/health/ready' })).json().status === 'ok')
})

t.test('Redis down while an instance starts: it still hears invalidations once Redis is back', async (t) => {
  const late = await privateRedis(t)
  await late.kill()
  // A short subscribe timeout, so the first SUBSCRIBE fails (and is retried) within a second.
  const env = { REDIS_URL: late.url, REDIS_KEY_PREFIX: 'vo-faults-late:', REDIS_SUBSCRIBE_TIMEOUT_MS: '300' }
  const { lines, stream } = captureLogLines()
  const config = testConfig({ ...env, LOG_LEVEL: 'warn' })
  const a = await buildApp(config, { logger: { ...(loggerOptions(config, false) as object), stream } })
  t.teardown(async () => {
    await a.close()
    await deleteKeysWithPrefix(late.url, config.redisKeyPrefix)
  })
  await a.ready()
  const path = '/crm/dentists/austin'
  t.equal((await a.inject({ url: path })).statusCode, 200, 'served while Redis is down')
  t.ok(a.pages.freshLocal(path, 'general'), 'in L1')
  const failedSubscribe = () => lines.some((line) => typeof line.msg === 'string' && line.msg.startsWith('not subscribed to invalidations yet'))
  await until('the first SUBSCRIBE to fail while Redis is down', failedSubscribe)
  t.ok(failedSubscribe(), 'the subscriber said it is not subscribed yet and will try again')
  await late.start()
  const b = await buildTestApp(t, { ...env, DATABASE_URL: a.database.connectionString, DB_POOL_MAX: '1', SEED_DEMO: 'false' })
  await until("a purge on the other instance to reach this one's L1", async () => {
    await b.pages.purge([path], [])
    return a.pages.freshLocal(path, 'general') === undefined
  })
  t.equal(a.pages.freshLocal(path, 'general'), undefined, "a purge on the other instance evicted this one's L1 copy")
})
