// POST /events: engagement events from browsers (through the CDN, never cached). A request is written
// to the event stream whole or not at all: 202 only once it is in Redis, 503 with Retry-After when it
// cannot be, 400 naming each bad event and field.

import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import rateLimit from '@fastify/rate-limit'
import { EVENT_TYPES, MAX_CLOCK_SKEW_MS, MAX_EVENT_VALUE, MAX_EVENTS_PER_REQUEST, validateEventBatch } from '../src/events/engagement-event.ts'
import { validationError } from '../src/errors.ts'
import { resolveSegment } from '../src/segments/segment-resolution.ts'
import { isCrawler } from '../src/http/crawler.ts'

/** 100 events of a few hundred bytes each fit well within this. */
export const EVENTS_BODY_LIMIT = 64 * 1024

const Event = Type.Object(
  {
    type: Type.Union(EVENT_TYPES.map((t) => Type.Literal(t))),
    path: Type.String({ maxLength: 1024, description: 'canonical page path, such as /pricing', examples: ['/pricing'] }),
    segment: Type.Optional(Type.String({ description: 'segment slug; an unknown one counts for the default segment; absent: the X-Segment header or user_segment cookie' })),
    variant: Type.Optional(Type.Integer({ minimum: 1, description: 'the variant id the page showed (data-variant on the hero)' })),
    bucket: Type.Optional(Type.Integer({ minimum: 0, maximum: 999, description: "the visitor's experiment bucket (the CDN's vo_bucket cookie); one at or above EXPERIMENT_BUCKETS, or from a crawler, is dropped" })),
    value: Type.Optional(Type.Number({ minimum: -MAX_EVENT_VALUE, maximum: MAX_EVENT_VALUE, description: 'scroll depth in percent, conversion amount, ...' })),
    ts: Type.Integer({ minimum: 0, description: `client time in ms since the epoch (Date.now()); at most ${MAX_CLOCK_SKEW_MS / 60_000} minutes ahead, at most a day old` }),
  },
  { additionalProperties: false },
)

const ErrorBody = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  message: Type.String(),
  details: Type.Optional(Type.Array(Type.Object({ record: Type.Integer({ description: 'event index, -1 for the request' }), field: Type.String(), message: Type.String() }))),
})

const eventRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config } = app
  const max = config.eventsRateLimitPerMinute
  await app.register(rateLimit, {
    global: false,
    // Shared across instances when Redis is there; a Redis failure lets requests through (they then
    // meet the stream's own 503) rather than failing them with the limiter's error.
    redis: app.redis ?? app.eventsRedis ?? undefined,
    nameSpace: 'events-rate-limit:',
    skipOnError: true,
    errorResponseBuilder: (_request, context) =>
      Object.assign(new Error(`more than ${context.max} event requests a minute from this address; retry in ${context.after}`), { statusCode: context.statusCode, code: 'RATE_LIMITED' }),
  })

  // navigator.sendBeacon sends a string as text/plain (no CORS preflight): read it as JSON here only.
  app.removeContentTypeParser('text/plain')
  app.addContentTypeParser('text/plain', { parseAs: 'string' }, app.getDefaultJsonParser('error', 'error'))

  app.post(
    '/events',
    {
      bodyLimit: EVENTS_BODY_LIMIT,
      config: { rateLimit: { max, timeWindow: 60_000 } },
      // The schema documents the body; validateEventBatch checks it, because it names every bad event
      // by index and field (ajv reports one error, and an anyOf as "must match a schema in anyOf"), and
      // the consumer checks stream entries with the same code.
      validatorCompiler: () => () => true,
      schema: {
        tags: ['events'],
        summary: 'Record engagement events (one, or a batch of up to 100)',
        description: 'Written to the engagement stream and aggregated per page, day, segment, event type and variant. Never cached.',
        body: Type.Union([Event, Type.Object({ events: Type.Array(Event, { minItems: 1, maxItems: MAX_EVENTS_PER_REQUEST }) }, { additionalProperties: false })]),
        response: {
          202: Type.Object({ accepted: Type.Integer({ description: 'events written' }), id: Type.String({ description: 'stream entry id' }) }),
          400: ErrorBody,
          413: ErrorBody,
          429: ErrorBody,
          503: ErrorBody,
        },
      },
    },
    async (request, reply) => {
      const directory = app.segments()
      const { segment } = resolveSegment(directory, { header: request.headers['x-segment'], cookieHeader: request.headers.cookie })
      const result = validateEventBatch(request.body as unknown, { now: Date.now(), segments: directory, requestSegment: segment, buckets: config.experimentBuckets, crawler: isCrawler(request.headers['user-agent']) })
      if (result.problems.length > 0) throw validationError('events', result.problems)
      const id = await app.events.append(result.events)
      return reply.code(202).header('cache-control', 'no-store').send({ accepted: result.events.length, id })
    },
  )
}

export default eventRoutes
