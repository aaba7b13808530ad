// Redis client, failing open: short command timeouts, no offline queue, bounded reconnects.
// With Redis off or down the origin keeps serving from L1 and PostgreSQL and says so in /health/ready.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'

declare module 'fastify' {
  interface FastifyInstance {
    /** null when REDIS_URL=off. */
    redis: Redis | null
  }
}

async function redisPlugin(app: FastifyInstance): Promise<void> {
  const { redisUrl, redisCommandTimeoutMs, redisKeyPrefix } = app.config
  if (redisUrl === undefined) {
    app.decorate('redis', null)
    app.log.info('REDIS_URL=off: running on the in-process cache alone')
    return
  }
  const redis = new Redis(redisUrl, {
    keyPrefix: redisKeyPrefix,
    lazyConnect: true,
    enableOfflineQueue: false, // a command while disconnected fails at once instead of queueing
    commandTimeout: redisCommandTimeoutMs,
    connectTimeout: 1_000,
    maxRetriesPerRequest: 1,
    retryStrategy: (attempt) => Math.min(attempt * 200, 5_000), // keep reconnecting, at most every 5 s
  })
  let lastErrorLog = 0
  redis.on('error', (err) => {
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
  app.decorate('redis', redis)
  app.addHook('onClose', async () => {
    redis.disconnect()
  })
}

export default fp(redisPlugin, { name: 'redis', dependencies: ['config'] })
