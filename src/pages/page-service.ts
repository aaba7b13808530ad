// Serves a canonical page path for a segment: L1 lookup, else one render per key (single-flight),
// producing the stored bytes and every caching header the CDN reads; a miss has a time budget.

import type { Kysely } from 'kysely'
import type { ResponseCache, CachedResponse } from '../cache/response-cache.ts'
import type { Database } from '../db/schema.ts'
import { DomainError } from '../errors.ts'
import { cacheTag, type CachePolicySettings, type HeaderMap, publicCacheHeaders, sharedTtlForPage } from '../http/cache-policy.ts'
import { strongEtag } from '../http/conditional.ts'
import { renderLandingPage, renderNotFound, renderSeoPage, renderSiteIndex } from '../render/page-templates.ts'
import { findNearestVariant, findPublishedPage, findRelatedPages, latestPageUpdate, listIndexLinks } from './page-repository.ts'

/** Bumped when templates change, so entries rendered by an older release are never served. */
export const RENDER_VERSION = 1

export type CacheResult = 'HIT-L1' | 'MISS' | 'DEFAULT'

export interface PageServiceSettings extends CachePolicySettings {
  publicBaseUrl: string
  notFoundTtlSeconds: number
  l1TtlSeconds: number
  renderBudgetMs: number
  relatedLinks: number
}

interface Logger {
  warn(obj: object, msg: string): void
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

/** A stand-in served over budget is kept this long by shared caches, then asked for again. */
export const FALLBACK_SHARED_TTL_SECONDS = 60

const OVER_BUDGET = Symbol('over budget')

/** Resolves to the work's result, or to OVER_BUDGET when `budgetMs` passes first (the work goes on). */
export async function withinBudget<T>(work: Promise<T>, budgetMs: number): Promise<T | typeof OVER_BUDGET> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<typeof OVER_BUDGET>((resolve) => {
    timer = setTimeout(() => resolve(OVER_BUDGET), budgetMs)
  })
  try {
    return await Promise.race([work, deadline])
  } finally {
    clearTimeout(timer)
  }
}

export class PageService {
  private readonly db: Kysely<Database>
  private readonly cache: ResponseCache
  private readonly settings: PageServiceSettings
  private readonly log: Logger
  renders = 0
  overBudget = 0

  constructor(db: Kysely<Database>, cache: ResponseCache, settings: PageServiceSettings, log: Logger) {
    this.db = db
    this.cache = cache
    this.settings = settings
    this.log = log
  }

  /**
   * L1, else one render per key. A render over the time budget does not keep the request waiting when
   * the default segment's rendering of the page is at hand: that is served (briefly cacheable) while
   * the personalized render finishes in the background and fills L1 for the next request.
   */
  async serve(path: string, segment: string, defaultSegment: string): Promise<ServedPage> {
    const key = pageCacheKey(path, segment)
    const hit = this.cache.get(key)
    if (hit !== undefined) return { response: hit, cacheResult: 'HIT-L1' }
    const rendering = this.cache.singleFlight(key, async () => {
      const rendered = await this.render(path, segment)
      const ttlSeconds = rendered.status === 200 ? this.settings.l1TtlSeconds : Math.min(this.settings.l1TtlSeconds, this.settings.notFoundTtlSeconds)
      this.cache.set(key, rendered, ttlSeconds * 1000)
      return rendered
    })
    const fallback = segment === defaultSegment ? undefined : this.cache.get(pageCacheKey(path, defaultSegment))
    if (fallback === undefined) return { response: await rendering, cacheResult: 'MISS' }

    const result = await withinBudget(rendering, this.settings.renderBudgetMs)
    if (result !== OVER_BUDGET) return { response: result, cacheResult: 'MISS' }
    this.overBudget++
    rendering.catch((err: unknown) => this.log.warn({ err, path, segment }, 'background render after the budget failed'))
    this.log.warn({ path, segment, budgetMs: this.settings.renderBudgetMs }, 'render over budget; serving the default segment rendering meanwhile')
    return { response: this.asFallback(fallback, segment), cacheResult: 'DEFAULT' }
  }

  private asFallback(response: CachedResponse, segment: string): CachedResponse {
    const cacheHeaders = publicCacheHeaders({ ...this.settings, staleWhileRevalidateSeconds: 0, staleIfErrorSeconds: 0 }, FALLBACK_SHARED_TTL_SECONDS, [])
    const headers = { ...response.headers, ...cacheHeaders, 'x-segment': segment }
    return { ...response, headers, notModifiedHeaders: { ...response.notModifiedHeaders, ...cacheHeaders, 'x-segment': segment } }
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

  /** Drops the given segments of these paths from L1 (a variant change touches only its segment). */
  invalidateSegments(paths: readonly string[], segments: readonly string[]): number {
    let evicted = 0
    for (const path of paths) for (const segment of segments) evicted += this.cache.deleteByPrefix(`${path}|${segment}|`)
    // The home page lists pages; it is cheap to render again.
    evicted += this.cache.deleteByPrefix('/|')
    return evicted
  }

  private async render(path: string, segment: string): Promise<CachedResponse> {
    this.renders++
    try {
      if (path === '/') return await this.renderIndex(segment)
      const page = await findPublishedPage(this.db, path)
      if (page === undefined) return this.notFound(path, segment)
      let html: string
      let lastModified = page.updatedAt
      if (page.kind === 'landing') {
        const variant = await findNearestVariant(this.db, page.id, segment)
        html = renderLandingPage(page, variant)
        if (variant !== undefined && variant.updatedAt > lastModified) lastModified = variant.updatedAt
      } else {
        html = renderSeoPage(page, await findRelatedPages(this.db, page.id, page.vertical, this.settings.relatedLinks))
      }
      const tags = [cacheTag('page', page.id), cacheTag('segment', segment), cacheTag('vertical', page.vertical), cacheTag('template', page.template)]
      return this.ok(html, lastModified, sharedTtlForPage(page.path, page.crawlWeight), tags, segment)
    } catch (err) {
      if (err instanceof DomainError) throw err
      throw new DomainError('DATABASE_UNAVAILABLE', 'the page store is unavailable; retry shortly', { cause: err })
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
