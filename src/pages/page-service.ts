// Serves a canonical page path for a segment: L1 lookup, else one render per key (single-flight),
// producing the stored bytes and every caching header the CDN reads; a miss has a time budget.

import { randomUUID } from 'node:crypto'
import type { Kysely } from 'kysely'
import CircuitBreaker from 'opossum'
import type { RedisL2 } from '../cache/redis-l2.ts'
import type { CachedResponse, L1Entry, ResponseCache } from '../cache/response-cache.ts'
import type { Database } from '../db/schema.ts'
import { type CircuitState, circuitState } from '../circuit-state.ts'
import { DomainError } from '../errors.ts'
import { cacheTag, type CachePolicySettings, type HeaderMap, pathJitterFactor, publicCacheHeaders, sharedTtlForPage } from '../http/cache-policy.ts'
import { strongEtag } from '../http/conditional.ts'
import { renderLandingPage, renderNotFound, renderSeoPage, renderSiteIndex } from '../render/page-templates.ts'
import { findNearestVariant, findPublishedPage, findRelatedPages, latestPageUpdate, listIndexLinks } from './page-repository.ts'

/** Bumped when templates change, so entries rendered by an older release are never served. */
export const RENDER_VERSION = 3

export type CacheResult = 'HIT-L1' | 'HIT-L2' | 'STALE' | 'MISS' | 'DEFAULT'

export interface PageServiceSettings extends CachePolicySettings {
  publicBaseUrl: string
  notFoundTtlSeconds: number
  l1TtlSeconds: number
  renderBudgetMs: number
  relatedLinks: number
  originFreshSeconds: number
  staleWhileRevalidateSeconds: number
  staleIfErrorSeconds: number
}

interface Logger {
  warn(obj: object, msg: string): void
}

/** What the service reports for /metrics; the counting itself lives in plugins/metrics.ts. */
export interface PageMetrics {
  /** One per tier consulted: hit (fresh), stale (present, past fresh), miss (absent). */
  lookup(tier: 'l1' | 'l2', result: 'hit' | 'miss' | 'stale'): void
  rendered(outcome: 'ok' | 'error', seconds: number): void
  staleServed(reason: 'revalidate' | 'error' | 'budget'): void
  vectorSearch(seconds: number): void
}

const NO_METRICS: PageMetrics = { lookup() {}, rendered() {}, staleServed() {}, vectorSearch() {} }

/** What the cache tiers held for one key; `hit` is set when one of them answers. */
export interface CacheLookup {
  hit: ServedPage | undefined
  local: L1Entry | undefined
  shared: CachedResponse | undefined
}

export interface ServedPage {
  response: CachedResponse
  cacheResult: CacheResult
}

/** The path is the hash tag: every segment of a path, and its render lock, live in one Cluster slot. */
export function pageCacheKey(path: string, segment: string): string {
  return `page:{${path}}|${segment}|r${RENDER_VERSION}`
}

function newest(a: CachedResponse | undefined, b: CachedResponse | undefined): CachedResponse | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  return b.freshUntil > a.freshUntil ? b : a
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

export interface PageServiceOptions {
  db: Kysely<Database>
  cache: ResponseCache
  /** null: no shared tier (REDIS_URL=off). */
  l2: RedisL2 | null
  settings: PageServiceSettings
  log: Logger
  /** Current segment slugs: an invalidation of a path drops every segment's entry. */
  segmentSlugs: () => readonly string[]
  /** Tells the other instances to drop these L1 keys and tags (Redis pub/sub); absent on a single instance. */
  broadcastInvalidation?: (message: { keys: string[]; tags: string[] }) => void
  metrics?: PageMetrics
}

/** How long one instance may render a cold key before another stops waiting for it. */
const RENDER_LOCK_MS = 5_000
/** How long an instance that lost the lock waits for the winner's entry before rendering itself. */
const LOCK_WAIT_MS = 2_000
const LOCK_POLL_MS = 20
/** XFetch: refresh early with probability rising as expiry nears, scaled by the render time. */
const XFETCH_BETA = 1

export class PageService {
  private readonly db: Kysely<Database>
  private readonly cache: ResponseCache
  private readonly l2: RedisL2 | null
  private readonly settings: PageServiceSettings
  private readonly log: Logger
  private readonly segmentSlugs: () => readonly string[]
  private readonly broadcast: ((message: { keys: string[]; tags: string[] }) => void) | undefined
  private readonly breaker: CircuitBreaker<[string, string], CachedResponse>
  private readonly lockToken = randomUUID()
  private readonly metrics: PageMetrics
  renders = 0
  overBudget = 0
  staleServed = 0
  /** Lookups that shared an L2 read already in flight for the same key instead of sending their own. */
  l2ReadsCoalesced = 0
  /**
   * L2 reads in flight, by key: concurrent lookups of one key (a hot page whose L1 copy just expired)
   * share one Redis GET. Cleared by every invalidation, so a lookup that starts after a purge never
   * joins a read sent before it.
   */
  private readonly l2Reads = new Map<string, Promise<CachedResponse | undefined>>()
  /** Bumped by every invalidation: an L2 read that straddles one does not refill L1 with what it read. */
  private invalidations = 0
  backgroundRefreshes = 0

  constructor(options: PageServiceOptions) {
    this.db = options.db
    this.cache = options.cache
    this.l2 = options.l2
    this.settings = options.settings
    this.log = options.log
    this.segmentSlugs = options.segmentSlugs
    this.broadcast = options.broadcastInvalidation
    this.metrics = options.metrics ?? NO_METRICS
    // A failing database fails fast: while open, renders are refused at once (stale or 503 instead of
    // every request waiting for a connect timeout).
    this.breaker = new CircuitBreaker((path: string, segment: string) => this.render(path, segment), {
      timeout: false,
      errorThresholdPercentage: 50,
      volumeThreshold: 5,
      resetTimeout: 5_000,
      // true means "not a failure": only the database being unavailable counts towards opening.
      errorFilter: (err: unknown) => err instanceof DomainError && err.code !== 'DATABASE_UNAVAILABLE',
    })
  }

  get databaseCircuitOpen(): boolean {
    return this.breaker.opened
  }

  get databaseCircuitState(): CircuitState {
    return circuitState(this.breaker)
  }

  /**
   * The hot path: an L1 entry inside its fresh window is answered with no I/O at all. Past it: L2,
   * then stale-while-revalidate, then one render per key (single-flight here, a Redis lock across
   * instances). A render over the time budget is answered, when at hand, by the default segment's
   * rendering; a failing database is answered by any entry still inside its stale-if-error window.
   */
  async serve(path: string, segment: string, defaultSegment: string, lookedUp?: CacheLookup): Promise<ServedPage> {
    const key = pageCacheKey(path, segment)
    const lookup = lookedUp ?? (await this.lookup(path, segment))
    if (lookup.hit !== undefined) return lookup.hit
    const { local, shared } = lookup
    const now = Date.now()
    const known = newest(local?.response, shared)
    if (known !== undefined && now < known.swrUntil) {
      this.staleServed++
      this.metrics.staleServed('revalidate')
      this.refreshInBackground(key, path, segment)
      return { response: known, cacheResult: 'STALE' }
    }

    const rendering = this.renderShared(key, path, segment)
    try {
      // What may answer if the render overruns its budget: this key's own entry while it is inside its
      // stale-if-error window (a slow or hung database then costs the budget, not its timeouts), else,
      // for a personalized request, the default segment's rendering; without either, the request waits.
      const staleCopy = known !== undefined && now < known.staleUntil ? known : undefined
      const fallback = staleCopy !== undefined || segment === defaultSegment ? undefined : this.cache.get(pageCacheKey(path, defaultSegment))?.response
      if (staleCopy === undefined && fallback === undefined) return { response: await rendering, cacheResult: 'MISS' }
      const result = await withinBudget(rendering, this.settings.renderBudgetMs)
      if (result !== OVER_BUDGET) return { response: result, cacheResult: 'MISS' }
      this.overBudget++
      if (staleCopy !== undefined) {
        // Expected while the database is slow or down (counted, not logged per request); the render goes
        // on and refills the caches if it succeeds, and never replaces the entry if it fails.
        rendering.catch(() => undefined)
        this.staleServed++
        this.metrics.staleServed('budget')
        return { response: staleCopy, cacheResult: 'STALE' }
      }
      rendering.catch((err: unknown) => this.log.warn({ err, path, segment }, 'background render after the budget failed'))
      this.log.warn({ path, segment, budgetMs: this.settings.renderBudgetMs }, 'render over budget; serving the default segment rendering meanwhile')
      return { response: this.asFallback(fallback!, segment), cacheResult: 'DEFAULT' }
    } catch (err) {
      // stale-if-error: a failed render never replaces a good entry, and the good entry answers.
      if (known !== undefined && Date.now() < known.staleUntil && err instanceof DomainError && err.code === 'DATABASE_UNAVAILABLE') {
        this.staleServed++
        this.metrics.staleServed('error')
        return { response: known, cacheResult: 'STALE' }
      }
      throw err
    }
  }

  /**
   * The cache tiers alone, counted: a fresh L1 entry, else a fresh L2 entry (copied into L1), else what
   * each tier holds for serve() to go on with. The fast path in front of Fastify answers the hits and
   * hands the rest to serve() through `lookedUp`, so no tier is asked twice.
   */
  async lookup(path: string, segment: string): Promise<CacheLookup> {
    const key = pageCacheKey(path, segment)
    const now = Date.now()
    const local = this.cache.get(key)
    const fresh = this.freshInL1(local, key, path, segment, now)
    if (fresh !== undefined) return { hit: { response: fresh, cacheResult: 'HIT-L1' }, local, shared: undefined }
    const generation = this.invalidations
    const shared = this.l2 === null ? undefined : await this.readShared(key)
    if (shared !== undefined && now < shared.freshUntil) {
      this.metrics.lookup('l2', 'hit')
      // Lookups that shared the read find L1 already refilled by the first of them.
      if (generation === this.invalidations && this.cache.get(key)?.response !== shared) this.cache.set(key, shared, now + this.settings.l1TtlSeconds * 1000)
      return { hit: { response: shared, cacheResult: 'HIT-L2' }, local, shared }
    }
    if (this.l2 !== null) this.metrics.lookup('l2', shared === undefined ? 'miss' : 'stale')
    return { hit: undefined, local, shared }
  }

  private readShared(key: string): Promise<CachedResponse | undefined> {
    const inFlight = this.l2Reads.get(key)
    if (inFlight !== undefined) {
      this.l2ReadsCoalesced++
      return inFlight
    }
    const read: Promise<CachedResponse | undefined> = this.l2!.get(key).finally(() => {
      if (this.l2Reads.get(key) === read) this.l2Reads.delete(key)
    })
    this.l2Reads.set(key, read)
    return read
  }

  /** true when there is a shared tier to ask (REDIS_URL is not off). */
  get hasSharedTier(): boolean {
    return this.l2 !== null
  }

  /**
   * The L1 hit alone, with no I/O and no promise: what the raw fast path in front of Fastify serves.
   * undefined means "not a fresh L1 hit": the caller goes the full way (serve).
   */
  freshLocal(path: string, segment: string): CachedResponse | undefined {
    const key = pageCacheKey(path, segment)
    const local = this.cache.get(key)
    if (local === undefined || Date.now() >= local.localFreshUntil) return undefined
    return this.freshInL1(local, key, path, segment, Date.now())
  }

  private freshInL1(local: L1Entry | undefined, key: string, path: string, segment: string, now: number): CachedResponse | undefined {
    if (local !== undefined && now < local.localFreshUntil) {
      this.metrics.lookup('l1', 'hit')
      if (this.refreshEarly(local.response, now)) this.refreshInBackground(key, path, segment)
      return local.response
    }
    this.metrics.lookup('l1', local === undefined ? 'miss' : 'stale')
    return undefined
  }

  /** XFetch; far from expiry (more than 10 render times) the draw could never fire, so skip it. */
  private refreshEarly(response: CachedResponse, now: number): boolean {
    const margin = response.freshUntil - now
    if (margin > response.renderMs * XFETCH_BETA * 10) return false
    return -response.renderMs * XFETCH_BETA * Math.log(Math.random()) >= margin
  }

  private refreshInBackground(key: string, path: string, segment: string): void {
    if (this.cache.isInFlight(key)) return
    this.backgroundRefreshes++
    this.renderShared(key, path, segment, true).catch((err: unknown) => this.log.warn({ err, path, segment }, 'background refresh failed; keeping the stale entry'))
  }

  /** One render per key in this process; across processes the lock winner renders and the rest wait. */
  private renderShared(key: string, path: string, segment: string, refreshing = false): Promise<CachedResponse> {
    return this.cache.singleFlight(key, async () => {
      const lockKey = `lock:${key}`
      const locked = this.l2 === null ? undefined : await this.l2.tryLock(lockKey, this.lockToken, RENDER_LOCK_MS)
      if (locked === false) {
        const theirs = await this.waitForShared(key)
        if (theirs !== undefined) {
          this.cache.set(key, theirs, Date.now() + this.settings.l1TtlSeconds * 1000)
          return theirs
        }
      }
      if (locked === true && !refreshing) {
        // Double-check: another instance may have finished and unlocked between our L2 miss and our lock.
        const justWritten = await this.l2?.get(key)
        if (justWritten !== undefined && Date.now() < justWritten.freshUntil) {
          await this.l2?.unlock(lockKey, this.lockToken)
          this.cache.set(key, justWritten, Date.now() + this.settings.l1TtlSeconds * 1000)
          return justWritten
        }
      }
      try {
        const response = await this.renderGuarded(path, segment)
        this.cache.set(key, response, Date.now() + this.settings.l1TtlSeconds * 1000)
        await this.l2?.set(key, response)
        return response
      } finally {
        if (locked === true) await this.l2?.unlock(lockKey, this.lockToken)
      }
    })
  }

  private async waitForShared(key: string): Promise<CachedResponse | undefined> {
    const deadline = Date.now() + LOCK_WAIT_MS
    while (Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS))
      const entry = await this.l2?.get(key)
      if (entry !== undefined && Date.now() < entry.freshUntil) return entry
    }
    return undefined
  }

  private async renderGuarded(path: string, segment: string): Promise<CachedResponse> {
    try {
      return await this.breaker.fire(path, segment)
    } catch (err) {
      if (err instanceof DomainError) throw err
      // The breaker is open: do not even try the database.
      throw new DomainError('DATABASE_UNAVAILABLE', 'the page store is unavailable; retry shortly', { cause: err })
    }
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
    if (hit !== undefined && Date.now() < hit.localFreshUntil) return { response: hit.response, cacheResult: 'HIT-L1' }
    const response = this.notFound('', segment, 0)
    this.cache.set(key, response, response.freshUntil)
    return { response, cacheResult: 'MISS' }
  }

  /** Drops every segment of these paths from L1 here, from L2, and from L1 on the other instances. */
  async invalidatePaths(paths: readonly string[]): Promise<number> {
    return this.invalidateKeys(paths.flatMap((path) => this.segmentSlugs().map((segment) => pageCacheKey(path, segment))))
  }

  /** Drops the given segments of these paths (a variant change touches only its segment), and the home page. */
  async invalidateSegments(paths: readonly string[], segments: readonly string[]): Promise<number> {
    const keys = paths.flatMap((path) => segments.map((segment) => pageCacheKey(path, segment)))
    return this.invalidateKeys([...keys, ...this.segmentSlugs().map((segment) => pageCacheKey('/', segment))])
  }

  async invalidateKeys(keys: readonly string[]): Promise<number> {
    const evicted = this.evictLocal(keys)
    // One DEL per path: the keys of a path share its hash tag (one Cluster slot).
    const byPath = new Map<string, string[]>()
    for (const key of keys) {
      const tag = key.slice(0, key.indexOf('}') + 1)
      byPath.set(tag, [...(byPath.get(tag) ?? []), key])
    }
    await Promise.all([...byPath.values()].map((group) => this.l2?.delete(group)))
    this.broadcast?.({ keys: [...keys], tags: [] })
    return evicted
  }

  /**
   * Renders one page for one segment into L2 unless a fresh entry is there already. The write is
   * SET NX, so a warm-up never overwrites what live traffic rendered meanwhile.
   */
  async warm(path: string, segment: string): Promise<'warmed' | 'skipped' | 'failed'> {
    if (this.l2 === null) return 'failed'
    const key = pageCacheKey(path, segment)
    const existing = await this.l2.get(key)
    if (existing !== undefined && Date.now() < existing.freshUntil) return 'skipped'
    try {
      const response = await this.renderGuarded(path, segment)
      // A stale entry is replaced; a missing one is only written if live traffic has not meanwhile.
      return (await this.l2.set(key, response, { onlyIfAbsent: existing === undefined })) ? 'warmed' : 'skipped'
    } catch (err) {
      this.log.warn({ err, path, segment }, 'warm-up render failed')
      return 'failed'
    }
  }

  /** Purge by paths and tags: L1 here, L2, and L1 on every other instance. Returns local evictions. */
  async purge(paths: readonly string[], tags: readonly string[]): Promise<number> {
    let evicted = paths.length === 0 ? 0 : await this.invalidatePaths(paths)
    if (tags.length > 0) {
      evicted += this.evictLocal([], tags)
      const keys = (await this.l2?.deleteTagged(tags)) ?? []
      evicted += this.evictLocal(keys, [])
      this.broadcast?.({ keys, tags: [...tags] })
    }
    return evicted
  }

  /** L1 only: what another instance's invalidation message asks of this one. */
  evictLocal(keys: readonly string[], tags: readonly string[] = []): number {
    this.invalidations++
    this.l2Reads.clear()
    let evicted = 0
    for (const key of keys) if (this.cache.delete(key)) evicted++
    if (tags.length > 0) evicted += this.cache.deleteTagged(new Set(tags))
    return evicted
  }

  private async render(path: string, segment: string): Promise<CachedResponse> {
    this.renders++
    const started = Date.now()
    try {
      const response = await this.renderPage(path, segment, started)
      this.metrics.rendered('ok', (Date.now() - started) / 1000)
      return response
    } catch (err) {
      this.metrics.rendered('error', (Date.now() - started) / 1000)
      throw err
    }
  }

  private async renderPage(path: string, segment: string, started: number): Promise<CachedResponse> {
    try {
      if (path === '/') return await this.renderIndex(segment, started)
      const page = await findPublishedPage(this.db, path)
      if (page === undefined) return this.notFound(path, segment, started)
      let html: string
      let lastModified = page.updatedAt
      if (page.kind === 'landing') {
        const searchStarted = performance.now()
        const variant = await findNearestVariant(this.db, page.id, segment)
        this.metrics.vectorSearch((performance.now() - searchStarted) / 1000)
        html = renderLandingPage(page, variant)
        if (variant !== undefined && variant.updatedAt > lastModified) lastModified = variant.updatedAt
      } else {
        html = renderSeoPage(page, await findRelatedPages(this.db, page.id, page.vertical, this.settings.relatedLinks))
      }
      const tags = [cacheTag('page', page.id), cacheTag('segment', segment), cacheTag('vertical', page.vertical), cacheTag('template', page.template)]
      return this.ok(html, lastModified, sharedTtlForPage(page.path, page.crawlWeight), tags, segment, started, page.path)
    } catch (err) {
      if (err instanceof DomainError) throw err
      throw new DomainError('DATABASE_UNAVAILABLE', 'the page store is unavailable; retry shortly', { cause: err })
    }
  }

  private async renderIndex(segment: string, started: number): Promise<CachedResponse> {
    const links = await listIndexLinks(this.db, INDEX_LINKS_PER_VERTICAL)
    const lastModified = await latestPageUpdate(this.db)
    const html = renderSiteIndex(this.settings.publicBaseUrl, links)
    return this.ok(html, lastModified, sharedTtlForPage('/', 0), [cacheTag('template', 'index'), cacheTag('segment', segment)], segment, started, '/')
  }

  private ok(html: string, lastModified: Date, sharedTtl: number, tags: string[], segment: string, started: number, path: string): CachedResponse {
    const response = this.build(200, html, lastModified, publicCacheHeaders(this.settings, sharedTtl, tags), segment, started, tags)
    // The origin's own fresh window is capped: it bounds staleness when an invalidation is lost.
    const now = Date.now()
    // The cap is jittered per path like the CDN TTL, so entries warmed together do not expire together.
    response.freshUntil = now + Math.round(Math.min(sharedTtl, this.settings.originFreshSeconds * pathJitterFactor(path)) * 1000)
    response.swrUntil = response.freshUntil + this.settings.staleWhileRevalidateSeconds * 1000
    response.staleUntil = Math.max(response.swrUntil, response.freshUntil + this.settings.staleIfErrorSeconds * 1000)
    return response
  }

  private notFound(path: string, segment: string, started: number): CachedResponse {
    const ttl = this.settings.notFoundTtlSeconds
    // Negative caching: brief, and without stale windows, so a page published later shows up quickly.
    const headers: HeaderMap =
      ttl === 0
        ? { 'cache-control': 'no-store' }
        : publicCacheHeaders({ ...this.settings, staleWhileRevalidateSeconds: 0, staleIfErrorSeconds: 0 }, ttl, [cacheTag('template', 'not-found')])
    const response = this.build(404, renderNotFound(this.settings.publicBaseUrl, path), new Date(0), headers, segment, started, [cacheTag('template', 'not-found')])
    // A 404 is never served stale: a page published meanwhile must show up within the negative TTL.
    response.freshUntil = response.swrUntil = response.staleUntil = Date.now() + ttl * 1000
    return response
  }

  private build(status: number, html: string, lastModified: Date, cacheHeaders: HeaderMap, segment: string, started: number, tags: string[]): CachedResponse {
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
    return { status, body, headers, notModifiedHeaders, etag, lastModified: lastModifiedSeconds, freshUntil: 0, swrUntil: 0, staleUntil: 0, renderMs: Date.now() - started, renderedAt: Date.now(), tags }
  }
}
