// One render per cold key: single-flight within this process, and across processes a short Redis
// lock (SET NX PX) whose losers wait for the winner's entry in L2 instead of rendering it again.
// The result lands in both cache tiers: L1 before the answer leaves, L2 right after it.

import { randomUUID } from 'node:crypto'
import type { CachedResponse } from '../cache/response-cache.ts'
import type { TieredCache } from '../cache/tiered-cache.ts'

/** The lock half of the L2 client (src/cache/redis-l2.ts). */
export interface RenderLocks {
  /**
   * Takes the lock and reads `keys` in the same round trip. locked true: this instance renders; false:
   * another one is; undefined: Redis cannot say (render anyway). `entries`: what L2 held for `keys` just
   * after the lock was taken.
   */
  tryLock(key: string, token: string, ttlMs: number, keys: readonly string[]): Promise<{ locked: boolean | undefined; entries: Array<CachedResponse | undefined> }>
  /** Whether the lock is still held; undefined when Redis cannot say. */
  isLocked(key: string): Promise<boolean | undefined>
  unlock(key: string, token: string): Promise<void>
}

/** One render's place in the caches. */
export interface RenderSlot {
  /** Single-flight and the Redis lock: one render of this key at a time. */
  key: string
  /** Where a finished render may be found (a lock loser polls them in L2). */
  readKeys: readonly string[]
  /** Where a render is stored: which key depends on what it turned out to be. */
  storeKey(response: CachedResponse): string
  /** false for a render kept in this instance's L1 only (a 404: one per junk path would fill Redis). */
  shared(response: CachedResponse): boolean
}

export interface RenderCoordinatorOptions {
  cache: TieredCache
  /** null: one instance on its own (REDIS_URL=off): single-flight alone. */
  locks: RenderLocks | null
  /** A request that joined a render already running for its key in this process. */
  onCoalesced: () => void
}

/** How long one instance may render a cold key before another stops waiting for it. */
const RENDER_LOCK_MS = 5_000
/** How long an instance that lost the lock waits for the winner's entry before rendering itself. */
const LOCK_WAIT_MS = 2_000
const LOCK_POLL_MS = 20

export class RenderCoordinator {
  private readonly cache: TieredCache
  private readonly locks: RenderLocks | null
  private readonly onCoalesced: () => void
  private readonly lockToken = randomUUID()
  private readonly inFlight = new Map<string, Promise<CachedResponse>>()
  private readonly pending = new Set<Promise<void>>()

  constructor(options: RenderCoordinatorOptions) {
    this.cache = options.cache
    this.locks = options.locks
    this.onCoalesced = options.onCoalesced
  }

  /** true while this process renders the slot's key. */
  isRendering(key: string): boolean {
    return this.inFlight.has(key)
  }

  /**
   * `render` once for `slot.key` however many callers ask at the same moment, stored in both tiers
   * under `slot.storeKey(response)`. A refresh (`refreshing`) renders even when another instance has
   * just written a fresh entry.
   */
  render(slot: RenderSlot, render: () => Promise<CachedResponse>, options: { refreshing?: boolean } = {}): Promise<CachedResponse> {
    const pending = this.inFlight.get(slot.key)
    if (pending !== undefined) {
      this.onCoalesced()
      return pending
    }
    const promise = this.renderLocked(slot, render, options.refreshing === true).finally(() => this.inFlight.delete(slot.key))
    this.inFlight.set(slot.key, promise)
    return promise
  }

  private async renderLocked(slot: RenderSlot, render: () => Promise<CachedResponse>, refreshing: boolean): Promise<CachedResponse> {
    const lockKey = `lock:${slot.key}`
    const { locked, entries } = this.locks === null ? { locked: undefined, entries: [] } : await this.locks.tryLock(lockKey, this.lockToken, RENDER_LOCK_MS, slot.readKeys)
    if (locked === false) {
      const theirs = await this.waitForWinner(slot.readKeys, lockKey)
      if (theirs !== undefined) {
        this.cache.storeLocal(theirs.key, theirs.response)
        return theirs.response
      }
    }
    const unlock = locked === true ? { key: lockKey, token: this.lockToken } : undefined
    const release = (): Promise<void> => (unlock === undefined ? Promise.resolve() : this.locks!.unlock(unlock.key, unlock.token))
    let response: CachedResponse
    try {
      if (locked === true && !refreshing) {
        // Double-check (read with the lock): another instance may have finished and unlocked between our
        // L2 miss and our lock.
        const now = Date.now()
        const i = entries.findIndex((entry) => entry !== undefined && now < entry.freshUntil)
        if (i !== -1) {
          this.cache.storeLocal(slot.readKeys[i]!, entries[i]!)
          this.afterAnswer(release())
          return entries[i]!
        }
      }
      response = await render()
    } catch (err) {
      this.afterAnswer(release())
      throw err
    }
    // The answer leaves once L1 holds the entry (store() puts it there before its first await); the L2
    // write, its tag indexes and the unlock follow off the request's path, in one round trip. Lock losers
    // poll L2 and find it a round trip later; this instance answers the key from L1 meanwhile.
    this.afterAnswer(this.cache.store(slot.storeKey(response), response, { shared: slot.shared(response), unlock }))
    return response
  }

  /** Redis work left after an answer; settled() waits for it (a graceful stop writes what it rendered). */
  private afterAnswer(work: Promise<void>): void {
    // RedisL2 fails open (every call catches and counts its errors): nothing here rejects.
    const tracked = work.catch(() => undefined).finally(() => this.pending.delete(tracked))
    this.pending.add(tracked)
  }

  /** Resolves when every L2 write and unlock started so far has finished. */
  async settled(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending])
  }

  /**
   * The winner's entry from L2, polled until the lock is released: a winner that unlocked without
   * writing to L2 (a 404, a failed render) sends the losers to render at once, not after LOCK_WAIT_MS.
   */
  private async waitForWinner(keys: readonly string[], lockKey: string): Promise<{ key: string; response: CachedResponse } | undefined> {
    const deadline = Date.now() + LOCK_WAIT_MS
    while (Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS))
      const entry = await this.cache.freshShared(keys)
      if (entry !== undefined) return entry
      if ((await this.locks?.isLocked(lockKey)) === false) return undefined
    }
    return undefined
  }
}
