// The admin API's bearer-token guard. Each admin route plugin calls `app.adminAuth.protect(app)` in its
// own encapsulated context; without ADMIN_TOKEN it returns false and the caller registers no routes
// (404), so the API is never open by accident.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { bearerTokenGuard } from '../src/http/bearer-token.ts'

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
  // The scheme is case-insensitive (bearer, BEARER); the token is compared in constant time.
  const refused = bearerTokenGuard(app.config.adminToken, 'variant-origin admin', 'ADMIN_TOKEN')
  app.decorate<AdminAuth>('adminAuth', {
    enabled: refused !== undefined,
    security: [{ adminToken: [] }],
    protect(context) {
      if (refused === undefined) return false
      context.addHook('onRequest', async (request, reply) => {
        reply.header('cache-control', 'no-store')
        if (refused(request, reply)) return reply
      })
      return true
    },
  })
}

export default fp(adminAuthPlugin, { name: 'admin-auth', dependencies: ['config'] })
