// The page surface the CDN pulls: GET/HEAD of any path. Normalize, resolve the segment, serve from
// L1 or render, answer conditional requests with 304. Nothing else runs on a hit.

import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { publicCacheHeaders } from '../src/http/cache-policy.ts'
import { pageResponseHead } from '../src/http/page-response.ts'
import { takeFastPathLookup } from '../plugins/hit-fast-path.ts'
import { normalizeRequestUrl } from '../src/http/url-normalize.ts'
import { resolveSegment, SEGMENT_COOKIE } from '../src/segments/segment-resolution.ts'

const SEGMENT_COOKIE_MAX_AGE = 30 * 86_400

const pageRoutes: FastifyPluginAsync = async (app) => {
  const { config } = app
  const redirectHeaders = {
    ...publicCacheHeaders({ ...config, staleWhileRevalidateSeconds: 0, staleIfErrorSeconds: 0 }, config.redirectTtlSeconds, []),
    'content-type': 'text/plain; charset=utf-8',
  }
  const privateCacheControl = `private, max-age=${config.browserMaxAgeSeconds}`

  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const url = request.url
    const normalized = normalizeRequestUrl(url)
    const queryAt = url.indexOf('?')
    const directory = app.segments()
    const { segment, source } = resolveSegment(directory, {
      header: request.headers['x-segment'],
      cookieHeader: request.headers.cookie,
      utmSource: queryAt === -1 ? undefined : new URLSearchParams(url.slice(queryAt + 1)).get('utm_source'),
    })

    if (normalized.kind === 'redirect') {
      // Same origin, path only: the Location is built from the canonical path, never from a host.
      reply.code(301).headers(redirectHeaders).header('location', normalized.location).header('x-segment', segment)
      if (source === 'utm') {
        // The utm rule chose a segment: the cookie carries it past the redirect that drops the utm
        // parameters. A response that sets a cookie is never stored by a shared cache.
        reply
          .header('set-cookie', `${SEGMENT_COOKIE}=${segment}; Path=/; Max-Age=${SEGMENT_COOKIE_MAX_AGE}; SameSite=Lax; HttpOnly`)
          .header('cache-control', 'private, no-store')
          .removeHeader('cdn-cache-control')
          .removeHeader('surrogate-control')
      }
      return reply.send(`Moved to ${normalized.location}\n`)
    }

    const { response, cacheResult } =
      normalized.kind === 'canonical'
        ? await app.pages.serve(normalized.path, segment, directory.defaultSlug, takeFastPathLookup(request.raw, normalized.path, segment))
        : await app.pages.serveInvalidPath(segment)
    const head = pageResponseHead(response, {
      cacheResult,
      conditional: { ifNoneMatch: request.headers['if-none-match'], ifModifiedSince: request.headers['if-modified-since'] },
      privateCacheControl: source === 'cookie' || source === 'utm' ? privateCacheControl : undefined,
    })
    reply.code(head.status).headers(head.headers)
    return head.body === undefined ? reply.send() : reply.send(head.body)
  }

  // Page URLs are the CDN's surface, not an API: left out of the OpenAPI document.
  app.get('/', { schema: { hide: true } }, handler)
  app.get('/*', { schema: { hide: true } }, handler)
}

export default pageRoutes
