// What goes on the wire for a cached page response: status, headers and body, for a full answer or a
// 304. One function, used by the Fastify page route and by the raw L1-hit fast path alike, so the two
// can never answer the same request differently.

import type { CachedResponse } from '../cache/response-cache.ts'
import { type ConditionalHeaders, isNotModified } from './conditional.ts'

export interface PageResponseHead {
  status: number
  headers: Record<string, string>
  /** undefined for a 304. */
  body: Buffer | undefined
}

export interface PageResponseOptions {
  /** The X-Cache value: HIT-L1, HIT-L2, STALE, MISS or DEFAULT. */
  cacheResult: string
  conditional: ConditionalHeaders
  /**
   * Set when the segment came from something a shared cache does not key on (cookie, utm): the copy is
   * for this browser only, so this Cache-Control replaces the shared one and the CDN-only headers go.
   */
  privateCacheControl?: string | undefined
  now?: number
}

export function pageResponseHead(response: CachedResponse, options: PageResponseOptions): PageResponseHead {
  const notModified = response.status === 200 && isNotModified(options.conditional, response.etag, response.lastModified)
  const headers: Record<string, string> = { ...(notModified ? response.notModifiedHeaders : response.headers), 'x-cache': options.cacheResult }
  // A stale answer says how old it is, so a CDN counts its TTL from the render, not from now.
  if (options.cacheResult === 'STALE') headers.age = String(Math.max(0, Math.floor(((options.now ?? Date.now()) - response.renderedAt) / 1000)))
  if (options.privateCacheControl !== undefined) {
    headers['cache-control'] = options.privateCacheControl
    delete headers['cdn-cache-control']
    delete headers['surrogate-control']
  }
  return { status: notModified ? 304 : response.status, headers, body: notModified ? undefined : response.body }
}
