// One onResponse hook per request: the request-duration histogram and the one log line the SRE reads
// (request id, route, status, cache result, duration). Fastify's own two lines per request are off.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'

/** Requests Fastify could not route (a 404 before any route) share one label, so URLs never become labels. */
const UNMATCHED_ROUTE = '__unmatched__'

async function requestTelemetryPlugin(app: FastifyInstance): Promise<void> {
  const { metrics } = app
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? UNMATCHED_ROUTE
    const cache = reply.getHeader('x-cache')
    const cacheResult = typeof cache === 'string' ? cache : 'none'
    const durationMs = reply.elapsedTime
    metrics.observeRequest(request.method, route, reply.statusCode, cacheResult, durationMs / 1000)
    request.log.info(
      { method: request.method, url: request.url, route, status: reply.statusCode, cache: cacheResult, segment: reply.getHeader('x-segment'), durationMs: Math.round(durationMs * 100) / 100 },
      'request',
    )
  })
}

export default fp(requestTelemetryPlugin, { name: 'request-telemetry', dependencies: ['metrics'] })
