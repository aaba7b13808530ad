// Redis clients, failing open: short command timeouts, no offline queue, bounded reconnects.
// With Redis off or down the origin keeps serving from L1 and PostgreSQL and says so in /health/ready.
// `app.redis` holds the page cache, pub/sub and rate limits; `app.eventsRedis` the engagement stream,
// which is the same client unless EVENTS_REDIS_URL gives the stream a Redis of its own (one that never
// evicts: a cache Redis under allkeys-lru may evict the stream, and with it events already accepted).

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Cluster, Redis, type RedisOptions } from 'ioredis'

declare module 'fastify' {
  interface FastifyInstance {
    /** null when REDIS_URL=off; a Cluster when REDIS_CLUSTER_NODES is set. */
    redis: Redis | Cluster | null
    /** The engagement stream's Redis: its own client when EVENTS_REDIS_URL is set, else `app.redis`. */
    eventsRedis: Redis | Cluster | null
  }
}

/** How long start waits for a Redis to be ready before running degraded without it. */
const CONNECT_WAIT_MS = 5_000

type Target = { url: string; clusterNodes?: undefined } | { url?: undefined; clusterNodes: Array<{ host: string; port: number }> }

/**
 * Opens one fail-open client. `role` names it in the logs ("redis unavailable (cache)"). The connection
 * errors of a client that keeps failing are logged once a minute, counted on every event.
 */
async function openClient(app: FastifyInstance, target: Target, role: string): Promise<Redis | Cluster> {
  const { redisCommandTimeoutMs, redisKeyPrefix } = app.config
  const options: RedisOptions = {
    keyPrefix: redisKeyPrefix,
    lazyConnect: true,
    enableOfflineQueue: false, // a command while disconnected fails at once instead of queueing
    commandTimeout: redisCommandTimeoutMs,
    connectTimeout: 1_000,
    maxRetriesPerRequest: 1,
    retryStrategy: (attempt) => Math.min(attempt * 200, 5_000), // keep reconnecting, at most every 5 s
  }
  const redis =
    target.clusterNodes === undefined
      ? new Redis(target.url, options)
      : new Cluster(target.clusterNodes, {
          keyPrefix: redisKeyPrefix,
          lazyConnect: true,
          enableOfflineQueue: false,
          redisOptions: { ...options, keyPrefix: undefined },
          clusterRetryStrategy: (attempt) => Math.min(attempt * 200, 5_000),
          slotsRefreshTimeout: 1_000,
        })
  let lastErrorLog = 0
  redis.on('error', (err) => {
    app.metrics.redisError('connection')
    // Reconnect attempts fail every few seconds while Redis is down: log once a minute, not each time.
    const now = Date.now()
    if (now - lastErrorLog > 60_000) {
      lastErrorLog = now
      app.log.warn({ err, role }, `redis unavailable (${role})`)
    }
  })
  redis.on('ready', () => app.log.info({ role }, `redis connected (${role})`))
  // Start waits for 'ready' at most CONNECT_WAIT_MS, then runs degraded while the client keeps trying.
  // Not connect()'s promise alone: a Cluster whose ready check fails (a node still reporting
  // cluster_state:fail) reconnects by itself and never settles the promise connect() returned.
  const connecting = redis.connect()
  connecting.catch(() => undefined) // settled through the race below, or abandoned after it
  let onReady: (() => void) | undefined
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      connecting,
      new Promise<void>((resolve) => redis.once('ready', (onReady = resolve))),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`not ready within ${CONNECT_WAIT_MS} ms`)), CONNECT_WAIT_MS)
      }),
    ])
  } catch (err) {
    app.log.warn({ err, role }, `redis unreachable at start (${role}); running degraded until it comes back`)
  } finally {
    clearTimeout(timer)
    if (onReady !== undefined) redis.removeListener('ready', onReady)
  }
  app.addHook('onClose', async () => {
    redis.disconnect()
  })
  return redis
}

async function redisPlugin(app: FastifyInstance): Promise<void> {
  const { redisUrl, redisClusterNodes, eventsRedisUrl } = app.config
  let redis: Redis | Cluster | null = null
  if (redisClusterNodes !== undefined) {
    redis = await openClient(app, { clusterNodes: redisClusterNodes }, 'cache')
  } else if (redisUrl !== undefined) {
    redis = await openClient(app, { url: redisUrl }, 'cache')
  } else {
    app.log.info('REDIS_URL=off: running on the in-process cache alone')
  }
  app.decorate<Redis | Cluster | null>('redis', redis)
  app.decorate<Redis | Cluster | null>('eventsRedis', eventsRedisUrl === undefined ? redis : await openClient(app, { url: eventsRedisUrl }, 'events'))
}

export default fp(redisPlugin, { name: 'redis', dependencies: ['config', 'metrics'] })
