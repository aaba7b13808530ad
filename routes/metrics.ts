// GET /metrics for Prometheus: never cached; behind a bearer token when METRICS_TOKEN is set.

import type { FastifyPluginAsync } from 'fastify'
import { bearerTokenGuard } from '../src/http/bearer-token.ts'

const metricsRoutes: FastifyPluginAsync = async (app) => {
  const { registry } = app.metrics
  const refused = bearerTokenGuard(app.config.metricsToken, 'variant-origin metrics', 'METRICS_TOKEN')
  app.get(
    '/metrics',
    {
      // Scrapes are not request traffic: no per-request log line, and never shed (the SRE needs them most then).
      logLevel: 'warn',
      config: { pressureHandler: () => undefined },
      schema: { hide: true },
    },
    async (request, reply) => {
      if (refused?.(request, reply)) return reply
      reply.header('cache-control', 'no-store')
      reply.type(registry.contentType)
      return registry.metrics()
    },
  )
}

export default metricsRoutes
