// The serving policy for a canonical page path and a segment: what answers when the caches do not
// (stale-while-revalidate, the render budget with its default-segment stand-in, stale-if-error), early
// refresh near expiry, warm-up, and what an edit invalidates. The parts it steers:
//   src/cache/tiered-cache.ts         L1 + L2, coalesced reads, invalidation across instances
//   src/render/render-coordinator.ts  one render per key (single-flight, Redis lock)
//   src/render/page-renderer.ts       repository reads + template -> a cache entry
//   src/http/page-response.ts         the entry -> status, headers and body on the wire

import type { CachedResponse } from '../cache/response-cache.ts'
import type { TieredCache } from '../cache/tiered-cache.ts'
import type { CircuitState } from '../circuit-state.ts'
import { DomainError } from '../errors.ts'
import { type CachePolicySettings, shortLivedCacheHeaders } from '../http/cache-policy.ts'
import { asStandIn } from '../http/page-response.ts'
import type { PageRenderer } from '../render/page-renderer.ts'
import type { RenderCoordinator, RenderSlot } from '../render/render-coordinator.ts'
import { TIMED_OUT, withTimeout } from '../timeout.ts'

export type CacheResult = 'HIT-L1' | 'HIT-L2' | 'STALE' | 'MISS' | 'DEFAULT'

export interface ServedPage {
  response: CachedResponse
  cacheResult: CacheResult
}

/** What the cache tiers held for one page request; `hit` is set when one of them answers. */
export interface CacheLookup {
  hit: ServedPage | undefined
  local: { response: CachedResponse } | undefined
  shared: CachedResponse | undefined
}

export interface PageServiceSettings extends CachePolicySettings {
  renderBudgetMs: number
}

export interface ServingMetrics {
  staleServed(reason: 'revalidate' | 'error' | 'budget'): void
  /** A miss whose render overran RENDER_BUDGET_MS (answered stale or by the default segment meanwhile). */
  overBudget(): void
}

interface Logger {
  warn(obj: object, msg: string): void
}

export interface PageServiceOptions {
  cache: TieredCache
  renders: RenderCoordinator
  renderer: PageRenderer
  settings: PageServiceSettings
  metrics: ServingMetrics
  log: Logger
  /** Current segment slugs: an invalidation of a path drops every segment's entry. */
  segmentSlugs: () => readonly string[]
  /** The variants under experiment for a path, per segment: an invalidation drops each variant's entry too. */
  experimentVariants?: (path: string) => ReadonlyArray<[segment: string, variantIds: readonly number[]]>
}

/** A request of a page under experiment: the variant its bucket sees (src/experiments/experiment-registry.ts). */
export interface VariantChoice {
  variantId: number
}

/**
 * A page's cache key: with no segment, the one entry of a page that is the same for every segment;
 * with one, that segment's entry of a page that differs by segment. The path is the hash tag: every
 * key of a path, and its render lock, live in one Cluster slot (one MGET reads both). `generation`:
 * the render version and the settings that shape the bytes (PageRenderer.generation).
 */
export function pageCacheKey(path: string, segment: string | undefined, generation: string, variantId?: number): string {
  if (segment === undefined) return `page:{${path}}|${generation}`
  return variantId === undefined ? `page:{${path}}|${segment}|${generation}` : `page:{${path}}|${segment}|v${variantId}|${generation}`
}

export interface WarmCounts {
  warmed: number
  skipped: number
  failed: number
}

/** A stand-in served over budget is kept this long by shared caches, then asked for again. */
export const FALLBACK_SHARED_TTL_SECONDS = 60
/** XFetch: refresh early with probability rising as expiry nears, scaled by the render time. */
const XFETCH_BETA = 1

function newest(a: CachedResponse | undefined, b: CachedResponse | undefined): CachedResponse | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  return b.freshUntil > a.freshUntil ? b : a
}

export class PageService {
  private readonly cache: TieredCache
  private readonly renders: RenderCoordinator
  private readonly renderer: PageRenderer
  private readonly settings: PageServiceSettings
  private readonly metrics: ServingMetrics
  private readonly log: Logger
  private readonly segmentSlugs: () => readonly string[]
  private readonly experimentVariants: (path: string) => ReadonlyArray<[string, readonly number[]]>
  private readonly standInHeaders: Record<string, string>
  /** The render version and settings fingerprint in every key (PageRenderer.generation). */
  readonly generation: string
  private invalidPathResponse: CachedResponse | undefined

  constructor(options: PageServiceOptions) {
    this.cache = options.cache
    this.renders = options.renders
    this.renderer = options.renderer
    this.settings = options.settings
    this.metrics = options.metrics
    this.log = options.log
    this.segmentSlugs = options.segmentSlugs
    this.experimentVariants = options.experimentVariants ?? (() => [])
    this.standInHeaders = shortLivedCacheHeaders(this.settings, FALLBACK_SHARED_TTL_SECONDS, [])
    this.generation = this.renderer.generation
  }

  /** The entry of a page that is the same for every segment. */
  private pageKey(path: string): string {
    return pageCacheKey(path, undefined, this.generation)
  }

  /** A segment's entry; under experiment, one per variant (every bucket that sees the variant shares it). */
  private segmentKey(path: string, segment: string, choice?: VariantChoice): string {
    return pageCacheKey(path, segment, this.generation, choice?.variantId)
  }

  /**
   * Where a render for (path, segment) goes: whether the page differs by segment is known only once it
   * is rendered, so both keys are read and the render picks the one it is stored under.
   */
  private slot(path: string, segment: string, choice?: VariantChoice): RenderSlot {
    const pageKey = this.pageKey(path)
    const segmentKey = this.segmentKey(path, segment, choice)
    return {
      key: segmentKey,
      readKeys: [pageKey, segmentKey],
      storeKey: (response) => (response.perSegment ? segmentKey : pageKey),
      // A 404 stays in this instance's L1 (bounded in bytes): one per junk path in Redis would grow without bound.
      shared: (response) => response.status !== 404,
    }
  }

  get databaseCircuitState(): CircuitState {
    return this.renderer.circuitState
  }

  get hasSharedTier(): boolean {
    return this.cache.hasSharedTier
  }

  /**
   * The L1 hit alone, with no I/O and no promise: what the raw fast path in front of Fastify serves.
   * undefined means "not a fresh L1 hit": the caller goes on to lookup().
   */
  freshLocal(path: string, segment: string, choice?: VariantChoice): CachedResponse | undefined {
    const pageKey = this.pageKey(path)
    let response = this.cache.freshLocal(pageKey)
    if (response === undefined) response = this.cache.freshLocal(this.segmentKey(path, segment, choice))
    if (response !== undefined) this.maybeRefreshEarly(path, segment, response, choice)
    return response
  }

  /** The cache tiers alone: a fresh entry answers (HIT-L1, HIT-L2), else what they hold goes on to serve(). */
  async lookup(path: string, segment: string, choice?: VariantChoice): Promise<CacheLookup> {
    const { fresh, local, shared } = await this.cache.lookup(this.slot(path, segment, choice).readKeys)
    if (fresh === undefined) return { hit: undefined, local, shared }
    if (fresh.tier === 'l1') this.maybeRefreshEarly(path, segment, fresh.response, choice)
    return { hit: { response: fresh.response, cacheResult: fresh.tier === 'l1' ? 'HIT-L1' : 'HIT-L2' }, local, shared }
  }

  /**
   * A fresh entry as is; past it, stale-while-revalidate; else one render (coordinated across
   * instances). A render over the time budget is answered, when at hand, by this key's entry inside its
   * stale-if-error window or by the default segment's rendering; a failing database by any entry still
   * inside its stale-if-error window. `lookedUp`: the lookup the fast path already made.
   */
  async serve(path: string, segment: string, defaultSegment: string, lookedUp?: CacheLookup, choice?: VariantChoice): Promise<ServedPage> {
    const lookup = lookedUp ?? (await this.lookup(path, segment, choice))
    if (lookup.hit !== undefined) return lookup.hit
    const now = Date.now()
    const known = newest(lookup.local?.response, lookup.shared)
    if (known !== undefined && now < known.swrUntil) {
      this.metrics.staleServed('revalidate')
      this.refreshInBackground(path, segment, choice)
      return { response: known, cacheResult: 'STALE' }
    }

    const rendering = this.render(path, segment, false, choice)
    try {
      // What may answer if the render overruns its budget: this key's own entry while it is inside its
      // stale-if-error window (a slow or hung database then costs the budget, not its timeouts), else,
      // for a personalized request, the default segment's rendering; without either, the request waits.
      const staleCopy = known !== undefined && now < known.staleUntil ? known : undefined
      const standIn = staleCopy !== undefined || segment === defaultSegment || choice !== undefined ? undefined : this.cache.peekLocal(this.segmentKey(path, defaultSegment))?.response
      if (staleCopy === undefined && standIn === undefined) return { response: await rendering, cacheResult: 'MISS' }
      const result = await withTimeout(rendering, this.settings.renderBudgetMs)
      if (result !== TIMED_OUT) return { response: result, cacheResult: 'MISS' }
      this.metrics.overBudget()
      if (staleCopy !== undefined) {
        // Expected while the database is slow or down (counted, not logged per request); the render goes
        // on and refills the caches if it succeeds, and never replaces the entry if it fails.
        rendering.catch(() => undefined)
        this.metrics.staleServed('budget')
        return { response: staleCopy, cacheResult: 'STALE' }
      }
      rendering.catch((err: unknown) => this.log.warn({ err, path, segment }, 'background render after the budget failed'))
      this.log.warn({ path, segment, budgetMs: this.settings.renderBudgetMs }, 'render over budget; serving the default segment rendering meanwhile')
      return { response: asStandIn(standIn!, segment, this.standInHeaders), cacheResult: 'DEFAULT' }
    } catch (err) {
      // stale-if-error: a failed render never replaces a good entry, and the good entry answers.
      if (known !== undefined && Date.now() < known.staleUntil && err instanceof DomainError && err.code === 'DATABASE_UNAVAILABLE') {
        this.metrics.staleServed('error')
        return { response: known, cacheResult: 'STALE' }
      }
      throw err
    }
  }

  /** A 404 for a request path that can never be a page (bad characters, too long): no-store, built once. */
  serveInvalidPath(): ServedPage {
    this.invalidPathResponse ??= this.renderer.invalidPath()
    return { response: this.invalidPathResponse, cacheResult: 'MISS' }
  }

  /** XFetch on a fresh L1 hit; far from expiry (more than 10 render times) the draw could never fire, so skip it. */
  private maybeRefreshEarly(path: string, segment: string, response: CachedResponse, choice: VariantChoice | undefined): void {
    const margin = response.freshUntil - Date.now()
    if (margin > response.renderMs * XFETCH_BETA * 10) return
    if (-response.renderMs * XFETCH_BETA * Math.log(Math.random()) >= margin) this.refreshInBackground(path, segment, choice)
  }

  private refreshInBackground(path: string, segment: string, choice: VariantChoice | undefined): void {
    if (this.renders.isRendering(this.segmentKey(path, segment, choice))) return
    this.render(path, segment, true, choice).catch((err: unknown) => this.log.warn({ err, path, segment }, 'background refresh failed; keeping the stale entry'))
  }

  private render(path: string, segment: string, refreshing: boolean, choice: VariantChoice | undefined): Promise<CachedResponse> {
    const slot = this.slot(path, segment, choice)
    const onLateEncodings = (original: CachedResponse, encoded: CachedResponse): void => this.storeLateEncodings(slot, original, encoded)
    return this.renders.render(slot, () => this.renderer.render(path, segment, { onLateEncodings, ...(choice === undefined ? {} : { variantId: choice.variantId }) }), { refreshing })
  }

  /**
   * A render whose compression outlasted the budget went out with the identity bytes; its coded twin
   * replaces it where it is still the entry held (not if an edit or a newer render replaced it meanwhile).
   */
  private storeLateEncodings(slot: RenderSlot, original: CachedResponse, encoded: CachedResponse): void {
    const key = slot.storeKey(encoded)
    if (this.cache.peekLocal(key)?.response !== original) return
    this.cache.store(key, encoded, { shared: slot.shared(encoded) }).catch((err: unknown) => this.log.warn({ err, key }, 'storing the compressed entry failed; the identity one stays'))
  }

  /** Drops these paths (their entry for every segment, and each segment's) from L1 here, from L2, and from L1 on the other instances. */
  invalidatePaths(paths: readonly string[]): Promise<number> {
    return this.cache.invalidate(
      paths.flatMap((path) => [
        this.pageKey(path),
        ...this.segmentSlugs().map((segment) => this.segmentKey(path, segment)),
        ...this.experimentVariants(path).flatMap(([segment, variants]) => variants.map((variantId) => this.segmentKey(path, segment, { variantId }))),
      ]),
    )
  }

  /** Purge by paths and tags: L1 here, L2, and L1 on every other instance. Returns local evictions. */
  async purge(paths: readonly string[], tags: readonly string[]): Promise<number> {
    const evicted = paths.length === 0 ? 0 : await this.invalidatePaths(paths)
    return evicted + (await this.cache.invalidateTags(tags))
  }

  /**
   * Renders a page into L2 for each segment that lacks a fresh entry: segment by segment until the first
   * render says whether the page differs by segment, so a page that does not costs one render, one
   * entry. The writes are SET NX where nothing was there, so a warm-up never overwrites what live
   * traffic rendered meanwhile.
   */
  async warm(path: string, segments: readonly string[]): Promise<WarmCounts> {
    const counts: WarmCounts = { warmed: 0, skipped: 0, failed: 0 }
    if (!this.cache.hasSharedTier) {
      counts.failed = segments.length
      return counts
    }
    const underExperiment = new Map(this.experimentVariants(path))
    for (const segment of segments) {
      // A segment under experiment: each competing variant's entry, the one every bucket that sees it reads.
      const variants = underExperiment.get(segment)
      if (variants !== undefined) {
        for (const variantId of variants) counts[(await this.warmOne(path, segment, { variantId })).outcome]++
        continue
      }
      const { outcome, perSegment } = await this.warmOne(path, segment)
      counts[outcome]++
      if (perSegment === false) break
    }
    return counts
  }

  private async warmOne(path: string, segment: string, choice?: VariantChoice): Promise<{ outcome: keyof WarmCounts; perSegment: boolean | undefined }> {
    const slot = this.slot(path, segment, choice)
    const existing = await this.cache.readShared(slot.readKeys)
    const now = Date.now()
    const fresh = existing.find((entry) => entry !== undefined && now < entry.freshUntil)
    if (fresh !== undefined) return { outcome: 'skipped', perSegment: fresh.perSegment }
    try {
      // From the primary: an admin call renders what was written, whatever a replica has replayed.
      const response = await this.renderer.render(path, segment, { awaitEncodings: true, primary: true, ...(choice === undefined ? {} : { variantId: choice.variantId }) })
      if (!slot.shared(response)) return { outcome: 'skipped', perSegment: false }
      const key = slot.storeKey(response)
      // A stale entry is replaced; a missing one is only written if live traffic has not meanwhile.
      const written = await this.cache.storeShared(key, response, { onlyIfAbsent: existing[slot.readKeys.indexOf(key)] === undefined })
      return { outcome: written ? 'warmed' : 'skipped', perSegment: response.perSegment }
    } catch (err) {
      this.log.warn({ err, path, segment }, 'warm-up render failed')
      return { outcome: 'failed', perSegment: undefined }
    }
  }
}
