// A page request as the page path sees it: the normalized target, the segment and where it came from,
// and whether a shared cache may keep the answer. One function, used by the raw fast path in front of
// Fastify and by the Fastify page route alike, so the two can never read a request differently.

import type { IncomingHttpHeaders } from 'node:http'
import { resolveSegment, type SegmentDirectory, type SegmentSource } from '../segments/segment-resolution.ts'
import type { ConditionalHeaders } from './conditional.ts'
import { acceptedCodings, type ContentCoding } from './content-coding.ts'
import { type NormalizedUrl, normalizeRequestUrl, utmSourceOf } from './url-normalize.ts'

export interface PageRequest {
  /** canonical (serve it), redirect (301 to the canonical URL) or invalid (can never be a page: 404). */
  target: NormalizedUrl
  segment: string
  segmentSource: SegmentSource
  /**
   * shared: a cache keyed on the URL and X-Segment may keep the answer. private: the segment came from
   * something a shared cache does not key on (the cookie, a utm rule), so the answer is for this browser only.
   */
  cacheability: 'shared' | 'private'
  /**
   * The URL carries a utm_source one of the segments' rules names: its redirect is decided by more than
   * the URL (the rule sets the segment cookie unless a header or cookie already chose one), so no shared
   * cache may keep it.
   */
  campaign: boolean
  conditional: ConditionalHeaders
  /** The content codings the client accepts, preferred first (Accept-Encoding); empty: identity only. */
  accepts: readonly ContentCoding[]
}

/** What of the raw request is read: node's IncomingMessage and Fastify's request both have these. */
export interface RawPageRequest {
  url: string
  headers: IncomingHttpHeaders
}

/** `queryAllowlist`: the query parameters pages keep (QUERY_ALLOWLIST); every other one is redirected away. */
export function parsePageRequest(request: RawPageRequest, segments: SegmentDirectory, queryAllowlist?: ReadonlySet<string>): PageRequest {
  const { url, headers } = request
  const queryAt = url.indexOf('?')
  const utmSource = queryAt === -1 ? undefined : utmSourceOf(url.slice(queryAt + 1, url.includes('#') ? url.indexOf('#') : undefined))
  const { segment, source } = resolveSegment(segments, { header: headers['x-segment'], cookieHeader: headers.cookie, utmSource })
  return {
    target: normalizeRequestUrl(url, queryAllowlist),
    segment,
    segmentSource: source,
    cacheability: source === 'cookie' || source === 'utm' ? 'private' : 'shared',
    campaign: utmSource !== undefined && segments.utmRules.has(utmSource.trim().toLowerCase()),
    conditional: { ifNoneMatch: headers['if-none-match'], ifModifiedSince: headers['if-modified-since'] },
    accepts: acceptedCodings(headers['accept-encoding']),
  }
}
