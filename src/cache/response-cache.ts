// In-process response cache (L1): an LRU bounded in bytes, holding each entry until its stale window
// ends. Freshness is its callers' business (src/cache/tiered-cache.ts); this is only the memory.

import { LRUCache } from 'lru-cache'
import type { Encodings } from '../http/content-coding.ts'

export interface CachedResponse {
  status: number
  /** The identity bytes. */
  body: Buffer
  /** The same bytes gzip- and brotli-coded at render time, each with its own ETag (empty: not compressed). */
  encodings: Encodings
  /** Every header the response carries, lower-case names, except the per-request X-Cache. */
  headers: Record<string, string>
  /** The subset a 304 repeats (RFC 9110 section 15.4.5), computed once at render time. */
  notModifiedHeaders: Record<string, string>
  etag: string
  lastModified: Date
  /**
   * true when the bytes depend on the request's segment (a landing page with variants in scope): the
   * entry is kept per segment and varies on X-Segment. false: one entry serves every segment.
   */
  perSegment: boolean
  /** Epoch ms: served as is until then. */
  freshUntil: number
  /** Epoch ms: served stale while one background refresh runs, until then. */
  swrUntil: number
  /** Epoch ms: served stale when the database fails (stale-if-error), until then. */
  staleUntil: number
  /** How long the render took, for probabilistic early refresh. */
  renderMs: number
  /** Epoch ms of the render: a stale answer tells the CDN its age. */
  renderedAt: number
  /** Purge tags (page, segment, vertical, template), as sent to the CDN. */
  tags: string[]
}

export interface L1Entry {
  response: CachedResponse
  /** When this instance asks L2 / the database again (bounds staleness when invalidations are lost). */
  localFreshUntil: number
}

/** Fixed overhead counted per entry besides the bodies: key, headers, bookkeeping. */
const ENTRY_OVERHEAD_BYTES = 512

/** What an entry's bytes weigh: the identity body and every coded one. */
export function entryBytes(response: CachedResponse): number {
  const { br, gzip } = response.encodings
  return response.body.byteLength + (br?.body.byteLength ?? 0) + (gzip?.body.byteLength ?? 0)
}

export class ResponseCache {
  private readonly lru: LRUCache<string, L1Entry>

  constructor(maxBytes: number) {
    this.lru = new LRUCache<string, L1Entry>({
      maxSize: maxBytes,
      sizeCalculation: (value, key) => entryBytes(value.response) + key.length + ENTRY_OVERHEAD_BYTES,
      // Entries larger than a tenth of the cache would evict too much: serve them uncached.
      maxEntrySize: Math.max(1, Math.floor(maxBytes / 10)),
    })
  }

  get(key: string): L1Entry | undefined {
    return this.lru.get(key)
  }

  /** Kept until the response's stale window ends; freshness is decided by the caller. */
  set(key: string, response: CachedResponse, localFreshUntil: number): void {
    const ttl = response.staleUntil - Date.now()
    if (ttl <= 0) return
    this.lru.set(key, { response, localFreshUntil: Math.min(localFreshUntil, response.freshUntil) }, { ttl: Math.ceil(ttl) })
  }

  /** Evicts every entry carrying one of these tags. */
  deleteTagged(tags: ReadonlySet<string>): number {
    let deleted = 0
    for (const [key, entry] of this.lru.entries()) {
      if (entry.response.tags.some((tag) => tags.has(tag)) && this.lru.delete(key)) deleted++
    }
    return deleted
  }

  delete(key: string): boolean {
    return this.lru.delete(key)
  }

  clear(): void {
    this.lru.clear()
  }
}
