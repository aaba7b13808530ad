// What goes on the wire for a cached page response: status, headers and body, for a full answer or a
// 304. One function, used by the Fastify page route and by the raw L1-hit fast path alike, so the two
// can never answer the same request differently.

import type { CachedResponse } from '../cache/response-cache.ts'
import { type ConditionalHeaders, isNotModified } from './conditional.ts'
import { type ContentCoding, chooseCoding } from './content-coding.ts'

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
  /** The codings the request accepts, preferred first (acceptedCodings()); none: the identity bytes. */
  accepts?: readonly ContentCoding[]
  /**
   * Set when the segment came from something a shared cache does not key on (cookie, utm): the copy is
   * for this browser only, so this Cache-Control replaces the shared one and the CDN-only headers go.
   * Ignored for an entry that is the same for every segment: any cache may keep that one.
   */
  privateCacheControl?: string | undefined
  now?: number
  /**
   * One more purge tag for this answer: a page under experiment is one entry per variant at the origin,
   * but each bucket's object at the CDN carries its own tag, so a reallocation purges just the buckets it moved.
   */
  tag?: string | undefined
}

export function pageResponseHead(response: CachedResponse, options: PageResponseOptions): PageResponseHead {
  // Each coding is its own representation: its bytes, its ETag; the validators are compared against it.
  const coding = options.accepts === undefined ? undefined : chooseCoding(response.encodings, options.accepts)
  const encoded = coding === undefined ? undefined : response.encodings[coding]
  const etag = encoded === undefined ? response.etag : encoded.etag
  const notModified = response.status === 200 && isNotModified(options.conditional, etag, response.lastModified)
  const headers: Record<string, string> = { ...(notModified ? response.notModifiedHeaders : response.headers), 'x-cache': options.cacheResult }
  if (encoded !== undefined) {
    headers.etag = etag
    if (!notModified) headers['content-encoding'] = coding!
  }
  // A stale answer says how old it is, so a CDN counts its TTL from the render, not from now.
  if (options.cacheResult === 'STALE') headers.age = String(Math.max(0, Math.floor(((options.now ?? Date.now()) - response.renderedAt) / 1000)))
  if (options.tag !== undefined) addTag(headers, options.tag)
  if (options.privateCacheControl !== undefined && response.perSegment) {
    headers['cache-control'] = options.privateCacheControl
    delete headers['cdn-cache-control']
    delete headers['surrogate-control']
  }
  return { status: notModified ? 304 : response.status, headers, body: notModified ? undefined : (encoded?.body ?? response.body) }
}

/** Appends a tag to whichever tag header the entry carries (space- or comma-separated, as that CDN reads it). */
function addTag(headers: Record<string, string>, tag: string): void {
  for (const [name, separator] of [['surrogate-key', ' '], ['xkey', ' '], ['cache-tag', ','], ['edge-cache-tag', ',']] as const) {
    const value = headers[name]
    if (value !== undefined) headers[name] = `${value}${separator}${tag}`
  }
}

/** Headers a 304 repeats from the full response: caching, tags, validators, Vary (RFC 9110 section 15.4.5). */
const NOT_MODIFIED_HEADERS = ['cache-control', 'cdn-cache-control', 'surrogate-control', 'surrogate-key', 'xkey', 'cache-tag', 'edge-cache-tag', 'etag', 'last-modified', 'vary', 'x-segment']

export interface EntryHeaderInput {
  status: number
  /** Cache-Control and the CDN's targeted and tag headers (src/http/cache-policy.ts). */
  cacheHeaders: Record<string, string>
  /** The segment the bytes were rendered for; undefined when they are the same for every segment. */
  segment: string | undefined
  etag: string
  /** Whole seconds (HTTP dates carry no more). */
  lastModified: Date
  /** The entry is offered gzip/brotli-coded: the bytes then depend on Accept-Encoding too. */
  compressed: boolean
  /** The page is under experiment for this segment: the bytes depend on the visitor's bucket (X-Bucket). */
  experiment?: boolean
}

/** Every header a rendered page entry is stored with, and the subset its 304 repeats, assembled once at render time. */
export function pageEntryHeaders(input: EntryHeaderInput): { headers: Record<string, string>; notModifiedHeaders: Record<string, string> } {
  const headers: Record<string, string> = { 'content-type': 'text/html; charset=utf-8', ...input.cacheHeaders }
  // Vary names only what changes the bytes: a page that is the same for every segment is one CDN object
  // (one per coding, which caches such as Varnish fold into one compressed object).
  const vary = [...(input.segment === undefined ? [] : ['X-Segment']), ...(input.experiment === true ? ['X-Bucket'] : []), ...(input.compressed ? ['Accept-Encoding'] : [])]
  if (vary.length > 0) headers.vary = vary.join(', ')
  if (input.segment !== undefined) headers['x-segment'] = input.segment
  headers['x-content-type-options'] = 'nosniff'
  if (input.status === 200) {
    headers.etag = input.etag
    headers['last-modified'] = input.lastModified.toUTCString()
  }
  return { headers, notModifiedHeaders: notModifiedSubset(headers) }
}

function notModifiedSubset(headers: Record<string, string>): Record<string, string> {
  const subset: Record<string, string> = {}
  for (const name of NOT_MODIFIED_HEADERS) {
    const value = headers[name]
    if (value !== undefined) subset[name] = value
  }
  return subset
}

/**
 * Another segment's entry standing in for this one's (a personalized render over its budget): the same
 * bytes, told as this segment's, with `cacheHeaders` (short-lived) so the CDN asks again soon.
 */
export function asStandIn(response: CachedResponse, segment: string, cacheHeaders: Record<string, string>): CachedResponse {
  return {
    ...response,
    headers: { ...response.headers, ...cacheHeaders, 'x-segment': segment },
    notModifiedHeaders: { ...response.notModifiedHeaders, ...cacheHeaders, 'x-segment': segment },
  }
}
