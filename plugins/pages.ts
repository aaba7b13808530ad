// The page path's parts, put together: the two cache tiers, the render coordinator, the renderer and
// the serving policy (PageService) over them, and the page metrics read at scrape time.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { RedisL2 } from '../src/cache/redis-l2.ts'
import { ResponseCache } from '../src/cache/response-cache.ts'
import { TieredCache } from '../src/cache/tiered-cache.ts'
import { CIRCUIT_GAUGE, CIRCUIT_GAUGE_VALUE } from '../src/circuit-state.ts'
import { crawlWeightDistribution } from '../src/pages/page-repository.ts'
import { PageService } from '../src/pages/page-service.ts'
import { PageRenderer } from '../src/render/page-renderer.ts'
import { RenderCoordinator } from '../src/render/render-coordinator.ts'

declare module 'fastify' {
  interface FastifyInstance {
    pages: PageService
    /** The tiers themselves (L1 here, L2 in Redis): for invalidation and for tests. */
    pageCache: TieredCache
  }
}

async function pagesPlugin(app: FastifyInstance): Promise<void> {
  const { config, metrics, redis, invalidationBus } = app
  const l2 = redis === null ? null : new RedisL2(redis, app.log, () => metrics.redisError('command'))
  const cache = new TieredCache({ l1: new ResponseCache(config.l1MaxBytes), l2, l1TtlSeconds: config.l1TtlSeconds, broadcast: invalidationBus.publish, metrics: metrics.pages })
  invalidationBus.onMessage(({ keys, tags }) => cache.evictLocal(keys, tags))
  // Live renders read through DatabaseHandle.read (a healthy replica, else the primary); warm-up reads the primary.
  const renderer = new PageRenderer({ db: app.database.db, read: app.database.read, settings: config, metrics: metrics.pages })
  const renders = new RenderCoordinator({ cache, locks: l2, onCoalesced: metrics.pages.renderCoalesced })
  // Renders answered just before close still write L2 and unlock: before plugins/redis.ts disconnects.
  app.addHook('onClose', () => renders.settled())
  const pages = new PageService({
    cache,
    renders,
    renderer,
    settings: config,
    metrics: metrics.pages,
    log: app.log,
    segmentSlugs: () => [...app.segments().slugs],
    // plugins/experiments.ts registers after this one (it reallocates through the page service).
    experimentVariants: (path) => (app.hasDecorator('experiments') ? app.experiments.registry.variantsOf(path) : []),
  })
  app.decorate('pageCache', cache)
  app.decorate('pages', pages)

  metrics.registerCollector({ ...CIRCUIT_GAUGE, read: () => [{ labels: { breaker: 'database' }, value: CIRCUIT_GAUGE_VALUE[renderer.circuitState] }] })
  // The histogram scans every published page: recomputed at most every METRICS_CRAWL_WEIGHT_REFRESH_SECONDS.
  let weightsReadAt = 0
  metrics.registerCollector({
    name: 'variant_origin_pages_by_crawl_weight',
    // A gauge may not carry `le` (promtool): max_weight is the bucket's upper bound, counts are cumulative.
    help: 'Published pages with crawl weight at most max_weight (cumulative). Refreshed every METRICS_CRAWL_WEIGHT_REFRESH_SECONDS.',
    type: 'gauge',
    labelNames: ['max_weight'],
    read: async () => {
      if (Date.now() - weightsReadAt < config.metricsCrawlWeightRefreshSeconds * 1000) return undefined
      const buckets = await crawlWeightDistribution(app.database.read)
      weightsReadAt = Date.now()
      return buckets.map(({ le, pages }) => ({ labels: { max_weight: String(le) }, value: pages }))
    },
  })
}

export default fp(pagesPlugin, { name: 'pages', dependencies: ['config', 'database', 'redis', 'metrics', 'segments', 'invalidation'] })
