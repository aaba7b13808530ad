// `Authorization: Bearer <token>` checked in constant time (the admin API, /metrics, /openapi.json).

import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyReply, FastifyRequest } from 'fastify'

const digest = (value: string): Buffer => createHash('sha256').update(value).digest()

/** `<scheme> 1*SP <token>`: the scheme is case-insensitive (RFC 9110 section 11.1), so bearer and BEARER are Bearer. */
const BEARER = /^bearer +(\S+)$/i

/** A constant-time check of `Authorization: Bearer <token>` against one token. */
export function bearerTokenCheck(token: string): (authorization: string | undefined) => boolean {
  const expected = digest(token)
  return (authorization = '') => {
    const presented = BEARER.exec(authorization)?.[1] ?? ''
    // Comparing fixed-length digests keeps the comparison constant-time whatever the lengths.
    return timingSafeEqual(digest(presented), expected)
  }
}

/**
 * A route's guard behind an optional token (METRICS_TOKEN, OPENAPI_TOKEN): undefined when no token is
 * set (the route is open; restrict it at the network), else a check that answers `401` with
 * `WWW-Authenticate` and `no-store` to a request without the token, and returns whether it did.
 */
export function bearerTokenGuard(token: string | undefined, realm: string, variable: string): ((request: FastifyRequest, reply: FastifyReply) => boolean) | undefined {
  if (token === undefined) return undefined
  const authorized = bearerTokenCheck(token)
  return (request, reply) => {
    if (authorized(request.headers.authorization)) return false
    void reply
      .code(401)
      .header('cache-control', 'no-store')
      .header('www-authenticate', `Bearer realm="${realm}"`)
      .send({ statusCode: 401, error: 'Unauthorized', message: `send Authorization: Bearer <${variable}>` })
    return true
  }
}
