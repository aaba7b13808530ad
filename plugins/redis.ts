// Redis client, failing open: short command timeouts, no offline queue, bounded reconnects.
// With Redis off or down the origin keeps serving from L1 and PostgreSQL and says so in /health/ready.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Cluster, Redis, type RedisOptions } from 'ioredis'

declare module 'fastify' {
  interface FastifyInstance {
    /** null when REDIS_URL=off; a Cluster when REDIS_CLUSTER_NODES is set. */
    redis: Redis | Cluster | null
  }
}

async function redisPlugin(app: FastifyInstance): Promise<void> {
  const { redisUrl, redisClusterNodes, redisCommandTimeoutMs, redisKeyPrefix } = app.config
  if (redisUrl === undefined && redisClusterNodes === undefined) {
    app.decorate('redis', null)
    app.log.info('REDIS_URL=off: running on the in-process cache alone')
    return
  }
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
    redisClusterNodes === undefined
      ? new Redis(redisUrl!, options)
      : new Cluster(redisClusterNodes, {
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
      app.log.warn({ err }, 'redis unavailable; serving from the in-process cache and PostgreSQL')
    }
  })
  redis.on('ready', () => app.log.info('redis connected'))
  try {
    await redis.connect()
  } catch (err) {
    app.log.warn({ err }, 'redis unreachable at start; running degraded until it comes back')
  }
  app.decorate<Redis | Cluster | null>('redis', redis)
  app.addHook('onClose', async () => {
    redis.disconnect()
  })
}

export default fp(redisPlugin, { name: 'redis', dependencies: ['config', 'metrics'] })
