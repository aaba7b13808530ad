// GET /metrics for Prometheus: never cached; behind a bearer token when METRICS_TOKEN is set.

import type { FastifyPluginAsync } from 'fastify'
import { bearerTokenCheck } from '../src/http/bearer-token.ts'

const metricsRoutes: FastifyPluginAsync = async (app) => {
  const { registry } = app.metrics
  const authorized = app.config.metricsToken === undefined ? undefined : bearerTokenCheck(app.config.metricsToken)
  app.get(
    '/metrics',
    {
      // Scrapes are not request traffic: no per-request log line, and never shed (the SRE needs them most then).
      logLevel: 'warn',
      config: { pressureHandler: () => undefined },
      schema: { hide: true },
    },
    async (request, reply) => {
      reply.header('cache-control', 'no-store')
      if (authorized !== undefined && !authorized(request.headers.authorization)) {
        reply.header('www-authenticate', 'Bearer realm="variant-origin metrics"')
        return reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'send Authorization: Bearer <METRICS_TOKEN>' })
      }
      reply.type(registry.contentType)
      return registry.metrics()
    },
  )
}

export default metricsRoutes
