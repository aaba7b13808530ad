// The page surface the CDN pulls: GET/HEAD of any path. Normalize, resolve the segment, serve from
// L1 or render, answer conditional requests with 304. Nothing else runs on a hit.

import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { publicCacheHeaders } from '../src/http/cache-policy.ts'
import { isNotModified } from '../src/http/conditional.ts'
import { normalizeRequestUrl } from '../src/http/url-normalize.ts'
import { resolveSegment } from '../src/segments/segment-resolution.ts'

/** Headers a 304 repeats from the full response (RFC 9110 section 15.4.5). */
const NOT_MODIFIED_HEADERS = ['cache-control', 'cdn-cache-control', 'surrogate-control', 'surrogate-key', 'xkey', 'cache-tag', 'edge-cache-tag', 'etag', 'last-modified', 'vary', 'x-segment']

const pageRoutes: FastifyPluginAsync = async (app) => {
  const { config } = app

  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const normalized = normalizeRequestUrl(request.url)
    const segmentInput = {
      header: request.headers['x-segment'],
      cookieHeader: request.headers.cookie,
      utmSource: normalized.kind === 'invalid' ? undefined : new URLSearchParams(request.url.split('?')[1] ?? '').get('utm_source'),
    }
    const { segment, source } = resolveSegment(app.segments(), segmentInput)

    if (normalized.kind === 'redirect') {
      // Same origin, path only: the Location is built from the canonical path, never from a host.
      const headers = publicCacheHeaders({ ...config, staleWhileRevalidateSeconds: 0, staleIfErrorSeconds: 0 }, config.redirectTtlSeconds, [])
      return reply.code(301).headers(headers).header('location', normalized.location).header('x-segment', segment).type('text/plain; charset=utf-8').send(`Moved to ${normalized.location}\n`)
    }

    const { response, cacheResult } = normalized.kind === 'canonical' ? await app.pages.serve(normalized.path, segment) : await app.pages.serveInvalidPath(segment)
    reply.headers(response.headers).header('x-cache', cacheResult)
    if (source === 'cookie' || source === 'utm') {
      // The segment came from something a shared cache does not key on: this copy is for this browser only.
      reply
        .header('cache-control', `private, max-age=${config.browserMaxAgeSeconds}`)
        .removeHeader('cdn-cache-control')
        .removeHeader('surrogate-control')
    }

    if (response.status === 200 && isNotModified({ ifNoneMatch: request.headers['if-none-match'], ifModifiedSince: request.headers['if-modified-since'] }, response.etag, response.lastModified)) {
      const kept = Object.fromEntries(NOT_MODIFIED_HEADERS.flatMap((name) => {
        const value = reply.getHeader(name)
        return value === undefined ? [] : [[name, value]]
      }))
      reply.removeHeader('content-type')
      for (const name of Object.keys(reply.getHeaders())) if (!(name in kept) && name !== 'x-cache') reply.removeHeader(name)
      return reply.code(304).send()
    }
    return reply.code(response.status).send(response.body)
  }

  app.get('/', handler)
  app.get('/*', handler)
}

export default pageRoutes
