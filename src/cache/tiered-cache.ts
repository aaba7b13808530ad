// The origin's two cache tiers behind one interface: L1 (this process, lru-cache) in front of L2
// (Redis, shared by every instance), with coalesced L2 reads and invalidation across instances.
// It knows keys and entries, not pages: what a key means is the page service's business.

import type { LockRelease, RedisL2 } from './redis-l2.ts'
import type { CachedResponse, L1Entry, ResponseCache } from './response-cache.ts'

/** What another instance is told to drop from its L1 (Redis pub/sub; see plugins/invalidation.ts). */
export interface InvalidationMessage {
  keys: string[]
  tags: string[]
  /** The segments changed: reload them (plugins/segments.ts). */
  segments?: boolean
  /** The experiments changed: reload them (plugins/experiments.ts). */
  experiments?: boolean
}

export interface TieredCacheMetrics {
  /** One per tier consulted: hit (fresh), stale (present, past fresh), miss (absent). */
  lookup(tier: 'l1' | 'l2', result: 'hit' | 'miss' | 'stale'): void
  /** A lookup that shared the L2 read already in flight for its key. */
  l2ReadCoalesced(): void
}

/** What the tiers held for a lookup: `fresh` (with the key it was found under) is set when one of them can answer as is. */
export interface TierLookup {
  fresh: { response: CachedResponse; tier: 'l1' | 'l2'; key: string } | undefined
  local: L1Entry | undefined
  shared: CachedResponse | undefined
}

export interface TieredCacheOptions {
  l1: ResponseCache
  /** null: no shared tier (REDIS_URL=off). */
  l2: RedisL2 | null
  /** How long an entry read from L2 (or rendered here) is answered from L1 before L2 is asked again. */
  l1TtlSeconds: number
  /** Tells the other instances to drop these L1 keys and tags; absent on a single instance. */
  broadcast?: ((message: InvalidationMessage) => void) | undefined
  metrics: TieredCacheMetrics
}

export class TieredCache {
  private readonly l1: ResponseCache
  private readonly l2: RedisL2 | null
  private readonly l1TtlMs: number
  private readonly broadcast: ((message: InvalidationMessage) => void) | undefined
  private readonly metrics: TieredCacheMetrics
  /**
   * L2 reads in flight, by keys: concurrent lookups of one page (a hot page whose L1 copy just expired)
   * share one Redis GET. Cleared by every invalidation, so a lookup that starts after a purge never
   * joins a read sent before it.
   */
  private readonly l2Reads = new Map<string, Promise<Array<CachedResponse | undefined>>>()
  /** Bumped by every invalidation: an L2 read that straddles one does not refill L1 with what it read. */
  private invalidations = 0

  constructor(options: TieredCacheOptions) {
    this.l1 = options.l1
    this.l2 = options.l2
    this.l1TtlMs = options.l1TtlSeconds * 1000
    this.broadcast = options.broadcast
    this.metrics = options.metrics
  }

  /** true when there is a shared tier to ask (REDIS_URL is not off). */
  get hasSharedTier(): boolean {
    return this.l2 !== null
  }

  /**
   * The L1 hit alone, with no I/O and no promise (the fast path's first question). Only a hit is
   * counted: on anything else the caller goes on to lookup(), which counts what L1 held.
   */
  freshLocal(key: string, now = Date.now()): CachedResponse | undefined {
    const local = this.l1.get(key)
    if (local === undefined || now >= local.localFreshUntil) return undefined
    this.metrics.lookup('l1', 'hit')
    return local.response
  }

  /** What L1 holds for a key, fresh or not, uncounted (a stand-in for another key's miss). */
  peekLocal(key: string): L1Entry | undefined {
    return this.l1.get(key)
  }

  /**
   * The first of `keys` fresh in L1, else the first fresh in L2 (copied into L1), else what each tier
   * holds (the first key present). The keys are alternatives for one answer (a page's entry for every
   * segment, its entry for one segment); they share a hash tag, so L2 reads them in one MGET even on a
   * Cluster. Counted once per tier.
   */
  async lookup(keys: readonly string[]): Promise<TierLookup> {
    const now = Date.now()
    let local: L1Entry | undefined
    for (const key of keys) {
      const entry = this.l1.get(key)
      if (entry === undefined) continue
      if (now < entry.localFreshUntil) {
        this.metrics.lookup('l1', 'hit')
        return { fresh: { response: entry.response, tier: 'l1', key }, local: entry, shared: undefined }
      }
      local ??= entry
    }
    this.metrics.lookup('l1', local === undefined ? 'miss' : 'stale')
    if (this.l2 === null) return { fresh: undefined, local, shared: undefined }
    const generation = this.invalidations
    const entries = await this.readCoalesced(keys)
    let shared: CachedResponse | undefined
    for (const [i, entry] of entries.entries()) {
      if (entry === undefined) continue
      if (now < entry.freshUntil) {
        const key = keys[i]!
        this.metrics.lookup('l2', 'hit')
        // Lookups that shared the read find L1 already refilled by the first of them.
        if (generation === this.invalidations && this.l1.get(key)?.response !== entry) this.storeLocal(key, entry)
        return { fresh: { response: entry, tier: 'l2', key }, local, shared: entry }
      }
      shared ??= entry
    }
    this.metrics.lookup('l2', shared === undefined ? 'miss' : 'stale')
    return { fresh: undefined, local, shared }
  }

  private readCoalesced(keys: readonly string[]): Promise<Array<CachedResponse | undefined>> {
    const id = keys.join('\n')
    const inFlight = this.l2Reads.get(id)
    if (inFlight !== undefined) {
      this.metrics.l2ReadCoalesced()
      return inFlight
    }
    const read: Promise<Array<CachedResponse | undefined>> = this.l2!.getMany(keys).finally(() => {
      if (this.l2Reads.get(id) === read) this.l2Reads.delete(id)
    })
    this.l2Reads.set(id, read)
    return read
  }

  /** What L2 holds for each key, fresh or not, read now on its own (never coalesced, never counted). */
  async readShared(keys: readonly string[]): Promise<Array<CachedResponse | undefined>> {
    return this.l2 === null ? keys.map(() => undefined) : this.l2.getMany(keys)
  }

  /** The first of `keys` fresh in L2, read now (a lock loser polling for the winner's entry). */
  async freshShared(keys: readonly string[]): Promise<{ key: string; response: CachedResponse } | undefined> {
    const now = Date.now()
    const entries = await this.readShared(keys)
    const i = entries.findIndex((entry) => entry !== undefined && now < entry.freshUntil)
    return i === -1 ? undefined : { key: keys[i]!, response: entries[i]! }
  }

  /** Into L1 only, answered from there until `localFreshUntil` (default: L1_TTL_SECONDS from now). */
  storeLocal(key: string, response: CachedResponse, localFreshUntil = Date.now() + this.l1TtlMs): void {
    this.l1.set(key, response, localFreshUntil)
  }

  /**
   * Into both tiers (L1 only with `shared: false`); L1 holds it before the first await. `unlock`: a
   * render lock released once L2 is written (in the same round trip where it can be).
   */
  async store(key: string, response: CachedResponse, options: { shared?: boolean; unlock?: LockRelease | undefined } = {}): Promise<void> {
    this.storeLocal(key, response)
    if (options.shared !== false) await this.l2?.set(key, response, { unlock: options.unlock })
    else if (options.unlock !== undefined) await this.l2?.unlock(options.unlock.key, options.unlock.token)
  }

  /**
   * Into L2 only (warm-up): a stale entry is replaced; with `onlyIfAbsent`, a missing one is written only
   * if nobody wrote it meanwhile (SET NX). false when nothing was written (or there is no L2).
   */
  async storeShared(key: string, response: CachedResponse, options: { onlyIfAbsent: boolean }): Promise<boolean> {
    return this.l2 === null ? false : this.l2.set(key, response, options)
  }

  /** Drops these keys from L1 here, from L2, and from L1 on the other instances. Returns local evictions. */
  async invalidate(keys: readonly string[]): Promise<number> {
    const evicted = this.evictLocal(keys)
    // One DEL per hash tag: keys sharing one live in one Cluster slot.
    const byTag = new Map<string, string[]>()
    for (const key of keys) {
      const tag = key.slice(0, key.indexOf('}') + 1)
      byTag.set(tag, [...(byTag.get(tag) ?? []), key])
    }
    await Promise.all([...byTag.values()].map((group) => this.l2?.delete(group)))
    this.broadcast?.({ keys: [...keys], tags: [] })
    return evicted
  }

  /** Drops every entry carrying one of these tags, in every tier and on every instance. Returns local evictions. */
  async invalidateTags(tags: readonly string[]): Promise<number> {
    if (tags.length === 0) return 0
    let evicted = this.evictLocal([], tags)
    const keys = (await this.l2?.deleteTagged(tags)) ?? []
    evicted += this.evictLocal(keys, [])
    this.broadcast?.({ keys, tags: [...tags] })
    return evicted
  }

  /** L1 only: what another instance's invalidation message asks of this one. */
  evictLocal(keys: readonly string[], tags: readonly string[] = []): number {
    this.invalidations++
    this.l2Reads.clear()
    let evicted = 0
    for (const key of keys) if (this.l1.delete(key)) evicted++
    if (tags.length > 0) evicted += this.l1.deleteTagged(new Set(tags))
    return evicted
  }

  /** Empties L1 here (segment membership changed: every page may render differently). */
  clearLocal(): void {
    this.invalidations++
    this.l2Reads.clear()
    this.l1.clear()
  }
}
