// OpenAPI 3.1 document generated from the route schemas (@fastify/swagger), served at /openapi.json.
// Registered before the routes so it sees every one; the page catch-all and /metrics are hidden.

import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import type { FastifyInstance } from 'fastify'

async function openapiPlugin(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'variant-origin',
        version: '0.1.0',
        description: 'Admin, events and health APIs of the variant-origin CDN origin. Page URLs (any other GET) are served to the CDN and are not listed.',
      },
      servers: [{ url: app.config.publicBaseUrl }],
      components: {
        securitySchemes: {
          adminToken: { type: 'http', scheme: 'bearer', description: 'ADMIN_TOKEN from the origin environment' },
        },
      },
      tags: [
        { name: 'admin', description: 'Content pipelines: ingest, purge, warm-up (bearer token)' },
        { name: 'events', description: 'Engagement events from browsers' },
        { name: 'health', description: 'Liveness and readiness probes' },
      ],
    },
  })
}

export default fp(openapiPlugin, { name: 'openapi', dependencies: ['config'] })
