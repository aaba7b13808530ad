// The admin API's bearer-token guard. Each admin route plugin calls `app.adminAuth.protect(app)` in its
// own encapsulated context; without ADMIN_TOKEN it returns false and the caller registers no routes
// (404), so the API is never open by accident.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { bearerTokenCheck } from '../src/http/bearer-token.ts'

export interface AdminAuth {
  /** Whether ADMIN_TOKEN is set (the admin API exists). */
  enabled: boolean
  /** The OpenAPI security requirement the admin routes declare. */
  security: Array<Record<string, string[]>>
  /**
   * Adds the token check (and no-store) to every route of this encapsulated context. Returns false, and
   * adds nothing, when ADMIN_TOKEN is not set: the caller then registers no routes.
   */
  protect(context: FastifyInstance): boolean
}

declare module 'fastify' {
  interface FastifyInstance {
    adminAuth: AdminAuth
  }
}

async function adminAuthPlugin(app: FastifyInstance): Promise<void> {
  const token = app.config.adminToken
  const authorized = token === undefined ? undefined : bearerTokenCheck(token)
  app.decorate<AdminAuth>('adminAuth', {
    enabled: authorized !== undefined,
    security: [{ adminToken: [] }],
    protect(context) {
      if (authorized === undefined) return false
      context.addHook('onRequest', async (request, reply) => {
        reply.header('cache-control', 'no-store')
        if (!authorized(request.headers.authorization)) {
          reply.header('www-authenticate', 'Bearer realm="variant-origin admin"')
          return reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'send Authorization: Bearer <ADMIN_TOKEN>' })
        }
      })
      return true
    },
  })
}

export default fp(adminAuthPlugin, { name: 'admin-auth', dependencies: ['config'] })
