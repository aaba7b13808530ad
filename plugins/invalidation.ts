// L1 invalidations across instances, over Redis pub/sub: an instance that evicts keys or tags publishes
// them; every other instance drops them from its own L1. The channel carries the key prefix, so two
// deployments sharing one Redis never evict each other's entries. Without Redis, this is one instance:
// nothing to tell.

import { randomUUID } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { InvalidationMessage } from '../src/cache/tiered-cache.ts'

export interface InvalidationBus {
  /** Tells the other instances; undefined when there are none to tell (REDIS_URL=off). */
  publish: ((message: InvalidationMessage) => void) | undefined
  /** What to do with another instance's messages (the page cache's L1 eviction, the segments' reload). */
  onMessage(handler: (message: InvalidationMessage) => void): void
}

declare module 'fastify' {
  interface FastifyInstance {
    invalidationBus: InvalidationBus
  }
}

async function invalidationPlugin(app: FastifyInstance): Promise<void> {
  const { redis, redisSubscriber: subscriber, config } = app
  const handlers: Array<(message: InvalidationMessage) => void> = []
  const bus: InvalidationBus = { publish: undefined, onMessage: (h) => void handlers.push(h) }
  app.decorate('invalidationBus', bus)
  if (redis === null || subscriber === null) return
  const instanceId = randomUUID()
  const channel = `${config.redisKeyPrefix}invalidate`
  subscriber.on('message', (_channel: string, raw: string) => {
    try {
      const { from, keys, tags, segments, experiments } = JSON.parse(raw) as { from: string; keys?: unknown; tags?: unknown; segments?: unknown; experiments?: unknown }
      if (from === instanceId) return
      const message = { keys: Array.isArray(keys) ? keys : [], tags: Array.isArray(tags) ? tags : [], segments: segments === true, experiments: experiments === true }
      for (const handler of handlers) handler(message)
    } catch (err) {
      app.log.warn({ err }, 'ignoring a malformed invalidation message')
    }
  })
  // Until the first SUBSCRIBE succeeds (Redis down at start), try again every few seconds; after that
  // ioredis resubscribes on every reconnect by itself (autoResubscribe).
  const retryMs = Math.min(2_000, config.redisSubscribeTimeoutMs)
  let closed = false
  let retry: NodeJS.Timeout | undefined
  const subscribe = (): void => {
    subscriber.subscribe(channel).catch((err: unknown) => {
      if (closed) return
      app.log.warn({ err }, `not subscribed to invalidations yet; trying again in ${retryMs} ms`)
      retry = setTimeout(subscribe, retryMs)
      retry.unref()
    })
  }
  subscribe()
  app.addHook('onClose', async () => {
    closed = true
    clearTimeout(retry)
  })
  bus.publish = (message) => {
    redis.publish(channel, JSON.stringify({ from: instanceId, ...message })).catch((err: unknown) => app.log.warn({ err }, 'could not broadcast an invalidation; other instances expire it by ORIGIN_FRESH_SECONDS/L1_TTL_SECONDS'))
  }
}

export default fp(invalidationPlugin, { name: 'invalidation', dependencies: ['config', 'redis'] })
