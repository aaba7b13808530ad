// Prometheus metrics (prom-client), one registry per app so two apps in one process never collide.
// The hot path only bumps pre-bound counters; everything that needs I/O (pool, outbox, crawl weights,
// streams) is read at scrape time, bounded, and keeps its last value when the read fails.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { collectDefaultMetrics, Counter, Gauge, Histogram, type Metric, Registry } from 'prom-client'
import type { CircuitState } from '../src/circuit-state.ts'
import type { WarmReport } from '../src/cache/warm-up.ts'
import { crawlWeightDistribution } from '../src/pages/page-repository.ts'
import type { PageMetrics } from '../src/pages/page-service.ts'
import { outboxDepth } from '../src/purge/purge-outbox.ts'

/** What an events consumer reports; registered by the events plugin when there is one. */
export interface StreamStats {
  length: number
  lag: number | null
  pending: number
}

export interface OriginMetrics {
  readonly registry: Registry
  readonly pages: PageMetrics
  /** One observation per response: the request histogram's labels are route, method, status, cache. */
  observeRequest(method: string, route: string, statusCode: number, cache: string, seconds: number): void
  redisError(kind: 'connection' | 'command'): void
  warmUp(report: Pick<WarmReport, 'successRate'>): void
  /** The events consumer's stream, read at scrape time. */
  setStreamStatsSource(read: () => Promise<StreamStats>): void
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: OriginMetrics
  }
}

const CIRCUIT_VALUE: Record<CircuitState, number> = { closed: 0, 'half-open': 1, open: 2 }
/** A scrape never waits long on the database: past this, the gauge keeps its last value. */
const SCRAPE_QUERY_TIMEOUT_MS = 2_000

async function bounded<T>(work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${SCRAPE_QUERY_TIMEOUT_MS} ms`)), SCRAPE_QUERY_TIMEOUT_MS)
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** Cache hits answer in well under a millisecond; renders take tens to hundreds. */
const REQUEST_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/**
 * http_request_duration_seconds, observed once per request, hits included. prom-client's Histogram
 * hashes and validates its label object on every observe(), which cost as much as the L1 lookup it
 * measures (bench/RESULTS.md); this keeps one series per label set in a Map keyed by a joined string
 * and hands prom-client the values at scrape time, so the exposition format stays prom-client's.
 */
interface Series {
  labels: Record<string, string>
  buckets: Float64Array
  sum: number
  count: number
}

export class RequestDurationHistogram {
  readonly name = 'http_request_duration_seconds'
  readonly help = 'Time from request received to response sent, by route, method, status code and cache result (X-Cache, or none).'
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  private readonly series = new Map<string, Map<string, Map<number, Map<string, Series>>>>()

  observe(method: string, route: string, statusCode: number, cache: string, seconds: number): void {
    // Nested maps on the label values (interned strings and a small integer) hash nothing new per request.
    let byRoute = this.series.get(method)
    if (byRoute === undefined) this.series.set(method, (byRoute = new Map()))
    let byStatus = byRoute.get(route)
    if (byStatus === undefined) byRoute.set(route, (byStatus = new Map()))
    let byCache = byStatus.get(statusCode)
    if (byCache === undefined) byStatus.set(statusCode, (byCache = new Map()))
    let entry = byCache.get(cache)
    if (entry === undefined) {
      entry = { labels: { method, route, status_code: String(statusCode), cache }, buckets: new Float64Array(REQUEST_BUCKETS.length), sum: 0, count: 0 }
      byCache.set(cache, entry)
    }
    let i = 0
    while (i < REQUEST_BUCKETS.length && seconds > REQUEST_BUCKETS[i]!) i++
    if (i < REQUEST_BUCKETS.length) entry.buckets[i]!++
    entry.sum += seconds
    entry.count++
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> } {
    const values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> = []
    const all = [...this.series.values()].flatMap((byRoute) => [...byRoute.values()].flatMap((byStatus) => [...byStatus.values()].flatMap((byCache) => [...byCache.values()])))
    for (const { labels, buckets, sum, count } of all) {
      let cumulative = 0
      REQUEST_BUCKETS.forEach((le, i) => {
        cumulative += buckets[i]!
        values.push({ labels: { ...labels, le }, value: cumulative, metricName: `${this.name}_bucket` })
      })
      values.push({ labels: { ...labels, le: '+Inf' }, value: count, metricName: `${this.name}_bucket` })
      values.push({ labels, value: sum, metricName: `${this.name}_sum` })
      values.push({ labels, value: count, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }
}

async function metricsPlugin(app: FastifyInstance): Promise<void> {
  const registry = new Registry()
  const registers = [registry]
  collectDefaultMetrics({ register: registry })
  // prom-client names these gauges *_total, which promtool rejects (only counters end in _total);
  // the handle and request counts are of little use behind a CDN, so they are left out.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name)

  const requestDuration = new RequestDurationHistogram()
  registry.registerMetric(requestDuration as unknown as Metric)

  // Bumped on every request, hits included: plain integers, handed to prom-client at scrape time.
  const lookups = { l1: { hit: 0, miss: 0, stale: 0 }, l2: { hit: 0, miss: 0, stale: 0 } }
  new Counter({
    name: 'variant_origin_cache_requests_total',
    help: 'Response cache lookups by tier: hit (fresh), stale (present past its fresh window), miss (absent). L2 is consulted only when L1 does not hit.',
    labelNames: ['tier', 'result'] as const,
    registers,
    collect() {
      this.reset()
      for (const tier of ['l1', 'l2'] as const) for (const result of ['hit', 'miss', 'stale'] as const) if (lookups[tier][result] > 0) this.inc({ tier, result }, lookups[tier][result])
    },
  })
  const renders = new Counter({ name: 'variant_origin_renders_total', help: 'Page renders (database reads + HTML), by outcome.', labelNames: ['outcome'] as const, registers })
  const renderDuration = new Histogram({
    name: 'variant_origin_render_duration_seconds',
    help: 'Time one page render took, database reads included.',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  })
  const staleServed = new Counter({
    name: 'variant_origin_stale_served_total',
    help: 'Stale responses served: revalidate (stale-while-revalidate, one refresh running), error (stale-if-error, the database failing) or budget (inside stale-if-error, the render overran RENDER_BUDGET_MS).',
    labelNames: ['reason'] as const,
    registers,
  })
  const vectorSearch = new Histogram({
    name: 'variant_origin_vector_search_duration_seconds',
    help: 'Nearest-variant lookups (pgvector, within the segment and the active embedding version).',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers,
  })
  const redisErrors = new Counter({ name: 'variant_origin_redis_errors_total', help: 'Redis failures: connection (client error events) or command (a cache call that failed open).', labelNames: ['kind'] as const, registers })
  const warmUpRatio = new Gauge({ name: 'variant_origin_warmup_success_ratio', help: 'Share of pages rendered or already fresh in the last warm-up run by this instance (1 before any run).', registers })
  warmUpRatio.set(1)

  new Counter({
    name: 'variant_origin_singleflight_coalesced_total',
    help: 'Requests that waited for a render already running for the same key in this process instead of rendering again.',
    registers,
    collect() {
      this.reset()
      this.inc(app.responseCache.coalesced)
    },
  })
  new Counter({
    name: 'variant_origin_l2_reads_coalesced_total',
    help: 'Page lookups that shared a Redis read already in flight for the same key instead of sending their own.',
    registers,
    collect() {
      this.reset()
      this.inc(app.pages?.l2ReadsCoalesced ?? 0)
    },
  })
  new Gauge({
    name: 'variant_origin_db_pool_connections',
    help: 'PostgreSQL pool connections: total open, idle, and callers waiting for one.',
    labelNames: ['state'] as const,
    registers,
    collect() {
      const { pool } = app.database
      this.set({ state: 'total' }, pool.totalCount)
      this.set({ state: 'idle' }, pool.idleCount)
      this.set({ state: 'waiting' }, pool.waitingCount)
    },
  })
  new Gauge({
    name: 'variant_origin_circuit_breaker_state',
    help: 'Circuit breakers: 0 closed, 1 half-open, 2 open (calls refused at once).',
    labelNames: ['breaker'] as const,
    registers,
    collect() {
      this.set({ breaker: 'database' }, CIRCUIT_VALUE[app.pages.databaseCircuitState])
      const embedder = app.embedder as { circuitState?: CircuitState }
      if (embedder.circuitState !== undefined) this.set({ breaker: 'embeddings' }, CIRCUIT_VALUE[embedder.circuitState])
    },
  })
  new Gauge({
    name: 'variant_origin_purge_outbox_depth',
    help: 'CDN purges written to the outbox and not yet delivered.',
    registers,
    async collect() {
      try {
        this.set(await bounded(outboxDepth(app.database.db)))
      } catch (err) {
        app.log.debug({ err }, 'purge outbox depth not read for /metrics; keeping the last value')
      }
    },
  })

  // The histogram scans every published page: recomputed at most every METRICS_CRAWL_WEIGHT_REFRESH_SECONDS.
  let weightsReadAt = 0
  new Gauge({
    name: 'variant_origin_pages_by_crawl_weight',
    // A gauge may not carry `le` (promtool): max_weight is the bucket's upper bound, counts are cumulative.
    help: 'Published pages with crawl weight at most max_weight (cumulative). Refreshed every METRICS_CRAWL_WEIGHT_REFRESH_SECONDS.',
    labelNames: ['max_weight'] as const,
    registers,
    async collect() {
      if (Date.now() - weightsReadAt < app.config.metricsCrawlWeightRefreshSeconds * 1000) return
      try {
        for (const { le, pages } of await bounded(crawlWeightDistribution(app.database.db))) this.set({ max_weight: String(le) }, pages)
        weightsReadAt = Date.now()
      } catch (err) {
        app.log.debug({ err }, 'crawl-weight distribution not read for /metrics; keeping the last values')
      }
    },
  })

  // The stream gauges exist only where the events stream does; one read serves the three of a scrape.
  let readStreamStats: (() => Promise<StreamStats>) | undefined
  const registerStreamGauges = (read: () => Promise<StreamStats>): void => {
    const first = readStreamStats === undefined
    readStreamStats = read
    if (!first) return
    let inFlight: Promise<StreamStats | undefined> | undefined
    const current = (): Promise<StreamStats | undefined> => {
      inFlight ??= bounded(readStreamStats!())
        .catch((err: unknown) => {
          app.log.debug({ err }, 'events stream not read for /metrics; keeping the last values')
          return undefined
        })
        .finally(() => setImmediate(() => (inFlight = undefined)))
      return inFlight
    }
    const streamGauge = (name: string, help: string, pick: (stats: StreamStats) => number | null) =>
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          const stats = await current()
          const value = stats === undefined ? null : pick(stats)
          if (value !== null) this.set(value)
        },
      })
    streamGauge('variant_origin_events_stream_length', 'Entries in the engagement events stream (XLEN).', (s) => s.length)
    streamGauge('variant_origin_events_consumer_lag', 'Stream entries not yet delivered to the consumer group (XINFO GROUPS lag).', (s) => s.lag)
    streamGauge('variant_origin_events_pending', 'Entries delivered to a consumer and not yet acknowledged (XPENDING).', (s) => s.pending)
  }

  const metrics: OriginMetrics = {
    registry,
    pages: {
      lookup: (tier, result) => {
        lookups[tier][result]++
      },
      rendered: (outcome, seconds) => {
        renders.labels(outcome).inc()
        renderDuration.observe(seconds)
      },
      staleServed: (reason) => staleServed.labels(reason).inc(),
      vectorSearch: (seconds) => vectorSearch.observe(seconds),
    },
    observeRequest: (method, route, statusCode, cache, seconds) => requestDuration.observe(method, route, statusCode, cache, seconds),
    redisError: (kind) => redisErrors.labels(kind).inc(),
    warmUp: (report) => warmUpRatio.set(report.successRate),
    setStreamStatsSource: (read) => registerStreamGauges(read),
  }
  app.decorate('metrics', metrics)
}

export default fp(metricsPlugin, { name: 'metrics', dependencies: ['config'] })
