// Experiments: the registry every page request consults (which pages are under experiment, the variant
// each bucket sees), loaded at start, every 30 s and when another instance reallocated; and the
// reallocation loop: every EXPERIMENT_REALLOCATE_SECONDS, the one instance holding a Redis lease
// reallocates every experiment (src/experiments/reallocation.ts), then tells the others.

import { randomUUID } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { listExperiments, readExperimentCounts } from '../src/experiments/experiment-repository.ts'
import { experimentReports } from '../src/experiments/experiment-report.ts'
import { ExperimentRegistry } from '../src/experiments/experiment-registry.ts'
import { type ReallocationResult, reallocateExperiments } from '../src/experiments/reallocation.ts'
import { undeliveredEvents } from '../src/events/event-stream.ts'

export interface ExperimentsService {
  registry: ExperimentRegistry
  /** Reloads the registry here and tells every other instance to (after an admin change or a reallocation). */
  reload(): Promise<void>
  /** One reallocation now, here (the admin API and tests; the loop holds the lease for its own). */
  reallocate(): Promise<ReallocationResult>
}

declare module 'fastify' {
  interface FastifyInstance {
    experiments: ExperimentsService
  }
}

const REGISTRY_REFRESH_MS = 30_000
const LEASE_KEY = 'experiments:reallocation-lease'
/** Stream entries (requests of up to 100 events) read past the consumer group's position per reallocation. */
const UNDELIVERED_LIMIT = 10_000

async function experimentsPlugin(app: FastifyInstance): Promise<void> {
  const { config, redis } = app
  const registry = new ExperimentRegistry(config.experimentBuckets)
  const load = async (): Promise<void> => {
    try {
      registry.replace(await listExperiments(app.database.read))
    } catch (err) {
      app.log.warn({ err }, 'experiments could not be loaded; keeping the previous ones')
    }
  }
  await load()
  const reload = async (): Promise<void> => {
    await load()
    app.invalidationBus.publish?.({ keys: [], tags: [], experiments: true })
  }
  const reallocate = async (): Promise<ReallocationResult> => {
    // What the consumer has not aggregated yet counts too (bounded: a consumer far behind is a bigger problem).
    const undelivered = app.eventsRedis === null ? [] : await undeliveredEvents(app.eventsRedis, app.events.keys, UNDELIVERED_LIMIT).catch((err: unknown) => {
      app.log.warn({ err }, 'the events still in the stream could not be read; reallocating on the aggregates alone')
      return []
    })
    const result = await reallocateExperiments(app.database.db, { buckets: config.experimentBuckets, minShare: config.experimentMinShare, purgeTargets: config.purgeTargets }, undelivered)
    if (result.invalidatePaths.length > 0) await app.pages.invalidatePaths(result.invalidatePaths)
    await reload()
    // The origin's own entries are per variant and stay; the buckets that moved are purged at the CDN.
    if (result.started + result.ended + result.moved > 0) {
      app.kickPurges()
      app.log.info(result, 'experiments reallocated')
    }
    return result
  }
  app.decorate('experiments', { registry, reload, reallocate })

  // Per page, segment and variant: the share of buckets and the conversion rate (the dashboard's panel).
  // Experiments are few (landing pages x segments with competing variants); read at most every 15 s.
  let reports: ReturnType<typeof experimentReports> = []
  let reportsReadAt = 0
  const readReports = async () => {
    if (Date.now() - reportsReadAt >= 15_000) {
      reports = experimentReports(await listExperiments(app.database.read), await readExperimentCounts(app.database.read))
      reportsReadAt = Date.now()
    }
    return reports
  }
  const perVariant = (value: (v: (typeof reports)[number]['variants'][number]) => number) => async () =>
    (await readReports()).flatMap((r) => r.variants.map((v) => ({ labels: { page: r.page, segment: r.segment, variant: String(v.variant) }, value: value(v) })))
  app.metrics.registerCollector({ name: 'variant_origin_experiment_bucket_share', help: 'Share of an experiment\'s buckets that see this variant (1 for a pinned winner).', type: 'gauge', labelNames: ['page', 'segment', 'variant'], read: perVariant((v) => v.share) })
  app.metrics.registerCollector({ name: 'variant_origin_experiment_conversion_rate', help: 'Conversions (CTA clicks) over views of visitors with a bucket, per experiment variant.', type: 'gauge', labelNames: ['page', 'segment', 'variant'], read: perVariant((v) => v.rate) })
  app.metrics.registerCollector({ name: 'variant_origin_experiment_probability_best', help: 'Probability that this variant converts best (Thompson sampling), as of the last reallocation.', type: 'gauge', labelNames: ['page', 'segment', 'variant'], read: perVariant((v) => v.probabilityBest) })
  app.invalidationBus.onMessage((message) => {
    if (message.experiments === true) void load()
  })
  const refresh = setInterval(() => void load(), REGISTRY_REFRESH_MS)
  refresh.unref()
  app.addHook('onClose', async () => clearInterval(refresh))

  const periodMs = config.experimentReallocateSeconds * 1000
  if (periodMs === 0) return
  const token = randomUUID()
  let running: Promise<unknown> | undefined
  const tick = (): void => {
    if (running !== undefined) return
    running = (async () => {
      // One instance per period: the lease outlives the period by nothing, so a crashed holder is replaced next time.
      if (redis !== null && (await redis.set(LEASE_KEY, token, 'PX', Math.max(1_000, periodMs - 250), 'NX')) !== 'OK') return
      await reallocate()
    })()
      .catch((err: unknown) => app.log.warn({ err }, 'experiment reallocation failed; trying again next period'))
      .finally(() => {
        running = undefined
      })
  }
  // The first one soon after start (an experiment a deploy brought waits one period at most), then every period.
  let timer: NodeJS.Timeout | undefined
  app.addHook('onReady', async () => {
    timer = setInterval(tick, periodMs)
    timer.unref()
  })
  app.addHook('onClose', async () => {
    clearInterval(timer)
    await running
  })
}

export default fp(experimentsPlugin, { name: 'experiments', dependencies: ['config', 'database', 'redis', 'metrics', 'invalidation', 'pages', 'purge', 'events'] })
