// The cache-hit fast path: a request listener in front of Fastify that answers fresh hits (L1, else
// one L2 read) straight from the stored bytes and headers, and hands everything else to Fastify.
// DESIGN: "A hit replies with the stored bytes and headers ... Nothing else runs on a hit." Fastify's
// per-request machinery (routing, request/reply objects, child logger, hooks) costs more than the
// lookup itself; bench/RESULTS.md measures the difference.
//
// Only plain GET/HEAD of a canonical path without a query, on a fresh L1 or L2 entry, take this path;
// any redirect, utm rule, miss, stale answer or error goes through Fastify's page route (with the
// lookup already made, so no tier is asked twice), which
// builds its reply with the same pageResponseHead(), so both paths answer a request identically.
// Hits are not shed under load: a hit costs what a 503 would. While the app closes, Fastify answers.

import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http'
import { performance } from 'node:perf_hooks'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { CachedResponse } from '../src/cache/response-cache.ts'
import { privateCacheControl } from '../src/http/cache-policy.ts'
import { isNotModified } from '../src/http/conditional.ts'
import { chooseCoding, type ContentCoding } from '../src/http/content-coding.ts'
import { parsePageRequest, type PageRequest } from '../src/http/page-request.ts'
import { type PageResponseHead, pageResponseHead } from '../src/http/page-response.ts'
import type { CacheLookup, ServedPage } from '../src/pages/page-service.ts'
import { recordRequest } from './request-telemetry.ts'

export interface ServerTimeouts {
  connectionTimeout: number
  keepAliveTimeout: number
  requestTimeout: number
  /** Time to receive the request line and headers; a body may then take up to requestTimeout. */
  headersTimeout: number
  /** How often Node closes connections past headersTimeout/requestTimeout (only settable at construction). */
  connectionsCheckingInterval: number
}

/** true: answered; false: Fastify's; a promise: an L2 read is under way, then one of the two. */
type HitHandler = (req: IncomingMessage, res: ServerResponse) => boolean | Promise<boolean>

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
  /** Lookups made here that could not answer, for the page route to go on with (a request's own, once). */
  private readonly lookups = new WeakMap<IncomingMessage, { path: string; segment: string; lookup: CacheLookup }>()
  /** Requests answered here rather than by Fastify. */
  served = 0

  /** The cache lookup this request already had (path and segment must match), taken once. */
  takeLookup(req: IncomingMessage, path: string, segment: string): CacheLookup | undefined {
    const stashed = this.lookups.get(req)
    if (stashed === undefined) return undefined
    this.lookups.delete(req)
    return stashed.path === path && stashed.segment === segment ? stashed.lookup : undefined
  }

  /** Hands a lookup that could not answer to the page route, through the request itself. */
  handOver(req: IncomingMessage, path: string, segment: string, lookup: CacheLookup): void {
    this.lookups.set(req, { path, segment, lookup })
  }

  /** Fastify's serverFactory: Fastify leaves the server timeouts to the factory, so they are set here. */
  createServer(fastifyHandler: RequestListener, timeouts: ServerTimeouts): Server {
    const { headersTimeout, requestTimeout, keepAliveTimeout, connectionsCheckingInterval } = timeouts
    const server = createServer({ headersTimeout, requestTimeout, keepAliveTimeout, connectionsCheckingInterval }, (req, res) => {
      const handled = this.handle === undefined ? false : this.handle(req, res)
      if (handled === true) this.served++
      else if (handled === false) fastifyHandler(req, res)
      else {
        handled.then(
          (answered) => (answered ? this.served++ : fastifyHandler(req, res)),
          () => fastifyHandler(req, res), // the handler writes nothing before it can answer in full
        )
      }
    })
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
 * The two answers a shared (not cookie-keyed) hit can get, per coding, built once per cached response by
 * the same pageResponseHead() the Fastify route uses, so a hit costs a lookup and a write.
 */
interface SharedHeads {
  full: PageResponseHead
  notModified: PageResponseHead
  /** The ETag of the representation `full` carries: what a conditional request is compared with. */
  etag: string
}
const headsByResponse = new WeakMap<CachedResponse, Map<string, SharedHeads>>()
function sharedHeads(response: CachedResponse, cacheResult: string, coding: ContentCoding | undefined, tag: string | undefined): SharedHeads {
  let byResult = headsByResponse.get(response)
  if (byResult === undefined) headsByResponse.set(response, (byResult = new Map()))
  const id = `${cacheResult} ${coding ?? ''} ${tag ?? ''}`
  let heads = byResult.get(id)
  if (heads === undefined) {
    const accepts = coding === undefined ? [] : [coding]
    const etag = coding === undefined ? response.etag : response.encodings[coding]!.etag
    heads = {
      full: withLength(pageResponseHead(response, { cacheResult, accepts, conditional: {}, tag })),
      notModified: pageResponseHead(response, { cacheResult, accepts, conditional: { ifNoneMatch: etag }, tag }),
      etag,
    }
    byResult.set(id, heads)
  }
  return heads
}

/** What a handed-over lookup was made for: the segment, and the variant under experiment. */
export function lookupIdentity(segment: string, arm: { variantId: number } | undefined): string {
  return arm === undefined ? segment : `${segment} v${arm.variantId}`
}

async function hitFastPathPlugin(app: FastifyInstance, options: { fastPath: HitFastPath; genReqId: (req: IncomingMessage) => string }): Promise<void> {
  const { fastPath, genReqId } = options
  const { pages, metrics, log } = app
  const privateControl = privateCacheControl(app.config)
  let closing = false
  app.decorate('hitFastPath', fastPath)

  // Paths some other GET route owns (health, metrics, sitemaps...) never look like pages here: they
  // would cost a cache lookup (and an L2 read) per probe and skew the hit ratios.
  const otherRoutes = new Set<string>()
  const otherPrefixes: string[] = []
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method]
    if (!methods.includes('GET') || route.url === '/' || route.url === '/*') return
    const wildcard = route.url.search(/[:*]/)
    if (wildcard === -1) otherRoutes.add(route.url)
    else otherPrefixes.push(route.url.slice(0, wildcard))
  })
  const ownedByAnotherRoute = (path: string): boolean => otherRoutes.has(path) || otherPrefixes.some((prefix) => path.startsWith(prefix))

  const answer = (req: IncomingMessage, res: ServerResponse, started: number, served: ServedPage, request: PageRequest, tag: string | undefined): void => {
    const { response, cacheResult } = served
    let head: PageResponseHead
    if (request.cacheability === 'private' && response.perSegment) {
      head = withLength(pageResponseHead(response, { cacheResult, conditional: request.conditional, accepts: request.accepts, privateCacheControl: privateControl, tag }))
    } else {
      const heads = sharedHeads(response, cacheResult, chooseCoding(response.encodings, request.accepts), tag)
      head = response.status === 200 && isNotModified(request.conditional, heads.etag, response.lastModified) ? heads.notModified : heads.full
    }
    res.writeHead(head.status, head.headers)
    // A HEAD answer carries the GET's Content-Length and no body (writing one would close the connection).
    if (req.method === 'HEAD') res.end()
    else res.end(head.body)
    recordRequest(metrics, log, { method: req.method!, url: req.url!, route: '/*', status: head.status, cache: cacheResult, segment: request.segment, durationMs: performance.now() - started }, genReqId(req))
  }

  // L1 hits are written in one batch per event-loop turn (setImmediate: right after the poll phase has
  // read and parsed every request that arrived), not each from inside its own socket's read callback.
  // Answering a hit costs the same either way; the batch is what differs: the writes, their syscalls and
  // the log lines come one after another with the code and data hot, and the loop turns once for the
  // lot. Measured (bench/RESULTS.md, `npm run bench`): some 10 us less CPU per L1 hit under load, 40 ->
  // 30 us; the wait it adds is the rest of that turn's reads, microseconds. A socket that closed
  // meanwhile gets nothing written (node drops writes to a destroyed socket).
  interface Due {
    req: IncomingMessage
    res: ServerResponse
    started: number
    response: CachedResponse
    request: PageRequest
    tag: string | undefined
  }
  let due: Due[] = []
  const answerDue = (): void => {
    const batch = due
    due = []
    for (const { req, res, started, response, request, tag } of batch) {
      try {
        answer(req, res, started, { response, cacheResult: 'HIT-L1' }, request, tag)
      } catch (err) {
        // answer() builds nothing that can throw short of a bug; the rest of the batch is answered regardless.
        log.error({ err, url: req.url }, 'answering an L1 hit failed')
        if (!res.headersSent) res.writeHead(500, { 'cache-control': 'no-store', 'content-length': '0' }).end()
        else res.destroy()
      }
    }
  }
  const answerSoon = (req: IncomingMessage, res: ServerResponse, started: number, response: CachedResponse, request: PageRequest, tag: string | undefined): void => {
    if (due.push({ req, res, started, response, request, tag }) === 1) setImmediate(answerDue)
  }

  fastPath.arm((req, res) => {
    if (closing || (req.method !== 'GET' && req.method !== 'HEAD')) return false
    const url = req.url ?? ''
    if (url.includes('?')) return false
    const started = performance.now()
    try {
      const request = parsePageRequest({ url, headers: req.headers }, app.segments(), app.config.queryAllowlist)
      const { target, segment } = request
      if (target.kind !== 'canonical' || ownedByAnotherRoute(target.path)) return false
      // A page under experiment for this segment: the variant the request's bucket sees.
      const arm = app.experiments.registry.arm(target.path, segment, req.headers['x-bucket'])
      const response = pages.freshLocal(target.path, segment, arm)
      if (response !== undefined) {
        answerSoon(req, res, started, response, request, arm?.tag)
        return true
      }
      if (!pages.hasSharedTier) return false
      // Not fresh here: one L2 read, answered here on a hit, else handed to the page route with the lookup.
      return pages.lookup(target.path, segment, arm).then((lookup) => {
        if (lookup.hit === undefined || closing) {
          fastPath.handOver(req, target.path, lookupIdentity(segment, arm), lookup)
          return false
        }
        answer(req, res, started, lookup.hit, request, arm?.tag)
        return true
      })
    } catch (err) {
      // Nothing was written when anything above throws: Fastify answers instead, and the bug is logged.
      if (res.headersSent) throw err
      log.error({ err, url }, 'the cache fast path failed; answering through Fastify')
      return false
    }
  })
  app.addHook('preClose', async () => {
    closing = true
  })
  app.addHook('onClose', async () => fastPath.arm(undefined))
}

export default fp(hitFastPathPlugin, { name: 'hit-fast-path', dependencies: ['pages', 'segments', 'metrics'] })
