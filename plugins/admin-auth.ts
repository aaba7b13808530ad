// The admin API's bearer-token guard, shared by every admin route file. Each admin route plugin calls
// `requireAdminToken(app)` in its own encapsulated context; without ADMIN_TOKEN its routes are not
// registered at all (404), so the API is never open by accident.

import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance } from 'fastify'

const digest = (value: string): Buffer => createHash('sha256').update(value).digest()

/** A constant-time check of `Authorization: Bearer <token>` against one token. */
export function bearerTokenCheck(token: string): (authorization: string | undefined) => boolean {
  const expected = digest(token)
  return (authorization = '') => {
    const presented = authorization.startsWith('Bearer ') ? authorization.slice(7) : ''
    // Comparing fixed-length digests keeps the comparison constant-time whatever the lengths.
    return timingSafeEqual(digest(presented), expected)
  }
}

/** The OpenAPI security requirement the admin routes declare. */
export const ADMIN_SECURITY = [{ adminToken: [] }]

/**
 * Adds the token check to every route of this encapsulated context. Returns false (and registers
 * nothing) when ADMIN_TOKEN is not set: the caller then registers no routes.
 */
export function requireAdminToken(app: FastifyInstance): boolean {
  const token = app.config.adminToken
  if (token === undefined) return false
  const authorized = bearerTokenCheck(token)
  app.addHook('onRequest', async (request, reply) => {
    reply.header('cache-control', 'no-store')
    if (!authorized(request.headers.authorization)) {
      reply.header('www-authenticate', 'Bearer realm="variant-origin admin"')
      return reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'send Authorization: Bearer <ADMIN_TOKEN>' })
    }
  })
  return true
}
