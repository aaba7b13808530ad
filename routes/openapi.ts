// GET /openapi.json: the OpenAPI document of the admin, events and health APIs; behind a bearer token
// when OPENAPI_TOKEN is set (the same guard as /metrics).

import type { FastifyPluginAsync } from 'fastify'
import { bearerTokenGuard } from '../src/http/bearer-token.ts'

const openapiRoutes: FastifyPluginAsync = async (app) => {
  const refused = bearerTokenGuard(app.config.openapiToken, 'variant-origin openapi', 'OPENAPI_TOKEN')
  app.get('/openapi.json', { schema: { hide: true }, logLevel: 'warn' }, async (request, reply) => {
    if (refused?.(request, reply)) return reply
    // Behind a token, no cache keeps a copy; open, a cache may keep it if it revalidates.
    reply.header('cache-control', refused === undefined ? 'no-cache' : 'no-store')
    return app.swagger()
  })
}

export default openapiRoutes
