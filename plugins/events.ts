// Engagement events: the stream POST /events appends to, this instance's member of the consumer group
// that aggregates it into PostgreSQL, and the stream's numbers for /metrics.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { hostname } from 'node:os'
import { randomUUID } from 'node:crypto'
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
      const connection = app.openBlockingConnection(Math.min(2_000, config.eventsClaimIdleMs) + 5_000)
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
      // Reading before the connection is up fails ("Stream isn't writeable": no offline queue, by design),
      // so the consumer starts on the connection's first ready, whenever Redis comes up.
      const started = consumer
      const start = (): void => {
        started.start()
        app.log.info({ consumerName, stream: keys.stream }, 'engagement consumer started')
      }
      if (connection.status === 'ready') start()
      else connection.once('ready', start)
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
  // The stream gauges on /metrics: length, the group's lag and pending entries, read at scrape time,
  // one read serving the three gauges of a scrape.
  if (redis !== null) {
    let inFlight: Promise<EventStreamStats> | undefined
    const current = (): Promise<EventStreamStats> => {
      inFlight ??= app.events.stats().finally(() => setImmediate(() => (inFlight = undefined)))
      return inFlight
    }
    const streamGauge = (name: string, help: string, pick: (stats: EventStreamStats) => number | null): void =>
      app.metrics.registerCollector({
        name,
        help,
        type: 'gauge',
        read: async () => {
          const value = pick(await current())
          return value === null ? undefined : [{ value }]
        },
      })
    streamGauge('variant_origin_events_stream_length', 'Entries in the engagement events stream (XLEN).', (s) => s.length)
    streamGauge('variant_origin_events_consumer_lag', 'Stream entries not yet delivered to the consumer group (XINFO GROUPS lag).', (s) => s.lag)
    streamGauge('variant_origin_events_pending', 'Entries delivered to a consumer and not yet acknowledged (XPENDING).', (s) => s.pending)
  }
}

export default fp(eventsPlugin, { name: 'events', dependencies: ['config', 'redis', 'database', 'metrics'] })
