// GET /openapi.json: the OpenAPI document of the admin, events and health APIs.

import type { FastifyPluginAsync } from 'fastify'

const openapiRoutes: FastifyPluginAsync = async (app) => {
  app.get('/openapi.json', { schema: { hide: true }, logLevel: 'warn' }, async (_request, reply) => {
    reply.header('cache-control', 'no-cache')
    return app.swagger()
  })
}

export default openapiRoutes
