// The cache and purge paths against a real 3-master Redis Cluster (REDIS_CLUSTER_NODES): L2 shared
// by two instances, one render per cold key, purge by tag across slots, pub/sub invalidation.

import t from 'tap'
import { buildApp, loggerOptions } from '../../../app.ts'
import { buildTestApp, testConfig } from '../../helper.ts'
import { captureLogLines } from '../../support/log-lines.ts'
import { until } from '../../support/until.ts'
import { metricValue } from '../../support/metrics.ts'
import { privateRedisCluster, privateUnreadyCluster } from '../../support/redis-cluster.ts'

const cluster = await privateRedisCluster(t)
const env = { REDIS_CLUSTER_NODES: cluster.nodes, REDIS_KEY_PREFIX: 'vo-cluster:', ADMIN_TOKEN: 'cluster-test-token-0123456789' }

t.test('cache, stampede and purge on a Redis Cluster', async (t) => {
  const a = await buildTestApp(t, env)
  const b = await buildTestApp(t, { ...env, DATABASE_URL: a.database.connectionString, DB_POOL_MAX: '1' })
  // One CI run's first probe, right after start, came back degraded (a ping over the 50 ms command
  // timeout on a loaded machine, most likely; the detail was not kept). A probe is retried as an
  // orchestrator would; a degraded answer is reported with its detail, and the cluster must answer.
  await until('the cluster to answer /health/ready', async () => {
    const redis = (await a.inject({ url: '/health/ready' })).json().checks.redis
    if (redis.status !== 'ok') t.comment(`readiness probe: ${JSON.stringify(redis)}`)
    return redis.status === 'ok'
  }, { timeoutMs: 10_000, intervalMs: 200 })
  t.pass('the cluster answers')

  const paths = ['/crm/dentists/miami', '/payroll/gyms/austin', '/helpdesk/schools/dallas', '/crm/agencies/boston']
  for (const path of paths) {
    t.equal((await a.inject({ url: path })).headers['x-cache'], 'MISS')
    t.equal((await b.inject({ url: path })).headers['x-cache'], 'HIT-L2', `${path}: shared through the cluster`)
  }

  const renders = async () => (await metricValue(a, 'variant_origin_renders_total')) + (await metricValue(b, 'variant_origin_renders_total'))
  const before = await renders()
  const responses = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? a : b).inject({ url: '/payroll/retailers/seattle' })))
  t.ok(responses.every((r) => r.statusCode === 200))
  t.equal((await renders()) - before, 1, 'one render across two instances')

  const purge = await a.inject({ method: 'POST', url: '/admin/purge', headers: { authorization: `Bearer ${env.ADMIN_TOKEN}` }, payload: { tags: ['v-crm'] } })
  t.equal(purge.statusCode, 202)
  let onB: Awaited<ReturnType<typeof b.inject>> | undefined
  await until('the purge to reach the other instance', async () => ((onB = await b.inject({ url: '/crm/dentists/miami' })).headers['x-cache'] !== 'HIT-L1'), { timeoutMs: 1_000, intervalMs: 25 })
  t.equal(onB!.headers['x-cache'], 'MISS', 'purged from L1 on the other instance and from the cluster')
  t.equal((await b.inject({ url: '/payroll/gyms/austin' })).headers['x-cache'], 'HIT-L1', 'other verticals untouched')

  // Engagement events: the stream, its group and its dead-letter stream share one slot (hash tag);
  // XGROUP and XINFO, which carry no key position ioredis 5 knows of, reach the slot's owner.
  const accepted = await a.inject({ method: 'POST', url: '/events', payload: { events: [{ type: 'view', path: '/crm', ts: Date.now() }, { type: 'click', path: '/crm', ts: Date.now() }] } })
  t.equal(accepted.statusCode, 202)
  for (let i = 0; i < 200 && a.events.counters().processedEvents + b.events.counters().processedEvents < 2; i++) await new Promise((resolve) => setTimeout(resolve, 25))
  t.equal(a.events.counters().processedEvents + b.events.counters().processedEvents, 2, 'consumed by one of the two instances')
  t.same(await b.events.stats(), { length: 1, lag: 0, pending: 0 })
  const counted = await a.database.db.selectFrom('engagement_daily').select(['event_type', 'event_count']).orderBy('event_type').execute()
  t.same(counted.map((r) => [r.event_type, Number(r.event_count)]), [['click', 1], ['view', 1]])
})

t.test('a cluster that is not ready (cluster_state:fail) delays start by at most 5 s, then the origin runs degraded until it is', async (t) => {
  const unready = await privateUnreadyCluster(t)
  const { lines, stream } = captureLogLines()
  const config = testConfig({ REDIS_CLUSTER_NODES: unready.nodes, REDIS_KEY_PREFIX: 'vo-cluster-unready:', LOG_LEVEL: 'info' })
  const app = await buildApp(config, { logger: { ...(loggerOptions(config, false) as object), stream } })
  t.teardown(() => app.close())
  await app.ready() // ioredis's connect() alone never settles here: start would hang
  // Not a wall-clock bound on the whole start (embedded PostgreSQL's start varies with the machine's
  // load): the bounded wait is what gave up, and said so.
  const gaveUp = lines.find((line) => line.msg === 'redis unreachable at start (cache); running degraded until it comes back')
  t.match(gaveUp, { level: 40, err: { message: 'not ready within 5000 ms' } }, 'start waited 5 s for the cluster, then went on degraded')
  const degraded = await app.inject({ url: '/health/ready' })
  t.equal(degraded.json().status, 'degraded')
  t.equal((await app.inject({ url: '/crm/dentists/miami' })).statusCode, 200, 'pages are served meanwhile')

  unready.coverAllSlots()
  let status = degraded.json().status
  for (let i = 0; i < 100 && status !== 'ok'; i++) {
    await new Promise((resolve) => setTimeout(resolve, 200))
    status = (await app.inject({ url: '/health/ready' })).json().status
  }
  t.equal(status, 'ok', 'ready once the cluster is')
})
