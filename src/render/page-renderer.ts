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
import { compressBody, type Encodings, hasEncodings, isCompressible } from '../http/content-coding.ts'
import { fnv1a32 } from '../hash.ts'
import { pageEntryHeaders } from '../http/page-response.ts'
import { findPublishedPageWithVariant, findRelatedPages, latestPageUpdate, listIndexLinks } from '../pages/page-repository.ts'
import { TIMED_OUT, withTimeout } from '../timeout.ts'
import { renderLandingPage, renderNotFound, renderSeoPage, renderSiteIndex } from './page-templates.ts'

/** Bumped when templates change, so entries rendered by an older release are never served. */
export const RENDER_VERSION = 4

const INDEX_LINKS_PER_VERTICAL = 25

export interface PageRendererSettings extends CachePolicySettings {
  publicBaseUrl: string
  notFoundTtlSeconds: number
  relatedLinks: number
  originFreshSeconds: number
  /** A render that reaches it with its compression unfinished answers with the identity bytes (RENDER_BUDGET_MS). */
  renderBudgetMs: number
}

export interface RenderOptions {
  /**
   * Wait for the gzip/brotli bytes however long they take (warm-up: nobody is waiting). Otherwise a
   * compression still running when the render budget is spent is left to finish off the request path.
   */
  awaitEncodings?: boolean
  /** Called with the same entry plus its codings when they were finished after the render returned. */
  onLateEncodings?: (original: CachedResponse, encoded: CachedResponse) => void
  /** Read the primary, not a replica (warm-up: an admin call renders what the primary holds). */
  primary?: boolean
  /**
   * The page is under experiment for this segment and this is the variant to show (the request's
   * bucket's): the entry then varies by X-Bucket too and carries the beacon.
   */
  variantId?: number
}

export interface RenderMetrics {
  rendered(outcome: 'ok' | 'error', seconds: number): void
  vectorSearch(seconds: number): void
}

export interface PageRendererOptions {
  /** The primary. */
  db: Kysely<Database>
  /** Where live renders read (a healthy read replica, else the primary: DatabaseHandle.read); default `db`. */
  read?: Kysely<Database>
  settings: PageRendererSettings
  metrics: RenderMetrics
}

const unavailable = (cause: unknown): DomainError => new DomainError('DATABASE_UNAVAILABLE', 'the page store is unavailable; retry shortly', { cause })

export class PageRenderer {
  private readonly db: Kysely<Database>
  private readonly read: Kysely<Database>
  private readonly settings: PageRendererSettings
  private readonly metrics: RenderMetrics
  private readonly breaker: CircuitBreaker<[string, string, RenderOptions], CachedResponse>

  constructor(options: PageRendererOptions) {
    this.db = options.db
    this.read = options.read ?? options.db
    this.settings = options.settings
    this.metrics = options.metrics
    this.breaker = new CircuitBreaker((path: string, segment: string, options: RenderOptions) => this.renderCounted(path, segment, options), {
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
  async render(path: string, segment: string, options: RenderOptions = {}): Promise<CachedResponse> {
    try {
      return await this.breaker.fire(path, segment, options)
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
    const response = this.entry(404, Buffer.from(renderNotFound(this.settings.publicBaseUrl, path)), {}, new Date(0), headers, undefined, started, tags)
    // A 404 is never served stale: a page published meanwhile must show up within the negative TTL.
    response.freshUntil = response.swrUntil = response.staleUntil = Date.now() + ttl * 1000
    return response
  }

  /**
   * The 404 for a request path that can never be a page (bad characters, too long): an error, not a
   * page's deliberate negative cache, so no cache keeps it.
   */
  invalidPath(): CachedResponse {
    const response = this.entry(404, Buffer.from(renderNotFound(this.settings.publicBaseUrl, '')), {}, new Date(0), { 'cache-control': 'no-store' }, undefined, Date.now(), [])
    response.freshUntil = response.swrUntil = response.staleUntil = 0
    return response
  }

  private async renderCounted(path: string, segment: string, options: RenderOptions): Promise<CachedResponse> {
    const started = Date.now()
    try {
      const response = await this.renderPage(path, segment, started, options)
      this.metrics.rendered('ok', (Date.now() - started) / 1000)
      return response
    } catch (err) {
      this.metrics.rendered('error', (Date.now() - started) / 1000)
      if (err instanceof DomainError) throw err
      throw unavailable(err)
    }
  }

  private async renderPage(path: string, segment: string, started: number, options: RenderOptions): Promise<CachedResponse> {
    const db = options.primary === true ? this.db : this.read
    if (path === '/') return this.renderIndex(db, started, options)
    const lookupStarted = performance.now()
    // The page and, for a landing page, its variant for this segment and whether it varies by segment at
    // all: one statement, one round trip for a miss.
    const found = await findPublishedPageWithVariant(db, path, segment, options.variantId)
    if (found === undefined) return this.notFound(path, started)
    const { page, variant } = found
    let html: string
    let lastModified = page.updatedAt
    // Under experiment only while the variant asked for is still what the page shows this segment.
    const experiment = options.variantId !== undefined && variant?.id === options.variantId
    // Only a landing page with variants in its scope can differ by segment; every other page is one
    // entry for all segments, at every tier (no segment in its key, Vary or tags).
    const perSegment = found.perSegment
    if (page.kind === 'landing') {
      this.metrics.vectorSearch((performance.now() - lookupStarted) / 1000)
      html = renderLandingPage(page, variant, experiment)
      if (variant !== undefined && variant.updatedAt > lastModified) lastModified = variant.updatedAt
    } else {
      html = renderSeoPage(page, await findRelatedPages(db, page.id, page.vertical, this.settings.relatedLinks))
    }
    const tags = [cacheTag('page', page.id), ...(perSegment ? [cacheTag('segment', segment)] : []), cacheTag('vertical', page.vertical), cacheTag('template', page.template)]
    return this.ok(html, lastModified, sharedTtlForPage(page.path, page.crawlWeight), tags, perSegment ? segment : undefined, started, page.path, options, experiment)
  }

  private async renderIndex(db: Kysely<Database>, started: number, options: RenderOptions): Promise<CachedResponse> {
    const links = await listIndexLinks(db, INDEX_LINKS_PER_VERTICAL)
    const lastModified = await latestPageUpdate(db)
    const html = renderSiteIndex(this.settings.publicBaseUrl, links)
    return this.ok(html, lastModified, sharedTtlForPage('/', 0), [cacheTag('template', 'index')], undefined, started, '/', options)
  }

  /**
   * `segment`: the segment the bytes were rendered for, undefined when they are every segment's. The
   * gzip and brotli bytes are made here, once, in the thread pool (a few ms for a page of tens of KB);
   * compressing a page that would take longer than the render budget (a page of megabytes), the entry
   * goes out with the identity bytes and the coded one follows (`options.onLateEncodings`).
   */
  private async ok(html: string, lastModified: Date, sharedTtl: number, tags: string[], segment: string | undefined, started: number, path: string, options: RenderOptions, experiment = false): Promise<CachedResponse> {
    const body = Buffer.from(html, 'utf8')
    const cacheHeaders = publicCacheHeaders(this.settings, sharedTtl, tags)
    // The origin's own fresh window is capped: it bounds staleness when an invalidation is lost. The cap
    // is jittered per path like the CDN TTL, so entries warmed together do not expire together.
    const now = Date.now()
    const freshUntil = now + Math.round(Math.min(sharedTtl, this.settings.originFreshSeconds * pathJitterFactor(path)) * 1000)
    const swrUntil = freshUntil + this.settings.staleWhileRevalidateSeconds * 1000
    const staleUntil = Math.max(swrUntil, freshUntil + this.settings.staleIfErrorSeconds * 1000)
    const build = (encodings: Encodings): CachedResponse => ({ ...this.entry(200, body, encodings, lastModified, cacheHeaders, segment, started, tags, experiment), freshUntil, swrUntil, staleUntil })

    // Compressing a buffer does not fail short of running out of memory; if it did, the identity bytes serve.
    const compressing = compressBody(body).catch((): Encodings => ({}))
    const encodings = options.awaitEncodings === true ? await compressing : await withTimeout(compressing, this.settings.renderBudgetMs)
    if (encodings !== TIMED_OUT) return build(encodings)
    const response = build({})
    const onLate = options.onLateEncodings
    void compressing.then((late) => {
      if (onLate !== undefined && hasEncodings(late)) onLate(response, { ...build(late), renderMs: response.renderMs, renderedAt: response.renderedAt })
    })
    return response
  }

  private entry(status: number, body: Buffer, encodings: Encodings, lastModified: Date, cacheHeaders: HeaderMap, segment: string | undefined, started: number, tags: string[], experiment = false): CachedResponse {
    const etag = strongEtag(body)
    // HTTP dates carry whole seconds; drop the milliseconds so If-Modified-Since compares exactly.
    const lastModifiedSeconds = new Date(Math.floor(lastModified.getTime() / 1000) * 1000)
    // A page that may be compressed says Vary: Accept-Encoding whether or not its codings are ready yet.
    const { headers, notModifiedHeaders } = pageEntryHeaders({ status, cacheHeaders, segment, etag, lastModified: lastModifiedSeconds, compressed: status === 200 && isCompressible(body), experiment })
    const now = Date.now()
    return { status, body, encodings, headers, notModifiedHeaders, etag, lastModified: lastModifiedSeconds, perSegment: segment !== undefined, freshUntil: 0, swrUntil: 0, staleUntil: 0, renderMs: now - started, renderedAt: now, tags }
  }
}
