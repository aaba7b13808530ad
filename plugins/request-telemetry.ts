// One onResponse hook per request: the request-duration histogram and the one log line the SRE reads
// (request id, route, status, cache result, duration). Fastify's own two lines per request are off.
// The L1-hit fast path (plugins/hit-fast-path.ts) records its requests through the same function.
// ACCESS_LOG_HITS may log only one cache hit in N (or none); the metrics count every request regardless.

import type { IncomingMessage } from 'node:http'
import fp from 'fastify-plugin'
import pino from 'pino'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { OriginMetrics } from './metrics.ts'

/** What a proxy's X-Request-Id may be: a bounded token, nothing a log line or a log search would trip on. */
export const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/

/**
 * A request id: the CDN's X-Request-Id when a trusted proxy (TRUST_PROXY) sends one that is a bounded
 * token, else this process's prefix and a counter. Any other client could otherwise forge log lines'
 * ids (or pad every line with 200 characters of its choosing).
 */
export function requestIdGenerator(fromTrustedProxy: (req: IncomingMessage) => boolean): (req: IncomingMessage) => string {
  const prefix = `${process.pid.toString(36)}-${Date.now().toString(36)}`
  let counter = 0
  return (req) => {
    const given = req.headers['x-request-id']
    if (typeof given === 'string' && REQUEST_ID_PATTERN.test(given) && fromTrustedProxy(req)) return given
    counter = (counter + 1) % Number.MAX_SAFE_INTEGER
    return `${prefix}-${counter.toString(36)}`
  }
}

/** Requests Fastify could not route (a 404 before any route) share one label, so URLs never become labels. */
const UNMATCHED_ROUTE = '__unmatched__'

export interface RequestRecord {
  method: string
  url: string
  route: string
  status: number
  cache: string
  segment: unknown
  durationMs: number
}

/**
 * ACCESS_LOG_HITS: which cache hits get a line. `every` 1 logs each, 0 none, N the first of every N
 * (a counter, so 100 hits give exactly 100 / N lines, each carrying `sampleRate: N`).
 */
export class HitLogSampler {
  readonly every: number
  private skip = 0
  constructor(every: number) {
    this.every = every
  }

  /** Whether this hit is logged. */
  take(): boolean {
    if (this.every <= 1) return this.every === 1
    if (this.skip > 0) {
      this.skip--
      return false
    }
    this.skip = this.every - 1
    return true
  }
}

/**
 * Each app's sampler, found through its metrics: the one per-app object both callers of recordRequest
 * (the onResponse hook below and the fast path) already pass. None registered: every hit is logged.
 */
const hitSamplers = new WeakMap<OriginMetrics, HitLogSampler>()

/** A hit whose line ACCESS_LOG_HITS may leave out; a 5xx is always logged, whatever answered it. */
const isHit = (record: RequestRecord): boolean => (record.cache === 'HIT-L1' || record.cache === 'HIT-L2') && record.status < 500

/** `log` is the request's logger (it carries reqId) or, on the fast path, the app logger plus `reqId`. */
export function recordRequest(metrics: OriginMetrics, log: FastifyBaseLogger, record: RequestRecord, reqId?: string): void {
  // Counted whether or not its line is written: the metrics see every request.
  metrics.observeRequest(record.method, record.route, record.status, record.cache, record.durationMs / 1000)
  // Skip building the line when info is off (the logger is pino, or Fastify's no-op without a logger).
  const levelCheck = (log as { isLevelEnabled?: (level: string) => boolean }).isLevelEnabled
  if (levelCheck !== undefined && !levelCheck.call(log, 'info')) return
  const sampler = isHit(record) ? hitSamplers.get(metrics) : undefined
  if (sampler !== undefined && !sampler.take()) return
  const durationMs = Math.round(record.durationMs * 100) / 100
  const sampleRate = sampler !== undefined && sampler.every > 1 ? sampler.every : undefined
  if (writeRequestLine(log, record, durationMs, reqId, sampleRate)) return
  const line: Record<string, unknown> = reqId === undefined ? { ...record, durationMs } : { reqId, ...record, durationMs }
  if (sampleRate !== undefined) line.sampleRate = sampleRate
  log.info(line, 'request')
}

const { lsCacheSym, timeSym, chindingsSym, streamSym, endSym, messageKeySym, mixinSym } = pino.symbols
const formattersSym = Symbol.for('pino.formatters')
const hooksSym = Symbol.for('pino.hooks')
const needsMetadataSym = Symbol.for('pino.metadata')
const INFO = 30

/**
 * The request line exactly as pino would write it (its level and time prefix, the logger's bindings, the
 * fields in order, the message, its line end), built in one template: pino's generic path walks the
 * object and stringifies it key by key, which profiled at a sixth of an L1 hit's CPU. Only for a plain
 * pino logger (no log formatter, mixin, hooks or multistream, the message under `msg`), which is what
 * app.ts builds; false otherwise, and pino writes the line. test/unit/request-line.test.ts holds the two
 * outputs equal.
 */
export function writeRequestLine(log: FastifyBaseLogger, record: RequestRecord, durationMs: number, reqId: string | undefined, sampleRate: number | undefined): boolean {
  const l = log as unknown as Record<symbol, unknown>
  const stream = l[streamSym] as { write?: (line: string) => unknown; [needsMetadataSym]?: boolean } | undefined
  const formatters = l[formattersSym] as { log?: unknown } | undefined
  const hooks = l[hooksSym] as { logMethod?: unknown; streamWrite?: unknown } | undefined
  const prefix = (l[lsCacheSym] as Record<number, string> | undefined)?.[INFO]
  if (typeof stream?.write !== 'function' || stream[needsMetadataSym] === true || prefix === undefined || formatters?.log !== undefined || hooks?.logMethod !== undefined || hooks?.streamWrite !== undefined || l[mixinSym] !== undefined || l[messageKeySym] !== 'msg') return false
  const { method, url, route, status, cache, segment } = record
  stream.write(
    `${prefix}${(l[timeSym] as () => string)()}${l[chindingsSym] as string}${reqId === undefined ? '' : `,"reqId":${JSON.stringify(reqId)}`},"method":${JSON.stringify(method)},"url":${JSON.stringify(url)},"route":${JSON.stringify(route)},"status":${status},"cache":${JSON.stringify(cache)}${segment === undefined ? '' : `,"segment":${JSON.stringify(segment)}`},"durationMs":${durationMs}${sampleRate === undefined ? '' : `,"sampleRate":${sampleRate}`},"msg":"request"${l[endSym] as string}`,
  )
  return true
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The segment a page request resolved to (set by the page route), logged whether or not the page varies by it. */
    pageSegment: string | undefined
  }
}

async function requestTelemetryPlugin(app: FastifyInstance): Promise<void> {
  const { metrics } = app
  if (app.config.accessLogHitEvery !== 1) hitSamplers.set(metrics, new HitLogSampler(app.config.accessLogHitEvery))
  app.decorateRequest('pageSegment', undefined)
  app.addHook('onResponse', async (request, reply) => {
    const cache = reply.getHeader('x-cache')
    recordRequest(metrics, request.log, {
      method: request.method,
      url: request.url,
      route: request.routeOptions.url ?? UNMATCHED_ROUTE,
      status: reply.statusCode,
      cache: typeof cache === 'string' ? cache : 'none',
      segment: request.pageSegment,
      durationMs: reply.elapsedTime,
    })
  })
}

export default fp(requestTelemetryPlugin, { name: 'request-telemetry', dependencies: ['config', 'metrics'] })
