// Load shedding (@fastify/under-pressure): past the event-loop delay or memory thresholds a request
// gets an immediate 503 + Retry-After + no-store, so the CDN serves its stale copy instead of queueing
// behind an origin that cannot keep up. Health and metrics routes opt out through their route config.

import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'
import type { FastifyInstance } from 'fastify'

async function loadSheddingPlugin(app: FastifyInstance): Promise<void> {
  const { config } = app
  if (config.loadShedMaxEventLoopDelayMs === 0 && config.loadShedMaxHeapUsedBytes === 0 && config.loadShedMaxRssBytes === 0) {
    app.log.info('load shedding is off (every LOAD_SHED_* threshold is 0)')
    return
  }
  let lastWarning = 0
  await app.register(underPressure, {
    maxEventLoopDelay: config.loadShedMaxEventLoopDelayMs,
    maxHeapUsedBytes: config.loadShedMaxHeapUsedBytes,
    maxRssBytes: config.loadShedMaxRssBytes,
    sampleInterval: config.loadShedSampleIntervalMs,
    retryAfter: config.loadShedRetryAfterSeconds,
    pressureHandler: (request, reply, type, value) => {
      const now = Date.now()
      if (now - lastWarning > 10_000) {
        lastWarning = now
        request.log.warn({ type, value }, 'shedding load: answering 503 until the pressure drops')
      }
      reply.code(503).header('retry-after', String(config.loadShedRetryAfterSeconds)).header('cache-control', 'no-store')
      // under-pressure sends what the handler returns (its typings say void; returning nothing would
      // let the request through, which is how routes opt out).
      const body = { statusCode: 503, error: 'Service Unavailable', message: `the origin is overloaded (${type}); retry after ${config.loadShedRetryAfterSeconds} s` }
      return body as unknown as void
    },
  })
}

export default fp(loadSheddingPlugin, { name: 'load-shedding', dependencies: ['config'] })
