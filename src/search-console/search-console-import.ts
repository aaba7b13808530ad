// Applies one Search Console import: validated rows become crawl weights with ONE set-based UPDATE
// (unnest of the batch), pages the import does not mention decay toward a floor, and every touched
// page gets a history row, all in one transaction. An import that matches no page is refused (it would
// only decay every page). Cache eviction is the caller's, after the commit.

import { type Kysely, sql } from 'kysely'
import type { Database, PurgeTarget, SearchConsoleSource } from '../db/schema.ts'
import { type Problem, validationError } from '../errors.ts'
import { enqueuePurge } from '../purge/purge-outbox.ts'
import { cacheTag } from '../http/cache-policy.ts'
import { chunks } from '../chunks.ts'
import { aggregateByPath, parsePerformanceCsv, type SearchConsoleRow, urlToPagePath, validateDateRange, validateSearchAnalyticsRows } from './parse.ts'
import { crawlWeightFromSearch } from './weights.ts'

export interface SearchConsoleImport {
  source: SearchConsoleSource
  startDate: string
  endDate: string
  rows: SearchConsoleRow[]
}

export interface ImportSettings {
  crawlWeightDecay: number
  crawlWeightFloor: number
  purgeTargets: readonly PurgeTarget[]
  /** Named in the refusal of an import that matches no page. */
  publicBaseUrl: string
}

export interface ImportResult {
  importId: number
  received: number
  matched: number
  /** Rows whose URL matched no page (unknown path, or a URL no page can have). */
  unknown: number
  /** Up to 20 of them, to see what did not match. */
  unknownSample: string[]
  changed: number
  decayed: number
  /** CDN purges written to the outbox (softPurge). */
  queued: number
  /** Paths whose weight changed (imported or decayed): their cached renderings carry old TTLs. */
  changedPaths: string[]
}

/** Paths per outbox row, so one CDN request stays within what the adapters batch. */
const PATHS_PER_PURGE = 1_000
const UNKNOWN_SAMPLE = 20
/** Unknown URLs quoted in the refusal of an import that matches no page. */
const UNKNOWN_IN_REFUSAL = 5

function fail(problems: Problem[]): never {
  throw validationError('Search Console', problems)
}

/** A request body or JSON file: {startDate, endDate, rows: [{keys: [page], clicks, impressions, ctr, position}]}. */
export function searchAnalyticsImport(source: SearchConsoleSource, startDate: unknown, endDate: unknown, rows: readonly unknown[]): SearchConsoleImport {
  const checked = validateSearchAnalyticsRows(rows)
  const problems = [...validateDateRange(startDate, endDate), ...checked.problems]
  if (rows.length === 0) problems.push({ record: -1, field: 'rows', message: 'an import needs at least one row (an empty one would decay every page)' })
  if (problems.length > 0) fail(problems)
  return { source, startDate: startDate as string, endDate: endDate as string, rows: checked.rows }
}

/** The Performance report's CSV export, with the date range it was exported for. */
export function performanceCsvImport(text: string, startDate: unknown, endDate: unknown): SearchConsoleImport {
  const checked = parsePerformanceCsv(text)
  const problems = [...validateDateRange(startDate, endDate), ...checked.problems]
  if (checked.problems.length === 0 && checked.rows.length === 0) problems.push({ record: -1, field: 'rows', message: 'the CSV has no data rows' })
  if (problems.length > 0) fail(problems)
  return { source: 'csv', startDate: startDate as string, endDate: endDate as string, rows: checked.rows }
}

export async function applySearchConsoleImport(db: Kysely<Database>, input: SearchConsoleImport, settings: ImportSettings & { softPurge: boolean }): Promise<ImportResult> {
  const { pages } = aggregateByPath(input.rows)
  const paths = pages.map((p) => p.path)
  const weights = pages.map((p) => crawlWeightFromSearch(p.clicks, p.impressions))

  return db.transaction().execute(async (trx) => {
    // Lock the imported pages first, in a statement of their own (in id order, so two imports take them
    // in the same order): a locking read inside the UPDATE's statement would skip the rows that UPDATE
    // changes (PostgreSQL does not lock rows modified by the same command), losing them from `matched`,
    // hence from the history, the eviction and the count. The next statement's snapshot is taken with
    // these locks held, so its weight_before is the weight it replaces.
    const locked = await sql<{ id: number }>`SELECT id FROM pages WHERE path = ANY(${paths}::text[]) ORDER BY id FOR UPDATE`.execute(trx)
    if (locked.rows.length === 0) {
      const sample = input.rows.slice(0, UNKNOWN_IN_REFUSAL).map((r) => JSON.stringify(r.url.slice(0, 200)))
      const more = input.rows.length > sample.length ? `, ... (${input.rows.length} in all)` : ''
      fail([
        {
          record: -1,
          field: 'rows',
          message:
            "no row's URL matched a page (an import that matches none would only decay every page). Rows match pages by URL path: " +
            `the URLs must be this site's pages, under PUBLIC_BASE_URL (${settings.publicBaseUrl}). Unknown: ${sample.join(', ')}${more}`,
        },
      ])
    }

    const { id: importId } = await trx
      .insertInto('search_console_imports')
      .values({ source: input.source, start_date: input.startDate, end_date: input.endDate, rows_received: input.rows.length })
      .returning('id')
      .executeTakeFirstOrThrow()

    // The batch: one UPDATE ... FROM unnest(...). `matched` reads the weights before it (every CTE of
    // one statement sees the same snapshot; the rows are locked above, so nothing changed them since).
    const applied = await sql<{ path: string; changed: boolean }>`
      WITH u AS (
        SELECT * FROM unnest(
          ${paths}::text[], ${pages.map((p) => p.clicks)}::float8[], ${pages.map((p) => p.impressions)}::float8[],
          ${pages.map((p) => p.ctr)}::float8[], ${pages.map((p) => p.position)}::float8[], ${weights}::real[]
        ) AS u(path, clicks, impressions, ctr, position, weight)
      ),
      matched AS (
        SELECT p.id, p.path, p.crawl_weight AS weight_before, u.clicks, u.impressions, u.ctr, u.position, u.weight
        FROM pages p JOIN u ON u.path = p.path
      ),
      updated AS (
        UPDATE pages p SET crawl_weight = u.weight
        FROM u
        WHERE p.path = u.path AND p.crawl_weight IS DISTINCT FROM u.weight
        RETURNING p.id
      ),
      history AS (
        INSERT INTO search_console_rows (import_id, page_id, in_import, clicks, impressions, ctr, position, weight_before, weight_after)
        SELECT ${importId}, m.id, true, m.clicks, m.impressions, m.ctr, m.position, m.weight_before, m.weight FROM matched m
      )
      SELECT m.path, (updated.id IS NOT NULL) AS changed FROM matched m LEFT JOIN updated ON updated.id = m.id`.execute(trx)

    // Pages the import does not mention fade: max(floor, w * decay) while above the floor
    // (decayedCrawlWeight in weights.ts is the same rule). `old` is the row before the UPDATE.
    const decayed = await sql<{ path: string }>`
      WITH decayed AS (
        UPDATE pages p SET crawl_weight = greatest(${settings.crawlWeightFloor}::real, p.crawl_weight * ${settings.crawlWeightDecay}::real)
        FROM pages old
        WHERE old.id = p.id AND p.crawl_weight > ${settings.crawlWeightFloor}::real
          AND NOT EXISTS (SELECT 1 FROM unnest(${paths}::text[]) AS u(path) WHERE u.path = p.path)
        RETURNING p.id, p.path, old.crawl_weight AS weight_before, p.crawl_weight AS weight_after
      ),
      history AS (
        INSERT INTO search_console_rows (import_id, page_id, in_import, clicks, impressions, ctr, position, weight_before, weight_after)
        SELECT ${importId}, d.id, false, 0, 0, NULL, NULL, d.weight_before, d.weight_after FROM decayed d
      )
      SELECT path FROM decayed`.execute(trx)

    const matchedPaths = new Set(applied.rows.map((r) => r.path))
    const unknownUrls = input.rows.filter((r) => !matchedPaths.has(urlToPagePath(r.url) ?? '')).map((r) => r.url)
    const changedPaths = [...applied.rows.filter((r) => r.changed).map((r) => r.path), ...decayed.rows.map((r) => r.path)]

    await trx
      .updateTable('search_console_imports')
      .set({ pages_matched: applied.rows.length, urls_unknown: unknownUrls.length, pages_changed: changedPaths.length - decayed.rows.length, pages_decayed: decayed.rows.length })
      .where('id', '=', importId)
      .execute()

    // The CDN purges ride the outbox in the same transaction: they exist exactly when the weights do.
    let queued = 0
    if (settings.softPurge && changedPaths.length > 0) {
      for (const group of chunks(changedPaths, PATHS_PER_PURGE)) queued += await enqueuePurge(trx, settings.purgeTargets, { paths: group, tags: [], soft: true })
      queued += await enqueuePurge(trx, settings.purgeTargets, { paths: [], tags: [cacheTag('template', 'sitemap')], soft: true })
    }

    return {
      importId: Number(importId),
      received: input.rows.length,
      matched: applied.rows.length,
      unknown: unknownUrls.length,
      unknownSample: unknownUrls.slice(0, UNKNOWN_SAMPLE),
      changed: changedPaths.length - decayed.rows.length,
      decayed: decayed.rows.length,
      queued,
      changedPaths,
    }
  })
}
