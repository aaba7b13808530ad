// Engagement events: the stream POST /events appends to, this instance's member of the consumer group
// that aggregates it into PostgreSQL, and the stream's numbers for /metrics.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { hostname } from 'node:os'
import { randomUUID } from 'node:crypto'
import { Cluster, type Redis } from 'ioredis'
import type { EngagementEvent } from '../src/events/engagement-event.ts'
import { EngagementConsumer, type ConsumerCounters } from '../src/events/engagement-consumer.ts'
import { appendEvents, eventStreamKeys, streamStats, type EventStreamKeys, type EventStreamStats } from '../src/events/event-stream.ts'
import { DomainError } from '../src/errors.ts'

export interface EventsService {
  keys: EventStreamKeys
  /** Writes one request's events to the stream; throws UNAVAILABLE (503) when they cannot be written. */
  append(events: readonly EngagementEvent[]): Promise<string>
  /** Stream length, group lag and pending entries; throws UNAVAILABLE when Redis is off or failing. */
  stats(): Promise<EventStreamStats>
  /** This instance's consumer counters since start (all zero when it runs no consumer). */
  counters(): ConsumerCounters & { accepted: number }
  /** Whether this instance runs a consumer. */
  consuming: boolean
}

declare module 'fastify' {
  interface FastifyInstance {
    events: EventsService
  }
}

/** A blocking read holds its connection for up to the block time: it gets its own, without the shared client's short command timeout. */
function consumerConnection(redis: Redis | Cluster, commandTimeoutMs: number): Redis | Cluster {
  // Nothing waits on a lost connection: no offline queue, and maxRetriesPerRequest 0 fails the commands in
  // flight (a blocking read) the moment the connection drops; the consumer backs off and tries again.
  // A command left waiting would outlive disconnect() on a reconnecting client and hold close() for its
  // whole timeout.
  const overrides = { keyPrefix: undefined, lazyConnect: false, enableOfflineQueue: false, maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false, commandTimeout: commandTimeoutMs }
  if (redis instanceof Cluster) {
    return redis.duplicate(undefined, { keyPrefix: undefined, lazyConnect: false, enableOfflineQueue: false, redisOptions: { ...redis.options.redisOptions, ...overrides } })
  }
  return redis.duplicate(overrides)
}

async function eventsPlugin(app: FastifyInstance): Promise<void> {
  const { config } = app
  const redis = app.eventsRedis
  const keys = eventStreamKeys(config.redisKeyPrefix)
  let accepted = 0
  let consumer: EngagementConsumer | undefined

  if (redis === null) {
    app.log.info('REDIS_URL=off and no EVENTS_REDIS_URL: POST /events answers 503 and no engagement consumer runs')
  } else if (!config.eventsConsumer) {
    app.log.info('EVENTS_CONSUMER=off: this instance accepts events, other instances aggregate them')
  } else {
    // Opened once the app is ready: a boot that fails later never runs onClose, and must leave nothing open.
    app.addHook('onReady', async () => {
      const connection = consumerConnection(redis, Math.min(2_000, config.eventsClaimIdleMs) + 5_000)
      connection.on('error', () => undefined) // the client it duplicates already logs Redis being down
      const consumerName = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`
      consumer = new EngagementConsumer({
        redis: connection,
        db: app.database.db,
        keys,
        log: app.log.child({ component: 'engagement-consumer' }),
        settings: {
          consumerName,
          batchSize: config.eventsBatchSize,
          claimIdleMs: config.eventsClaimIdleMs,
          maxDeliveries: config.eventsMaxDeliveries,
          maxLen: config.eventsStreamMaxLen,
        },
      })
      consumer.start()
      app.log.info({ consumerName, stream: keys.stream }, 'engagement consumer started')
    })
    app.addHook('onClose', async () => {
      if (consumer === undefined) return
      await consumer.stop()
      app.log.info(consumer.counters, 'engagement consumer stopped')
    })
  }

  const zero: ConsumerCounters = {
    processedMessages: 0, processedEvents: 0, duplicateMessages: 0, unknownPathEvents: 0, unknownVariantEvents: 0,
    deadLettered: 0, claimed: 0, trimmedBeforeProcessing: 0, failedBatches: 0,
  }
  app.decorate<EventsService>('events', {
    keys,
    consuming: redis !== null && config.eventsConsumer,
    async append(events) {
      const id = await appendEvents(redis, keys, events, config.eventsStreamMaxLen, Date.now())
      accepted += events.length
      return id
    },
    async stats() {
      if (redis === null) throw new DomainError('UNAVAILABLE', 'the event stream is off (REDIS_URL=off and no EVENTS_REDIS_URL)')
      try {
        return await streamStats(redis, keys)
      } catch (err) {
        throw new DomainError('UNAVAILABLE', 'the event stream cannot be read', { cause: err })
      }
    },
    counters: () => ({ ...(consumer?.counters ?? zero), accepted }),
  })
  // The stream gauges on /metrics: length, the group's lag and pending entries, read at scrape time.
  if (redis !== null) app.metrics.setStreamStatsSource(() => app.events.stats())
}

export default fp(eventsPlugin, { name: 'events', dependencies: ['config', 'redis', 'database', 'metrics'] })
