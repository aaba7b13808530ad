// Prometheus metrics (prom-client), one registry per app so two apps in one process never collide.
// The hot path only bumps pre-bound counters. What is read at scrape time (pool, outbox, crawl weights,
// streams, breakers) is registered by the plugin that owns it through registerCollector(): each read is
// bounded, and a read that fails keeps the metric's last values.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { collectDefaultMetrics, Counter, Gauge, Histogram, type Metric, Registry } from 'prom-client'
import type { WarmReport } from '../src/cache/warm-up.ts'
import type { TieredCacheMetrics } from '../src/cache/tiered-cache.ts'
import type { ServingMetrics } from '../src/pages/page-service.ts'
import type { RenderMetrics } from '../src/render/page-renderer.ts'
import { withTimeout } from '../src/timeout.ts'

/** Everything the page path counts: lookups per tier, renders, stale answers, coalescing. */
export type PageMetrics = TieredCacheMetrics & RenderMetrics & ServingMetrics & {
  /** A request that joined a render already running for its key in this process. */
  renderCoalesced(): void
}

export interface Sample {
  labels?: Record<string, string>
  value: number
}

/** A metric read at scrape time from the plugin that owns what it measures. */
export interface CollectorSpec {
  name: string
  help: string
  type: 'gauge' | 'counter'
  labelNames?: readonly string[]
  /** The current values; undefined (or a read that fails or overruns) keeps the last ones. */
  read(): Sample[] | undefined | Promise<Sample[] | undefined>
}

export interface OriginMetrics {
  readonly registry: Registry
  readonly pages: PageMetrics
  /** One observation per response: the request histogram's labels are route, method, status, cache. */
  observeRequest(method: string, route: string, statusCode: number, cache: string, seconds: number): void
  redisError(kind: 'connection' | 'command'): void
  warmUp(report: Pick<WarmReport, 'successRate'>): void
  /**
   * Registers a scrape-time metric. Registering a name again adds a reader to it (each plugin with a
   * circuit breaker reports its own `breaker` label of one gauge); the type and help must agree.
   */
  registerCollector(spec: CollectorSpec): void
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: OriginMetrics
  }
}

/** A scrape never waits long on the database: past this, the metric keeps its last values. */
const SCRAPE_QUERY_TIMEOUT_MS = 2_000

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

  // Bumped on the page path: plain integers, handed to prom-client at scrape time.
  const coalesced = { renders: 0, l2Reads: 0 }
  new Counter({
    name: 'variant_origin_singleflight_coalesced_total',
    help: 'Requests that waited for a render already running for the same key in this process instead of rendering again.',
    registers,
    collect() {
      this.reset()
      this.inc(coalesced.renders)
    },
  })
  new Counter({
    name: 'variant_origin_l2_reads_coalesced_total',
    help: 'Page lookups that shared a Redis read already in flight for the same key instead of sending their own.',
    registers,
    collect() {
      this.reset()
      this.inc(coalesced.l2Reads)
    },
  })
  const overBudget = new Counter({
    name: 'variant_origin_render_over_budget_total',
    help: 'Misses whose render overran RENDER_BUDGET_MS; they were answered stale or by the default segment while the render went on.',
    registers,
  })

  const collectors = new Map<string, { spec: CollectorSpec; readers: Array<CollectorSpec['read']> }>()
  const registerCollector = (spec: CollectorSpec): void => {
    const known = collectors.get(spec.name)
    if (known !== undefined) {
      if (known.spec.type !== spec.type || known.spec.help !== spec.help) throw new Error(`metric ${spec.name} registered twice with different type or help`)
      known.readers.push(spec.read)
      return
    }
    const entry = { spec, readers: [spec.read] }
    collectors.set(spec.name, entry)
    // Each reader's last good samples, so one failing reader keeps its values while the others move on.
    const last = new Map<CollectorSpec['read'], Sample[]>()
    const readAll = async (): Promise<Sample[]> => {
      await Promise.all(
        entry.readers.map(async (read) => {
          try {
            const samples = await withTimeout(Promise.resolve(read()), SCRAPE_QUERY_TIMEOUT_MS, () => new Error(`no answer within ${SCRAPE_QUERY_TIMEOUT_MS} ms`))
            if (samples !== undefined) last.set(read, samples)
          } catch (err) {
            app.log.debug({ err, metric: spec.name }, 'metric not read for /metrics; keeping its last values')
          }
        }),
      )
      return [...last.values()].flat()
    }
    const options = { name: spec.name, help: spec.help, labelNames: [...(spec.labelNames ?? [])], registers }
    if (spec.type === 'gauge') {
      new Gauge({
        ...options,
        async collect() {
          for (const { labels, value } of await readAll()) {
            if (labels === undefined) this.set(value)
            else this.set(labels, value)
          }
        },
      })
    } else {
      new Counter({
        ...options,
        async collect() {
          const samples = await readAll()
          this.reset()
          for (const { labels, value } of samples) {
            if (labels === undefined) this.inc(value)
            else this.inc(labels, value)
          }
        },
      })
    }
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
      overBudget: () => overBudget.inc(),
      l2ReadCoalesced: () => {
        coalesced.l2Reads++
      },
      renderCoalesced: () => {
        coalesced.renders++
      },
    },
    observeRequest: (method, route, statusCode, cache, seconds) => requestDuration.observe(method, route, statusCode, cache, seconds),
    redisError: (kind) => redisErrors.labels(kind).inc(),
    warmUp: (report) => warmUpRatio.set(report.successRate),
    registerCollector,
  }
  app.decorate('metrics', metrics)
}

export default fp(metricsPlugin, { name: 'metrics', dependencies: ['config'] })
