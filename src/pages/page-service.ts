// Serves a canonical page path for a segment: L1 lookup, else one render per key (single-flight),
// producing the stored bytes and every caching header the CDN reads.

import type { Kysely } from 'kysely'
import type { ResponseCache, CachedResponse } from '../cache/response-cache.ts'
import type { Database } from '../db/schema.ts'
import { DomainError } from '../errors.ts'
import { cacheTag, type CachePolicySettings, type HeaderMap, publicCacheHeaders, sharedTtlForPage } from '../http/cache-policy.ts'
import { strongEtag } from '../http/conditional.ts'
import { renderLandingPage, renderNotFound, renderSeoPage, renderSiteIndex } from '../render/page-templates.ts'
import { findNearestVariant, findPublishedPage, latestPageUpdate, listIndexLinks } from './page-repository.ts'

/** Bumped when templates change, so entries rendered by an older release are never served. */
export const RENDER_VERSION = 1

export type CacheResult = 'HIT-L1' | 'MISS'

export interface PageServiceSettings extends CachePolicySettings {
  publicBaseUrl: string
  notFoundTtlSeconds: number
  l1TtlSeconds: number
}

export interface ServedPage {
  response: CachedResponse
  cacheResult: CacheResult
}

export function pageCacheKey(path: string, segment: string): string {
  return `${path}|${segment}|r${RENDER_VERSION}`
}

const INDEX_LINKS_PER_VERTICAL = 25

/** Headers a 304 repeats from the full response: caching, tags, validators, Vary (RFC 9110 section 15.4.5). */
const NOT_MODIFIED_HEADERS = ['cache-control', 'cdn-cache-control', 'surrogate-control', 'surrogate-key', 'xkey', 'cache-tag', 'edge-cache-tag', 'etag', 'last-modified', 'vary', 'x-segment']

export class PageService {
  private readonly db: Kysely<Database>
  private readonly cache: ResponseCache
  private readonly settings: PageServiceSettings
  renders = 0

  constructor(db: Kysely<Database>, cache: ResponseCache, settings: PageServiceSettings) {
    this.db = db
    this.cache = cache
    this.settings = settings
  }

  async serve(path: string, segment: string): Promise<ServedPage> {
    const key = pageCacheKey(path, segment)
    const hit = this.cache.get(key)
    if (hit !== undefined) return { response: hit, cacheResult: 'HIT-L1' }
    const response = await this.cache.singleFlight(key, async () => {
      const rendered = await this.render(path, segment)
      const ttlSeconds = rendered.status === 200 ? this.settings.l1TtlSeconds : Math.min(this.settings.l1TtlSeconds, this.settings.notFoundTtlSeconds)
      this.cache.set(key, rendered, ttlSeconds * 1000)
      return rendered
    })
    return { response, cacheResult: 'MISS' }
  }

  /** A 404 for a request path that can never be a page (bad characters, too long), cached like any 404. */
  async serveInvalidPath(segment: string): Promise<ServedPage> {
    const key = `!invalid|${segment}|r${RENDER_VERSION}`
    const hit = this.cache.get(key)
    if (hit !== undefined) return { response: hit, cacheResult: 'HIT-L1' }
    const response = this.notFound('', segment)
    this.cache.set(key, response, Math.min(this.settings.l1TtlSeconds, this.settings.notFoundTtlSeconds) * 1000)
    return { response, cacheResult: 'MISS' }
  }

  /** Drops every cached segment of these paths from L1. */
  invalidatePaths(paths: readonly string[]): number {
    let evicted = 0
    for (const path of paths) evicted += this.cache.deleteByPrefix(`${path}|`)
    return evicted
  }

  private async render(path: string, segment: string): Promise<CachedResponse> {
    this.renders++
    try {
      if (path === '/') return await this.renderIndex(segment)
      const page = await findPublishedPage(this.db, path)
      if (page === undefined) return this.notFound(path, segment)
      const variant = page.kind === 'landing' ? await findNearestVariant(this.db, page.id, segment) : undefined
      const html = page.kind === 'landing' ? renderLandingPage(page, variant) : renderSeoPage(page)
      const lastModified = variant !== undefined && variant.updatedAt > page.updatedAt ? variant.updatedAt : page.updatedAt
      const tags = [cacheTag('page', page.id), cacheTag('segment', segment), cacheTag('vertical', page.vertical), cacheTag('template', page.template)]
      return this.ok(html, lastModified, sharedTtlForPage(page.path, page.crawlWeight), tags, segment)
    } catch (err) {
      if (err instanceof DomainError) throw err
      throw new DomainError('DATABASE_UNAVAILABLE', 'the page store is unavailable', { cause: err })
    }
  }

  private async renderIndex(segment: string): Promise<CachedResponse> {
    const [links, lastModified] = await Promise.all([listIndexLinks(this.db, INDEX_LINKS_PER_VERTICAL), latestPageUpdate(this.db)])
    const html = renderSiteIndex(this.settings.publicBaseUrl, links)
    return this.ok(html, lastModified, sharedTtlForPage('/', 0), [cacheTag('template', 'index'), cacheTag('segment', segment)], segment)
  }

  private ok(html: string, lastModified: Date, sharedTtl: number, tags: string[], segment: string): CachedResponse {
    return this.build(200, html, lastModified, publicCacheHeaders(this.settings, sharedTtl, tags), segment)
  }

  private notFound(path: string, segment: string): CachedResponse {
    const ttl = this.settings.notFoundTtlSeconds
    // Negative caching: brief, and without stale windows, so a page published later shows up quickly.
    const headers: HeaderMap =
      ttl === 0
        ? { 'cache-control': 'no-store' }
        : publicCacheHeaders({ ...this.settings, staleWhileRevalidateSeconds: 0, staleIfErrorSeconds: 0 }, ttl, [cacheTag('template', 'not-found')])
    return this.build(404, renderNotFound(this.settings.publicBaseUrl, path), new Date(0), headers, segment)
  }

  private build(status: number, html: string, lastModified: Date, cacheHeaders: HeaderMap, segment: string): CachedResponse {
    const body = Buffer.from(html, 'utf8')
    const etag = strongEtag(body)
    // HTTP dates carry whole seconds; drop the milliseconds so If-Modified-Since compares exactly.
    const lastModifiedSeconds = new Date(Math.floor(lastModified.getTime() / 1000) * 1000)
    const headers: Record<string, string> = {
      'content-type': 'text/html; charset=utf-8',
      ...cacheHeaders,
      vary: 'X-Segment',
      'x-segment': segment,
      'x-content-type-options': 'nosniff',
    }
    if (status === 200) {
      headers.etag = etag
      headers['last-modified'] = lastModifiedSeconds.toUTCString()
    }
    const notModifiedHeaders: Record<string, string> = {}
    for (const name of NOT_MODIFIED_HEADERS) {
      const value = headers[name]
      if (value !== undefined) notModifiedHeaders[name] = value
    }
    return { status, body, headers, notModifiedHeaders, etag, lastModified: lastModifiedSeconds }
  }
}
