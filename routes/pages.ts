// The page surface the CDN pulls: GET/HEAD of any path. Fresh hits were answered in front of Fastify
// (plugins/hit-fast-path.ts); what reaches this route is a redirect, a miss, a stale answer or an
// invalid path: parse the request (src/http/page-request.ts), serve it (src/pages/page-service.ts),
// put it on the wire (src/http/page-response.ts).

import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { privateCacheControl, shortLivedCacheHeaders } from '../src/http/cache-policy.ts'
import { parsePageRequest } from '../src/http/page-request.ts'
import { pageResponseHead } from '../src/http/page-response.ts'
import { lookupIdentity } from '../plugins/hit-fast-path.ts'
import { SEGMENT_COOKIE } from '../src/segments/segment-resolution.ts'

const SEGMENT_COOKIE_MAX_AGE = 30 * 86_400

const pageRoutes: FastifyPluginAsync = async (app) => {
  const { config, pages, hitFastPath } = app
  const redirectHeaders = { ...shortLivedCacheHeaders(config, config.redirectTtlSeconds, []), 'content-type': 'text/plain; charset=utf-8' }
  const privateControl = privateCacheControl(config)
  // PUBLIC_BASE_URL is https (config.ts refuses anything else): the segment cookie is never sent in the clear.
  const secureCookie = config.publicBaseUrl.startsWith('https:') ? '; Secure' : ''

  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const directory = app.segments()
    const { target, segment, segmentSource, cacheability, campaign, conditional, accepts } = parsePageRequest(request, directory, config.queryAllowlist)
    request.pageSegment = segment

    if (target.kind === 'redirect') {
      // Same origin, path only: the Location is built from the canonical path, never from a host.
      if (!campaign) return reply.code(301).headers(redirectHeaders).header('location', target.location).send(`Moved to ${target.location}\n`)
      // A campaign URL (a utm_source a rule names): whether this answer sets the segment cookie depends on
      // the request's header and cookie, so no shared cache keeps it, whichever way it went.
      reply.code(301).header('location', target.location).header('cache-control', 'private, no-store').header('content-type', 'text/plain; charset=utf-8')
      if (segmentSource === 'utm') {
        // The utm rule chose the segment: the cookie carries it past the redirect that drops the utm parameters.
        reply.header('set-cookie', `${SEGMENT_COOKIE}=${segment}; Path=/; Max-Age=${SEGMENT_COOKIE_MAX_AGE}; SameSite=Lax; HttpOnly${secureCookie}`).header('x-segment', segment)
      }
      return reply.send(`Moved to ${target.location}\n`)
    }

    // A page under experiment for this segment: the variant the request's bucket sees (a bucket on any other page is ignored).
    const arm = target.kind === 'canonical' ? app.experiments.registry.arm(target.path, segment, request.headers['x-bucket']) : undefined
    const { response, cacheResult } =
      target.kind === 'canonical'
        ? await pages.serve(target.path, segment, directory.defaultSlug, hitFastPath.takeLookup(request.raw, target.path, lookupIdentity(segment, arm)), arm)
        : pages.serveInvalidPath()
    const head = pageResponseHead(response, { cacheResult, conditional, accepts, privateCacheControl: cacheability === 'private' ? privateControl : undefined, tag: arm?.tag })
    reply.code(head.status).headers(head.headers)
    return head.body === undefined ? reply.send() : reply.send(head.body)
  }

  // Page URLs are the CDN's surface, not an API: left out of the OpenAPI document.
  app.get('/', { schema: { hide: true } }, handler)
  app.get('/*', { schema: { hide: true } }, handler)
}

export default pageRoutes
