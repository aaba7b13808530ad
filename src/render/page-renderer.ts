// Renders one page for one segment into a cache entry: the repository reads, the template, and the
// entry (status, bytes, ETag, caching headers, freshness windows). The database sits behind a circuit
// breaker: while it fails, renders are refused at once (DATABASE_UNAVAILABLE) instead of each request
// waiting for the connect timeout.

import type { Kysely } from 'kysely'
import CircuitBreaker from 'opossum'
import type { CachedResponse } from '../cache/response-cache.ts'
import { type CircuitState, circuitState } from '../circuit-state.ts'
import type { Database } from '../db/schema.ts'
import { DomainError } from '../errors.ts'
import { cacheTag, type CachePolicySettings, type HeaderMap, pathJitterFactor, publicCacheHeaders, sharedTtlForPage, shortLivedCacheHeaders } from '../http/cache-policy.ts'
import { strongEtag } from '../http/conditional.ts'
import { fnv1a32 } from '../hash.ts'
import { pageEntryHeaders } from '../http/page-response.ts'
import { findPageVariant, findPublishedPage, findRelatedPages, latestPageUpdate, listIndexLinks } from '../pages/page-repository.ts'
import { renderLandingPage, renderNotFound, renderSeoPage, renderSiteIndex } from './page-templates.ts'

/** Bumped when templates change, so entries rendered by an older release are never served. */
export const RENDER_VERSION = 3

const INDEX_LINKS_PER_VERTICAL = 25

export interface PageRendererSettings extends CachePolicySettings {
  publicBaseUrl: string
  notFoundTtlSeconds: number
  relatedLinks: number
  originFreshSeconds: number
}

export interface RenderMetrics {
  rendered(outcome: 'ok' | 'error', seconds: number): void
  vectorSearch(seconds: number): void
}

export interface PageRendererOptions {
  db: Kysely<Database>
  settings: PageRendererSettings
  metrics: RenderMetrics
}

const unavailable = (cause: unknown): DomainError => new DomainError('DATABASE_UNAVAILABLE', 'the page store is unavailable; retry shortly', { cause })

export class PageRenderer {
  private readonly db: Kysely<Database>
  private readonly settings: PageRendererSettings
  private readonly metrics: RenderMetrics
  private readonly breaker: CircuitBreaker<[string, string], CachedResponse>

  constructor(options: PageRendererOptions) {
    this.db = options.db
    this.settings = options.settings
    this.metrics = options.metrics
    this.breaker = new CircuitBreaker((path: string, segment: string) => this.renderCounted(path, segment), {
      timeout: false,
      errorThresholdPercentage: 50,
      volumeThreshold: 5,
      resetTimeout: 5_000,
      // true means "not a failure": only the database being unavailable counts towards opening.
      errorFilter: (err: unknown) => err instanceof DomainError && err.code !== 'DATABASE_UNAVAILABLE',
    })
  }

  get circuitState(): CircuitState {
    return circuitState(this.breaker)
  }

  /** The page at a canonical path for a segment (a 404 entry when there is none); DATABASE_UNAVAILABLE when the store fails. */
  async render(path: string, segment: string): Promise<CachedResponse> {
    try {
      return await this.breaker.fire(path, segment)
    } catch (err) {
      if (err instanceof DomainError) throw err
      throw unavailable(err) // the breaker is open: the database was not even tried
    }
  }

  /**
   * What the cache keys carry besides the path and segment: the render version and every setting that
   * shapes an entry's bytes or headers (CDN_FLAVOUR's header names, lifetimes, PUBLIC_BASE_URL in the
   * HTML...). An instance configured otherwise never serves an entry rendered under other settings.
   */
  get generation(): string {
    const s = this.settings
    const shaping = [s.cdnFlavour, s.browserMaxAgeSeconds, s.staleWhileRevalidateSeconds, s.staleIfErrorSeconds, s.publicBaseUrl, s.notFoundTtlSeconds, s.relatedLinks]
    return `r${RENDER_VERSION}.${fnv1a32(JSON.stringify(shaping)).toString(36)}`
  }

  /** The 404 entry for a path (empty for a request path that can never be a page). */
  notFound(path: string, started = Date.now()): CachedResponse {
    const ttl = this.settings.notFoundTtlSeconds
    const tags = [cacheTag('template', 'not-found')]
    // Negative caching: brief, and without stale windows, so a page published later shows up quickly.
    const headers: HeaderMap = ttl === 0 ? { 'cache-control': 'no-store' } : shortLivedCacheHeaders(this.settings, ttl, tags)
    const response = this.entry(404, renderNotFound(this.settings.publicBaseUrl, path), new Date(0), headers, undefined, started, tags)
    // A 404 is never served stale: a page published meanwhile must show up within the negative TTL.
    response.freshUntil = response.swrUntil = response.staleUntil = Date.now() + ttl * 1000
    return response
  }

  /**
   * The 404 for a request path that can never be a page (bad characters, too long): an error, not a
   * page's deliberate negative cache, so no cache keeps it.
   */
  invalidPath(): CachedResponse {
    const response = this.entry(404, renderNotFound(this.settings.publicBaseUrl, ''), new Date(0), { 'cache-control': 'no-store' }, undefined, Date.now(), [])
    response.freshUntil = response.swrUntil = response.staleUntil = 0
    return response
  }

  private async renderCounted(path: string, segment: string): Promise<CachedResponse> {
    const started = Date.now()
    try {
      const response = await this.renderPage(path, segment, started)
      this.metrics.rendered('ok', (Date.now() - started) / 1000)
      return response
    } catch (err) {
      this.metrics.rendered('error', (Date.now() - started) / 1000)
      if (err instanceof DomainError) throw err
      throw unavailable(err)
    }
  }

  private async renderPage(path: string, segment: string, started: number): Promise<CachedResponse> {
    if (path === '/') return this.renderIndex(started)
    const page = await findPublishedPage(this.db, path)
    if (page === undefined) return this.notFound(path, started)
    let html: string
    let lastModified = page.updatedAt
    // Only a landing page with variants in its scope can differ by segment; every other page is one
    // entry for all segments, at every tier (no segment in its key, Vary or tags).
    let perSegment = false
    if (page.kind === 'landing') {
      const searchStarted = performance.now()
      const { variant, perSegment: varies } = await findPageVariant(this.db, page, segment)
      this.metrics.vectorSearch((performance.now() - searchStarted) / 1000)
      perSegment = varies
      html = renderLandingPage(page, variant)
      if (variant !== undefined && variant.updatedAt > lastModified) lastModified = variant.updatedAt
    } else {
      html = renderSeoPage(page, await findRelatedPages(this.db, page.id, page.vertical, this.settings.relatedLinks))
    }
    const tags = [cacheTag('page', page.id), ...(perSegment ? [cacheTag('segment', segment)] : []), cacheTag('vertical', page.vertical), cacheTag('template', page.template)]
    return this.ok(html, lastModified, sharedTtlForPage(page.path, page.crawlWeight), tags, perSegment ? segment : undefined, started, page.path)
  }

  private async renderIndex(started: number): Promise<CachedResponse> {
    const links = await listIndexLinks(this.db, INDEX_LINKS_PER_VERTICAL)
    const lastModified = await latestPageUpdate(this.db)
    const html = renderSiteIndex(this.settings.publicBaseUrl, links)
    return this.ok(html, lastModified, sharedTtlForPage('/', 0), [cacheTag('template', 'index')], undefined, started, '/')
  }

  /** `segment`: the segment the bytes were rendered for, undefined when they are every segment's. */
  private ok(html: string, lastModified: Date, sharedTtl: number, tags: string[], segment: string | undefined, started: number, path: string): CachedResponse {
    const response = this.entry(200, html, lastModified, publicCacheHeaders(this.settings, sharedTtl, tags), segment, started, tags)
    // The origin's own fresh window is capped: it bounds staleness when an invalidation is lost. The cap
    // is jittered per path like the CDN TTL, so entries warmed together do not expire together.
    const now = Date.now()
    response.freshUntil = now + Math.round(Math.min(sharedTtl, this.settings.originFreshSeconds * pathJitterFactor(path)) * 1000)
    response.swrUntil = response.freshUntil + this.settings.staleWhileRevalidateSeconds * 1000
    response.staleUntil = Math.max(response.swrUntil, response.freshUntil + this.settings.staleIfErrorSeconds * 1000)
    return response
  }

  private entry(status: number, html: string, lastModified: Date, cacheHeaders: HeaderMap, segment: string | undefined, started: number, tags: string[]): CachedResponse {
    const body = Buffer.from(html, 'utf8')
    const etag = strongEtag(body)
    // HTTP dates carry whole seconds; drop the milliseconds so If-Modified-Since compares exactly.
    const lastModifiedSeconds = new Date(Math.floor(lastModified.getTime() / 1000) * 1000)
    const { headers, notModifiedHeaders } = pageEntryHeaders({ status, cacheHeaders, segment, etag, lastModified: lastModifiedSeconds })
    const now = Date.now()
    return { status, body, headers, notModifiedHeaders, etag, lastModified: lastModifiedSeconds, perSegment: segment !== undefined, freshUntil: 0, swrUntil: 0, staleUntil: 0, renderMs: now - started, renderedAt: now, tags }
  }
}
