// Serves a canonical page path for a segment: L1 lookup, else one render per key (single-flight),
// producing the stored bytes and every caching header the CDN reads.

import type { Kysely } from 'kysely'
import type { ResponseCache, CachedResponse } from '../cache/response-cache.ts'
import type { Database } from '../db/schema.ts'
import { DomainError } from '../errors.ts'
import { cacheTag, type CachePolicySettings, type HeaderMap, publicCacheHeaders, sharedTtlForPage } from '../http/cache-policy.ts'
import { strongEtag } from '../http/conditional.ts'
import { renderLandingPage, renderNotFound, renderSeoPage, renderSiteIndex } from '../render/page-templates.ts'
import { findNearestVariant, findPublishedPage, findRelatedPages, latestPageUpdate, listIndexLinks, type RelatedLink, type VariantRow } from './page-repository.ts'

/** Bumped when templates change, so entries rendered by an older release are never served. */
export const RENDER_VERSION = 1

export type CacheResult = 'HIT-L1' | 'MISS'

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

/** A rendering made without its vector lookups (over budget) is kept briefly, then tried again. */
const DEGRADED_SHARED_TTL_SECONDS = 60
const DEGRADED_L1_TTL_SECONDS = 5

const OVER_BUDGET = Symbol('over budget')

async function withinBudget<T>(work: Promise<T>, budgetMs: number): Promise<T | typeof OVER_BUDGET> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<typeof OVER_BUDGET>((resolve) => {
    timer = setTimeout(() => resolve(OVER_BUDGET), budgetMs)
  })
  // The lookup keeps running after the deadline; its late result (or error) is dropped.
  work.catch(() => undefined)
  try {
    return await Promise.race([work, deadline])
  } finally {
    clearTimeout(timer)
  }
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
  private readonly log: Logger
  renders = 0
  overBudget = 0

  constructor(db: Kysely<Database>, cache: ResponseCache, settings: PageServiceSettings, log: Logger) {
    this.db = db
    this.cache = cache
    this.settings = settings
    this.log = log
  }

  async serve(path: string, segment: string): Promise<ServedPage> {
    const key = pageCacheKey(path, segment)
    const hit = this.cache.get(key)
    if (hit !== undefined) return { response: hit, cacheResult: 'HIT-L1' }
    const response = await this.cache.singleFlight(key, async () => {
      const { response: rendered, degraded } = await this.render(path, segment)
      const ttlSeconds = degraded
        ? DEGRADED_L1_TTL_SECONDS
        : rendered.status === 200
          ? this.settings.l1TtlSeconds
          : Math.min(this.settings.l1TtlSeconds, this.settings.notFoundTtlSeconds)
      this.cache.set(key, rendered, Math.min(ttlSeconds, this.settings.l1TtlSeconds) * 1000)
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

  /** Drops the given segments of these paths from L1 (a variant change touches only its segment). */
  invalidateSegments(paths: readonly string[], segments: readonly string[]): number {
    let evicted = 0
    for (const path of paths) for (const segment of segments) evicted += this.cache.deleteByPrefix(`${path}|${segment}|`)
    // The home page lists pages; it is cheap to render again.
    evicted += this.cache.deleteByPrefix('/|')
    return evicted
  }

  private async render(path: string, segment: string): Promise<{ response: CachedResponse; degraded: boolean }> {
    this.renders++
    try {
      if (path === '/') return { response: await this.renderIndex(segment), degraded: false }
      const page = await findPublishedPage(this.db, path)
      if (page === undefined) return { response: this.notFound(path, segment), degraded: false }

      // The vector lookups are the expensive part of a miss: they get a time budget.
      const lookup: Promise<VariantRow | RelatedLink[] | undefined> =
        page.kind === 'landing' ? findNearestVariant(this.db, page.id, segment) : findRelatedPages(this.db, page.id, page.vertical, this.settings.relatedLinks)
      const found = await withinBudget(lookup, this.settings.renderBudgetMs)
      const degraded = found === OVER_BUDGET
      if (degraded) {
        this.overBudget++
        this.log.warn({ path, segment, budgetMs: this.settings.renderBudgetMs }, 'vector lookup over the render budget; serving the default rendering')
      }
      const variant = page.kind === 'landing' && !degraded ? (found as VariantRow | undefined) : undefined
      const related = page.kind === 'seo' && !degraded ? (found as RelatedLink[]) : []
      const html = page.kind === 'landing' ? renderLandingPage(page, variant) : renderSeoPage(page, related)
      const lastModified = variant !== undefined && variant.updatedAt > page.updatedAt ? variant.updatedAt : page.updatedAt
      const tags = [cacheTag('page', page.id), cacheTag('segment', segment), cacheTag('vertical', page.vertical), cacheTag('template', page.template)]
      const sharedTtl = degraded ? DEGRADED_SHARED_TTL_SECONDS : sharedTtlForPage(page.path, page.crawlWeight)
      return { response: this.ok(html, lastModified, sharedTtl, tags, segment), degraded }
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
