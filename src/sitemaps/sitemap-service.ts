// Sitemaps for millions of pages, streamed: shards in crawl-weight order (highest first, ties by id),
// read with keyset pagination on the pages_sitemap_order index, written one batch at a time with
// backpressure. Memory stays flat: one batch of rows at a time, never the whole result.
//
// How shard N finds its first key without walking shards 0..N-1: the first key of every shard (its
// boundary) is computed in ONE pass over the index (row_number() over the sitemap order, keeping every
// shard-size-th key: a few hundred keys for millions of pages) and cached per sitemap version. The
// version is bumped by a statement trigger on pages (migration 0004), in the writer's transaction, so
// boundaries are recomputed only after a write; between writes a shard is one index range scan.

import { Readable } from 'node:stream'
import { type Kysely, sql } from 'kysely'
import type { Database } from '../db/schema.ts'
import { DomainError } from '../errors.ts'
import { fnv1a32 } from '../hash.ts'

/** The protocol's limits for one sitemap file. */
export const MAX_URLS_PER_SITEMAP = 50_000
export const MAX_SITEMAP_BYTES = 50 * 1024 * 1024
/**
 * Rows per keyset query while streaming a shard: ~2 MB of rows in memory at a time. Measured on the
 * embedded PostgreSQL: 2,000 rows took 91 ms a query and 10,000 took 155 ms, so larger batches pay
 * the per-query round trip far less often.
 */
export const BATCH_ROWS = 10_000
const URLSET_OVERHEAD_BYTES = 200
/**
 * Size of the strings handed to the response. V8 allocates a string over ~128 KB straight in its
 * large-object space, which only a full collection frees; 32 KB chunks stay in the young generation.
 */
const CHUNK_CHARS = 32 * 1024

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

const XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
const NAMESPACE = 'http://www.sitemaps.org/schemas/sitemap/0.9'
/** A site without published pages: well-formed, though the XSD wants at least one <url>. */
export const EMPTY_URLSET = `${XML_DECLARATION}<urlset xmlns="${NAMESPACE}">\n</urlset>\n`

const XML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' }

/** <loc> text: non-ASCII percent-encoded (the protocol wants URL-escaped URLs), then entity-escaped. */
export function xmlLoc(url: string): string {
  return url.replace(/[^\x00-\x7f]+/g, (run) => encodeURIComponent(run)).replace(/[&<>"']/g, (c) => XML_ESCAPES[c]!)
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
  private readonly maxBytes: number

  /** `batchRows` and `maxBytes` are for tests: the defaults are the measured batch and the protocol's 50 MB. */
  constructor(db: Kysely<Database>, settings: SitemapSettings, log: Logger, options: { batchRows?: number; maxBytes?: number } = {}) {
    this.db = db
    this.settings = settings
    this.log = log
    this.batchRows = options.batchRows ?? BATCH_ROWS
    this.maxBytes = options.maxBytes ?? MAX_SITEMAP_BYTES
  }

  /** One small read per request; the boundaries are recomputed only when the version moved. */
  async state(): Promise<SitemapState> {
    const row = await this.db
      .selectFrom('sitemap_version')
      .select(['version', 'changed_at'])
      .executeTakeFirstOrThrow()
      .catch((err: unknown) => {
        throw new DomainError('DATABASE_UNAVAILABLE', 'the page store is unavailable; retry shortly', { cause: err })
      })
    if (this.cached === undefined || this.cachedVersion !== row.version) {
      this.cachedVersion = row.version
      // Concurrent requests on a new version share one computation.
      const computing = this.computeBoundaries().then((boundaries) => ({ version: row.version, changedAt: row.changed_at, boundaries, shardCount: Math.max(1, boundaries.length) }))
      this.cached = computing
      // A failed computation is not cached: the next request tries again.
      computing.catch(() => {
        if (this.cached === computing) this.cached = undefined
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
      ORDER BY rn`
      .execute(this.db)
      .catch((err: unknown) => {
        throw new DomainError('DATABASE_UNAVAILABLE', 'the page store is unavailable; retry shortly', { cause: err })
      })
    return result.rows.map((r) => ({ negWeight: Number(r.neg_weight), id: String(r.id) }))
  }

  /** A weak validator: same version and settings, same document (a write landing mid-stream is the next version). */
  etag(state: SitemapState, document: string): string {
    const settings = `${this.settings.publicBaseUrl}|${this.settings.sitemapShardSize}|${this.settings.sitemapMinWeight}`
    return `W/"sm-${state.version}-${document}-${fnv1a32(settings).toString(36)}"`
  }

  indexStream(state: SitemapState): Readable {
    const base = xmlLoc(this.settings.publicBaseUrl)
    const lastmod = state.changedAt.toISOString()
    async function* index(): AsyncGenerator<string> {
      yield `${XML_DECLARATION}<sitemapindex xmlns="${NAMESPACE}">\n`
      for (let i = 0; i < state.shardCount; i++) yield `<sitemap><loc>${base}/sitemaps/${i}.xml</loc><lastmod>${lastmod}</lastmod></sitemap>\n`
      yield '</sitemapindex>\n'
    }
    return Readable.from(index(), { objectMode: false })
  }

  shardStream(state: SitemapState, shard: number): Readable {
    const from = state.boundaries[shard]
    const to = state.boundaries[shard + 1]
    return Readable.from(from === undefined ? [EMPTY_URLSET] : this.shardXml(from, to, shard), { objectMode: false })
  }

  /**
   * Keyset pagination from the shard's first key up to the next shard's, one batch of rows at a time,
   * each batch written as one string. Readable.from pulls the next batch only when the response has
   * drained the last one, so a slow crawler holds the query loop instead of filling memory.
   */
  private async *shardXml(from: SortKey, to: SortKey | undefined, shard: number): AsyncGenerator<string> {
    yield `${XML_DECLARATION}<urlset xmlns="${NAMESPACE}">\n`
    for await (const batch of this.shardBatches(from, to, shard)) yield batch
    yield '</urlset>\n'
  }

  private async *shardBatches(from: SortKey, to: SortKey | undefined, shard: number): AsyncGenerator<string> {
    const limit = Math.min(this.settings.sitemapShardSize, MAX_URLS_PER_SITEMAP)
    let after: SortKey | undefined
    let emitted = 0
    let bytes = URLSET_OVERHEAD_BYTES
    while (emitted < limit) {
      const start = after ?? from
      // lastmod formatted by PostgreSQL (W3C datetime, UTC, milliseconds): no Date object per row.
      const result = await sql<{ neg_weight: number; id: string; canonical_url: string; lastmod: string }>`
        SELECT -crawl_weight AS neg_weight, id, canonical_url,
          to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS lastmod
        FROM pages
        WHERE status = 'published' AND -crawl_weight <= ${-this.settings.sitemapMinWeight}::real
          AND (-crawl_weight, id) ${after === undefined ? sql`>=` : sql`>`} (${start.negWeight}::real, ${start.id}::bigint)
          ${to === undefined ? sql`` : sql`AND (-crawl_weight, id) < (${to.negWeight}::real, ${to.id}::bigint)`}
        ORDER BY -crawl_weight, id
        LIMIT ${Math.min(this.batchRows, limit - emitted)}`.execute(this.db)
      let chunk = ''
      let inBatch = 0
      for (const row of result.rows) {
        const entry = `<url><loc>${xmlLoc(row.canonical_url)}</loc><lastmod>${row.lastmod}</lastmod></url>\n`
        bytes += Buffer.byteLength(entry)
        if (bytes > this.maxBytes) {
          // Only canonical URLs averaging over ~1 KB can get here; a lower SITEMAP_SHARD_SIZE fixes it.
          this.log.error({ shard, emitted: emitted + inBatch }, 'sitemap shard reached 50 MB before its URL count; the rest of this shard is left out: lower SITEMAP_SHARD_SIZE')
          if (chunk !== '') yield chunk
          return
        }
        chunk += entry
        inBatch++
        if (chunk.length >= CHUNK_CHARS) {
          yield chunk
          chunk = ''
        }
      }
      if (chunk !== '') yield chunk
      emitted += result.rows.length
      if (result.rows.length < this.batchRows) return
      const last = result.rows[result.rows.length - 1]!
      after = { negWeight: Number(last.neg_weight), id: String(last.id) }
    }
  }
}
