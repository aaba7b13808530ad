// The L1-hit fast path: a request listener in front of Fastify that answers fresh in-process hits
// straight from the stored bytes and headers, and hands everything else to Fastify untouched.
// DESIGN: "A hit replies with the stored bytes and headers ... Nothing else runs on a hit." Fastify's
// per-request machinery (routing, request/reply objects, child logger, hooks) costs more than the
// lookup itself; bench/RESULTS.md measures the difference.
//
// Only plain GET/HEAD of a canonical path without a query, on a fresh L1 entry, take this path; any
// redirect, utm rule, miss, L2 read, stale answer or error goes through Fastify's page route, which
// builds its reply with the same pageResponseHead(), so both paths answer a request identically.
// Hits are not shed under load: a hit costs what a 503 would. While the app closes, Fastify answers.

import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { CachedResponse } from '../src/cache/response-cache.ts'
import { isNotModified } from '../src/http/conditional.ts'
import { type PageResponseHead, pageResponseHead } from '../src/http/page-response.ts'
import { normalizeRequestUrl } from '../src/http/url-normalize.ts'
import { resolveSegment } from '../src/segments/segment-resolution.ts'
import { recordRequest } from './request-telemetry.ts'

export interface ServerTimeouts {
  connectionTimeout: number
  keepAliveTimeout: number
  requestTimeout: number
}

/** A request id: the CDN's X-Request-Id when it sends one, else this process's prefix and a counter. */
export function requestIdGenerator(): (req: IncomingMessage) => string {
  const prefix = `${process.pid.toString(36)}-${Date.now().toString(36)}`
  let counter = 0
  return (req) => {
    const given = req.headers['x-request-id']
    if (typeof given === 'string' && given !== '' && given.length <= 200) return given
    counter = (counter + 1) % Number.MAX_SAFE_INTEGER
    return `${prefix}-${counter.toString(36)}`
  }
}

type HitHandler = (req: IncomingMessage, res: ServerResponse) => boolean

declare module 'fastify' {
  interface FastifyInstance {
    hitFastPath: HitFastPath
  }
}

/**
 * Created before Fastify (its serverFactory builds the HTTP server) and armed by the plugin below once
 * the page service exists; until then every request goes to Fastify.
 */
export class HitFastPath {
  private handle: HitHandler | undefined
  /** Requests answered here rather than by Fastify. */
  served = 0

  /** Fastify's serverFactory: Fastify leaves the server timeouts to the factory, so they are set here. */
  createServer(fastifyHandler: RequestListener, timeouts: ServerTimeouts): Server {
    const server = createServer((req, res) => {
      if (this.handle !== undefined && this.handle(req, res)) this.served++
      else fastifyHandler(req, res)
    })
    server.keepAliveTimeout = timeouts.keepAliveTimeout
    server.requestTimeout = timeouts.requestTimeout
    server.setTimeout(timeouts.connectionTimeout)
    return server
  }

  arm(handle: HitHandler | undefined): void {
    this.handle = handle
  }
}

const withLength = (head: PageResponseHead): PageResponseHead => {
  if (head.body !== undefined) head.headers['content-length'] = String(head.body.length)
  return head
}

/**
 * The two answers a shared (not cookie-keyed) hit can get, built once per cached response by the same
 * pageResponseHead() the Fastify route uses, so a hit costs a lookup and a write.
 */
const headsByResponse = new WeakMap<CachedResponse, { full: PageResponseHead; notModified: PageResponseHead }>()
function sharedHeads(response: CachedResponse): { full: PageResponseHead; notModified: PageResponseHead } {
  let heads = headsByResponse.get(response)
  if (heads === undefined) {
    heads = {
      full: withLength(pageResponseHead(response, { cacheResult: 'HIT-L1', conditional: {} })),
      notModified: pageResponseHead(response, { cacheResult: 'HIT-L1', conditional: { ifNoneMatch: response.etag } }),
    }
    headsByResponse.set(response, heads)
  }
  return heads
}

async function hitFastPathPlugin(app: FastifyInstance, options: { fastPath: HitFastPath; genReqId: (req: IncomingMessage) => string }): Promise<void> {
  const { fastPath, genReqId } = options
  const { pages, metrics, log } = app
  const privateCacheControl = `private, max-age=${app.config.browserMaxAgeSeconds}`
  let closing = false
  app.decorate('hitFastPath', fastPath)

  fastPath.arm((req, res) => {
    if (closing || (req.method !== 'GET' && req.method !== 'HEAD')) return false
    const url = req.url ?? ''
    if (url.includes('?')) return false
    const started = performance.now()
    try {
      const normalized = normalizeRequestUrl(url)
      if (normalized.kind !== 'canonical') return false
      const { segment, source } = resolveSegment(app.segments(), { header: req.headers['x-segment'], cookieHeader: req.headers.cookie, utmSource: undefined })
      const response = pages.freshLocal(normalized.path, segment)
      if (response === undefined) return false
      const conditional = { ifNoneMatch: req.headers['if-none-match'], ifModifiedSince: req.headers['if-modified-since'] }
      const head =
        source === 'cookie'
          ? withLength(pageResponseHead(response, { cacheResult: 'HIT-L1', conditional, privateCacheControl }))
          : response.status === 200 && isNotModified(conditional, response.etag, response.lastModified)
            ? sharedHeads(response).notModified
            : sharedHeads(response).full
      res.writeHead(head.status, head.headers)
      // A HEAD answer carries the GET's Content-Length and no body (writing one would close the connection).
      if (req.method === 'HEAD') res.end()
      else res.end(head.body)
      recordRequest(metrics, log, { method: req.method, url, route: '/*', status: head.status, cache: 'HIT-L1', segment, durationMs: performance.now() - started }, genReqId(req))
      return true
    } catch (err) {
      // Nothing was written when anything above throws: Fastify answers instead, and the bug is logged.
      if (res.headersSent) throw err
      log.error({ err, url }, 'the L1 fast path failed; answering through Fastify')
      return false
    }
  })
  app.addHook('preClose', async () => {
    closing = true
  })
  app.addHook('onClose', async () => fastPath.arm(undefined))
}

export default fp(hitFastPathPlugin, { name: 'hit-fast-path', dependencies: ['pages', 'metrics'] })
