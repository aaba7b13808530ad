// Sitemaps for millions of pages, streamed: shards in crawl-weight order (highest first, ties by id),
// read with keyset pagination on the pages_sitemap_order index, written by the `sitemap` package's
// streams. Memory stays flat: one batch of rows at a time, never the whole result.
//
// How shard N finds its first key without walking shards 0..N-1: the first key of every shard (its
// boundary) is computed in ONE pass over the index (row_number() over the sitemap order, keeping every
// shard-size-th key: a few hundred keys for millions of pages) and cached per sitemap version. The
// version is bumped by a statement trigger on pages (migration 0004), in the writer's transaction, so
// boundaries are recomputed only after a write; between writes a shard is one index range scan.

import { PassThrough, Readable } from 'node:stream'
import { type Kysely, sql } from 'kysely'
import { SitemapIndexStream, SitemapStream } from 'sitemap'
import type { Database } from '../db/schema.ts'
import { fnv1a32 } from '../http/cache-policy.ts'

/** The protocol's limits for one sitemap file. */
export const MAX_URLS_PER_SITEMAP = 50_000
export const MAX_SITEMAP_BYTES = 50 * 1024 * 1024
/**
 * Rows per keyset query while streaming a shard: ~2 MB of rows in memory at a time. Measured on the
 * embedded PostgreSQL: 2,000 rows took 91 ms a query and 10,000 took 155 ms, so larger batches pay
 * the per-query round trip far less often.
 */
export const BATCH_ROWS = 10_000
/** Bytes of one <url> entry besides its <loc> text: tags, lastmod (24 characters). */
const ENTRY_OVERHEAD_BYTES = 64
const URLSET_OVERHEAD_BYTES = 200

export interface SitemapSettings {
  publicBaseUrl: string
  sitemapShardSize: number
  sitemapMinWeight: number
}

interface Logger {
  error(obj: object, msg: string): void
}

/** A position in the sitemap order: the negated weight (as PostgreSQL's real) and the page id. */
interface SortKey {
  negWeight: number
  id: string
}

export interface SitemapState {
  version: string
  changedAt: Date
  /** First key of every shard; shard i spans [boundaries[i], boundaries[i + 1]). */
  boundaries: SortKey[]
  shardCount: number
}

const NO_NAMESPACES = { news: false, xhtml: false, image: false, video: false }
/** A site without published pages: well-formed, though the XSD wants at least one <url>. */
export const EMPTY_URLSET = '<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"></urlset>'

type Entry = { url: string; lastmod: string }

/** SitemapStream refuses to end empty; a shard whose rows vanished since the boundaries were read is an empty urlset. */
function sitemapOrEmpty(entries: AsyncGenerator<Entry>): Readable {
  const out = new PassThrough()
  async function* from(first: Entry): AsyncGenerator<Entry> {
    yield first
    yield* entries
  }
  entries.next().then(
    (first) => {
      if (first.done === true) return void out.end(EMPTY_URLSET)
      const source = Readable.from(from(first.value))
      const sitemap = new SitemapStream({ xmlns: NO_NAMESPACES })
      source.on('error', (err) => out.destroy(err))
      sitemap.on('error', (err) => out.destroy(err))
      source.pipe(sitemap).pipe(out)
    },
    (err: unknown) => out.destroy(err as Error),
  )
  return out
}

function escapedLength(url: string): number {
  let extra = 0
  for (let i = 0; i < url.length; i++) {
    const c = url.charCodeAt(i)
    if (c === 38) extra += 4 // &amp;
    else if (c === 60 || c === 62) extra += 3 // &lt; &gt;
    else if (c === 34 || c === 39) extra += 5 // &quot; &apos;
  }
  return Buffer.byteLength(url) + extra
}

export class SitemapService {
  private readonly db: Kysely<Database>
  private readonly settings: SitemapSettings
  private readonly log: Logger
  private cached: Promise<SitemapState> | undefined
  private cachedVersion: string | undefined
  /** Boundary computations so far (tests and the benchmark read it). */
  boundaryComputations = 0
  private readonly batchRows: number

  constructor(db: Kysely<Database>, settings: SitemapSettings, log: Logger, options: { batchRows?: number } = {}) {
    this.db = db
    this.settings = settings
    this.log = log
    this.batchRows = options.batchRows ?? BATCH_ROWS
  }

  /** One small read per request; the boundaries are recomputed only when the version moved. */
  async state(): Promise<SitemapState> {
    const row = await this.db.selectFrom('sitemap_version').select(['version', 'changed_at']).executeTakeFirstOrThrow()
    if (this.cached === undefined || this.cachedVersion !== row.version) {
      this.cachedVersion = row.version
      // Concurrent requests on a new version share one computation.
      this.cached = this.computeBoundaries().then((boundaries) => ({ version: row.version, changedAt: row.changed_at, boundaries, shardCount: Math.max(1, boundaries.length) }))
      this.cached.catch(() => {
        this.cached = undefined
      })
    }
    return this.cached
  }

  private async computeBoundaries(): Promise<SortKey[]> {
    this.boundaryComputations++
    const size = this.settings.sitemapShardSize
    // One pass in index order; PostgreSQL streams it (row_number needs no frame) and returns one row per shard.
    const result = await sql<{ neg_weight: number; id: string }>`
      SELECT neg_weight, id FROM (
        SELECT -crawl_weight AS neg_weight, id, row_number() OVER (ORDER BY -crawl_weight, id) AS rn
        FROM pages
        WHERE status = 'published' AND -crawl_weight <= ${-this.settings.sitemapMinWeight}::real
      ) ordered
      WHERE (rn - 1) % ${size} = 0
      ORDER BY rn`.execute(this.db)
    return result.rows.map((r) => ({ negWeight: Number(r.neg_weight), id: String(r.id) }))
  }

  /** A weak validator: same version and settings, same document (a write landing mid-stream is the next version). */
  etag(state: SitemapState, document: string): string {
    const settings = `${this.settings.publicBaseUrl}|${this.settings.sitemapShardSize}|${this.settings.sitemapMinWeight}`
    return `W/"sm-${state.version}-${document}-${fnv1a32(settings).toString(36)}"`
  }

  indexStream(state: SitemapState): Readable {
    const base = this.settings.publicBaseUrl
    const lastmod = state.changedAt.toISOString()
    const entries = Readable.from(Array.from({ length: state.shardCount }, (_, i) => ({ url: `${base}/sitemaps/${i}.xml`, lastmod })))
    return entries.pipe(new SitemapIndexStream({ lastmodDateOnly: false }))
  }

  shardStream(state: SitemapState, shard: number): Readable {
    const from = state.boundaries[shard]
    const to = state.boundaries[shard + 1]
    return from === undefined ? Readable.from([EMPTY_URLSET]) : sitemapOrEmpty(this.shardEntries(from, to, shard))
  }

  /** Keyset pagination from the shard's first key up to the next shard's, in batches. */
  private async *shardEntries(from: SortKey, to: SortKey | undefined, shard: number): AsyncGenerator<Entry> {
    const limit = Math.min(this.settings.sitemapShardSize, MAX_URLS_PER_SITEMAP)
    let after: SortKey | undefined
    let emitted = 0
    let bytes = URLSET_OVERHEAD_BYTES
    while (emitted < limit) {
      const start = after ?? from
      const result = await sql<{ neg_weight: number; id: string; canonical_url: string; updated_at: Date }>`
        SELECT -crawl_weight AS neg_weight, id, canonical_url, updated_at
        FROM pages
        WHERE status = 'published' AND -crawl_weight <= ${-this.settings.sitemapMinWeight}::real
          AND (-crawl_weight, id) ${after === undefined ? sql`>=` : sql`>`} (${start.negWeight}::real, ${start.id}::bigint)
          ${to === undefined ? sql`` : sql`AND (-crawl_weight, id) < (${to.negWeight}::real, ${to.id}::bigint)`}
        ORDER BY -crawl_weight, id
        LIMIT ${Math.min(this.batchRows, limit - emitted)}`.execute(this.db)
      for (const row of result.rows) {
        bytes += ENTRY_OVERHEAD_BYTES + escapedLength(row.canonical_url)
        if (bytes > MAX_SITEMAP_BYTES) {
          // Only canonical URLs averaging over ~1 KB can get here; a lower SITEMAP_SHARD_SIZE fixes it.
          this.log.error({ shard, emitted }, 'sitemap shard reached 50 MB before its URL count; the rest of this shard is left out: lower SITEMAP_SHARD_SIZE')
          return
        }
        yield { url: row.canonical_url, lastmod: row.updated_at.toISOString() }
      }
      emitted += result.rows.length
      if (result.rows.length < this.batchRows) return
      const last = result.rows[result.rows.length - 1]!
      after = { negWeight: Number(last.neg_weight), id: String(last.id) }
    }
  }
}
