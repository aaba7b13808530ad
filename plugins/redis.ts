// Every Redis connection the origin opens, failing open: short command timeouts, no offline queue,
// bounded reconnects. With Redis off or down the origin keeps serving from L1 and PostgreSQL and says
// so in /health/ready.
// - `app.redis`: the page cache (L2, render locks, tag index), invalidation publishes and rate limits;
// - `app.redisSubscriber`: the invalidation subscriber (a subscribed connection takes no other command);
// - `app.eventsRedis`: the engagement stream, the same client unless EVENTS_REDIS_URL gives the stream a
//   Redis of its own (one that never evicts: a cache Redis under allkeys-lru may evict the stream, and
//   with it events already accepted);
// - `app.openBlockingConnection()`: the events consumer's connection for blocking reads.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Cluster, Redis, type RedisOptions } from 'ioredis'
import { withTimeout } from '../src/timeout.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** null when REDIS_URL=off; a Cluster when REDIS_CLUSTER_NODES is set. */
    redis: Redis | Cluster | null
    /** The invalidation subscriber's own connection to the cache's Redis; null when REDIS_URL=off. */
    redisSubscriber: Redis | Cluster | null
    /** The engagement stream's Redis: its own client when EVENTS_REDIS_URL is set, else `app.redis`. */
    eventsRedis: Redis | Cluster | null
    /**
     * A new connection to the events Redis for blocking reads (XREADGROUP BLOCK), without the shared
     * client's short command timeout. Its owner disconnects it. Throws when there is no events Redis.
     */
    openBlockingConnection(commandTimeoutMs: number): Redis | Cluster
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
  const ready = new Promise<void>((resolve) => redis.once('ready', (onReady = resolve)))
  try {
    await withTimeout(Promise.race([connecting, ready]), CONNECT_WAIT_MS, () => new Error(`not ready within ${CONNECT_WAIT_MS} ms`))
  } catch (err) {
    app.log.warn({ err, role }, `redis unreachable at start (${role}); running degraded until it comes back`)
  } finally {
    if (onReady !== undefined) redis.removeListener('ready', onReady)
  }
  app.addHook('onClose', async () => {
    redis.disconnect()
  })
  return redis
}

/**
 * The subscriber: off the request path, so without the cache client's tens-of-ms command timeout (a
 * SUBSCRIBE sent while the process is still busy starting must not time out and leave this instance deaf
 * to purges), and with an offline queue so a SUBSCRIBE waits for the connection.
 */
function openSubscriber(app: FastifyInstance, redis: Redis | Cluster): Redis | Cluster {
  const commandTimeout = app.config.redisSubscribeTimeoutMs
  const options = { lazyConnect: false, enableOfflineQueue: true, commandTimeout }
  const subscriber = redis instanceof Cluster ? redis.duplicate(undefined, { ...options, redisOptions: { ...redis.options.redisOptions, commandTimeout } }) : redis.duplicate(options)
  subscriber.on('error', () => undefined) // the main client already logs Redis being down
  app.addHook('onClose', async () => {
    subscriber.disconnect()
  })
  return subscriber
}

/** A blocking read holds its connection for up to the block time: it gets its own, without the shared client's short command timeout. */
function blockingConnection(redis: Redis | Cluster, commandTimeoutMs: number): Redis | Cluster {
  // Nothing waits on a lost connection: no offline queue, and maxRetriesPerRequest 0 fails the commands in
  // flight (a blocking read) the moment the connection drops; its owner backs off and tries again.
  // A command left waiting would outlive disconnect() on a reconnecting client and hold close() for its
  // whole timeout.
  const overrides = { keyPrefix: undefined, lazyConnect: false, enableOfflineQueue: false, maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false, commandTimeout: commandTimeoutMs }
  const connection =
    redis instanceof Cluster
      ? redis.duplicate(undefined, { keyPrefix: undefined, lazyConnect: false, enableOfflineQueue: false, redisOptions: { ...redis.options.redisOptions, ...overrides } })
      : redis.duplicate(overrides)
  connection.on('error', () => undefined) // the client it duplicates already logs Redis being down
  return connection
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
  const eventsRedis = eventsRedisUrl === undefined ? redis : await openClient(app, { url: eventsRedisUrl }, 'events')
  app.decorate<Redis | Cluster | null>('redis', redis)
  app.decorate<Redis | Cluster | null>('redisSubscriber', redis === null ? null : openSubscriber(app, redis))
  app.decorate<Redis | Cluster | null>('eventsRedis', eventsRedis)
  app.decorate('openBlockingConnection', (commandTimeoutMs: number) => {
    if (eventsRedis === null) throw new Error('no events Redis (REDIS_URL=off and no EVENTS_REDIS_URL)')
    return blockingConnection(eventsRedis, commandTimeoutMs)
  })
}

export default fp(redisPlugin, { name: 'redis', dependencies: ['config', 'metrics'] })
