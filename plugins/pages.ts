// The page service (render + L1) and the segment directory it keys on.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { randomUUID } from 'node:crypto'
import { Cluster } from 'ioredis'
import { RedisL2 } from '../src/cache/redis-l2.ts'
import { ResponseCache } from '../src/cache/response-cache.ts'
import { PageService } from '../src/pages/page-service.ts'
import { listSegments } from '../src/pages/page-repository.ts'
import { buildSegmentDirectory, type SegmentDirectory } from '../src/segments/segment-resolution.ts'

declare module 'fastify' {
  interface FastifyInstance {
    pages: PageService
    responseCache: ResponseCache
    segments(): SegmentDirectory
    reloadSegments(): Promise<void>
  }
}

const SEGMENT_REFRESH_MS = 30_000

async function pagesPlugin(app: FastifyInstance): Promise<void> {
  const { config } = app
  const cache = new ResponseCache(config.l1MaxBytes)
  app.decorate('responseCache', cache)

  // Until the segments load (the schema may not be migrated yet), every request is the default segment.
  let directory = buildSegmentDirectory([])
  const reload = async (): Promise<void> => {
    try {
      directory = buildSegmentDirectory(await listSegments(app.database.db))
    } catch (err) {
      app.log.warn({ err }, 'segment list could not be loaded; keeping the previous list')
    }
  }
  await reload()
  app.decorate('segments', () => directory)
  app.decorate('reloadSegments', reload)

  // L1 invalidations reach every instance over Redis pub/sub (the channel carries the key prefix).
  const instanceId = randomUUID()
  const channel = `${config.redisKeyPrefix}invalidate`
  const redis = app.redis
  const pages = new PageService({
    db: app.database.db,
    cache,
    l2: redis === null ? null : new RedisL2(redis, app.log, () => app.metrics.redisError('command')),
    metrics: app.metrics.pages,
    settings: config,
    log: app.log,
    segmentSlugs: () => [...directory.slugs],
    broadcastInvalidation:
      redis === null
        ? undefined
        : (message) => {
            redis.publish(channel, JSON.stringify({ from: instanceId, ...message })).catch((err: unknown) => app.log.warn({ err }, 'could not broadcast an invalidation; other instances expire it by ORIGIN_FRESH_SECONDS/L1_TTL_SECONDS'))
          },
  })
  app.decorate('pages', pages)

  if (redis !== null) {
    // Subscribes as soon as Redis answers, and again after every reconnect (ioredis autoResubscribe).
    // Off the request path, so without the cache client's tens-of-ms command timeout: a SUBSCRIBE sent
    // while the process is still busy starting must not time out and leave this instance deaf to purges.
    const subscriberOptions = { lazyConnect: false, enableOfflineQueue: true, commandTimeout: 5_000 }
    const subscriber = redis instanceof Cluster ? redis.duplicate(undefined, { ...subscriberOptions, redisOptions: { ...redis.options.redisOptions, commandTimeout: 5_000 } }) : redis.duplicate(subscriberOptions)
    subscriber.on('error', () => undefined) // the main client already logs Redis being down
    subscriber.on('message', (_channel: string, message: string) => {
      try {
        const { from, keys, tags } = JSON.parse(message) as { from: string; keys?: string[]; tags?: string[] }
        if (from !== instanceId) pages.evictLocal(Array.isArray(keys) ? keys : [], Array.isArray(tags) ? tags : [])
      } catch (err) {
        app.log.warn({ err }, 'ignoring a malformed invalidation message')
      }
    })
    // Until the first SUBSCRIBE succeeds (Redis down at start), try again every few seconds; after that
    // ioredis resubscribes on every reconnect by itself.
    let closed = false
    let retry: NodeJS.Timeout | undefined
    const subscribe = (): void => {
      subscriber.subscribe(channel).catch((err: unknown) => {
        if (closed) return
        app.log.warn({ err }, 'not subscribed to invalidations yet; trying again in 2 s')
        retry = setTimeout(subscribe, 2_000)
        retry.unref()
      })
    }
    subscribe()
    app.addHook('onClose', async () => {
      closed = true
      clearTimeout(retry)
      subscriber.disconnect()
    })
  }
  // Segments change rarely; a periodic reload bounds how long a new one stays unknown.
  const timer = setInterval(() => void reload(), SEGMENT_REFRESH_MS)
  timer.unref()
  app.addHook('onClose', async () => clearInterval(timer))
}

export default fp(pagesPlugin, { name: 'pages', dependencies: ['config', 'database', 'redis', 'metrics'] })
