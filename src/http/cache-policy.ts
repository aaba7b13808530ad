// The caching contract the CDN sees: crawl-weighted shared-cache TTLs, spread by a per-path jitter,
// expressed in the header each CDN flavour reads. Pure functions: no I/O, tested exhaustively.

import type { CdnFlavour } from '../config.ts'
import { fnv1a32 } from '../hash.ts'

export const MIN_SHARED_TTL_SECONDS = 3_600
export const MAX_SHARED_TTL_SECONDS = 86_400
export const TTL_JITTER_FRACTION = 0.15

/** ttl = 3600 + w * (86400 - 3600); weights outside [0, 1] (or NaN) are clamped. */
export function crawlWeightToTtl(crawlWeight: number): number {
  const w = Number.isFinite(crawlWeight) ? Math.min(1, Math.max(0, crawlWeight)) : 0
  return MIN_SHARED_TTL_SECONDS + w * (MAX_SHARED_TTL_SECONDS - MIN_SHARED_TTL_SECONDS)
}

/** A factor in [1 - 0.15, 1 + 0.15], fixed per path, so pages written together do not expire together. */
export function pathJitterFactor(path: string): number {
  const unit = fnv1a32(path) / 0xffffffff // [0, 1]
  return 1 + (unit * 2 - 1) * TTL_JITTER_FRACTION
}

export function sharedTtlForPage(path: string, crawlWeight: number): number {
  return Math.round(crawlWeightToTtl(crawlWeight) * pathJitterFactor(path))
}

export interface CachePolicySettings {
  cdnFlavour: CdnFlavour
  browserMaxAgeSeconds: number
  staleWhileRevalidateSeconds: number
  staleIfErrorSeconds: number
}

export type HeaderMap = Record<string, string>

/** Headers for a publicly cacheable response whose shared-cache lifetime is `sharedTtl` seconds. */
export function publicCacheHeaders(settings: CachePolicySettings, sharedTtl: number, tags: readonly string[]): HeaderMap {
  const browserMaxAge = Math.min(settings.browserMaxAgeSeconds, sharedTtl)
  const staleDirectives = `stale-while-revalidate=${settings.staleWhileRevalidateSeconds}, stale-if-error=${settings.staleIfErrorSeconds}`
  const headers: HeaderMap = {
    'cache-control': `public, max-age=${browserMaxAge}, s-maxage=${sharedTtl}, ${staleDirectives}`,
  }
  const targeted = `max-age=${sharedTtl}, ${staleDirectives}`
  switch (settings.cdnFlavour) {
    case 'generic':
    case 'cloudflare':
    case 'akamai':
      // RFC 9213 targeted field; Cloudflare and Akamai honour it over Cache-Control.
      headers['cdn-cache-control'] = targeted
      break
    case 'fastly':
    case 'varnish':
      // Fastly strips Surrogate-Control before the browser; the project's VCL reads it for Varnish.
      headers['surrogate-control'] = targeted
      break
    case 'cloudfront':
      // CloudFront reads s-maxage from Cache-Control and has no targeted header.
      break
  }
  const tagHeader = tagHeaderFor(settings.cdnFlavour, tags)
  if (tagHeader !== undefined) headers[tagHeader[0]] = tagHeader[1]
  return headers
}

/**
 * Headers for a short-lived public response (a 404, a redirect, a stand-in rendering): the same
 * headers without stale windows, so what replaces it shows up as soon as `sharedTtl` has passed.
 */
export function shortLivedCacheHeaders(settings: CachePolicySettings, sharedTtl: number, tags: readonly string[]): HeaderMap {
  return publicCacheHeaders({ ...settings, staleWhileRevalidateSeconds: 0, staleIfErrorSeconds: 0 }, sharedTtl, tags)
}

/** The Cache-Control of an answer for one browser only (its segment came from a cookie or a utm rule). */
export function privateCacheControl(settings: Pick<CachePolicySettings, 'browserMaxAgeSeconds'>): string {
  return `private, max-age=${settings.browserMaxAgeSeconds}`
}

/** Purge tags in the header and separator each CDN expects; undefined where the CDN has no tag purge. */
export function tagHeaderFor(flavour: CdnFlavour, tags: readonly string[]): [string, string] | undefined {
  if (tags.length === 0) return undefined
  switch (flavour) {
    case 'generic':
    case 'fastly':
      return ['surrogate-key', tags.join(' ')]
    case 'varnish':
      return ['xkey', tags.join(' ')]
    case 'cloudflare':
      return ['cache-tag', tags.join(',')]
    case 'akamai':
      return ['edge-cache-tag', tags.join(',')]
    case 'cloudfront':
      return undefined
  }
}

/** Tag names are restricted so that every CDN accepts them verbatim (no spaces, commas or quotes). */
export function cacheTag(kind: 'page' | 'segment' | 'vertical' | 'template' | 'bucket', value: string | number): string {
  const prefix = { page: 'p', segment: 's', vertical: 'v', template: 't', bucket: 'b' }[kind]
  return `${prefix}-${String(value).toLowerCase().replace(/[^a-z0-9_-]/g, '_')}`
}
