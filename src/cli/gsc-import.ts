// `npm run gsc:import -- FILE [--start YYYY-MM-DD --end YYYY-MM-DD] [--url http://127.0.0.1:3000] [--soft-purge]`
// `npm run gsc:import -- --pull --site sc-domain:example.com --key key.json --start ... --end ... [--url ...]`
// FILE is Search Analytics JSON ({startDate, endDate, rows: [{keys: [page], clicks, impressions, ctr,
// position}]}) or the Performance report's Pages CSV export (its date range from --start/--end).
// --pull fetches the rows from the Search Console API with a service account key instead.
// Everything is validated before anything is written. Without --url the import goes straight into the
// configured database; with --url it goes to a running origin's admin API (ADMIN_TOKEN), which also
// evicts that origin's cached pages so their new TTLs apply on the next render.

import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { loadConfig, type Config } from '../config.ts'
import { runCli, withDatabase } from './run-cli.ts'
import { postToOrigin } from './admin-client.ts'
import { DomainError, validationError } from '../errors.ts'
import { applySearchConsoleImport, performanceCsvImport, searchAnalyticsImport, type SearchConsoleImport } from '../search-console/search-console-import.ts'
import { parseServiceAccountKey, pullSearchAnalytics } from '../search-console/live-pull.ts'
import { validateDateRange } from '../search-console/parse.ts'

const log = pino({ level: process.env.LOG_LEVEL ?? 'info' })
const USAGE =
  'usage: npm run gsc:import -- FILE.json|FILE.csv [--start YYYY-MM-DD --end YYYY-MM-DD] [--url http://127.0.0.1:3000] [--soft-purge]\n' +
  '       npm run gsc:import -- --pull --site SITE_URL --key SERVICE_ACCOUNT.json --start YYYY-MM-DD --end YYYY-MM-DD [--url ...] [--soft-purge]\n'

async function readImport(config: Config, file: string | undefined, values: Record<string, string | boolean | undefined>): Promise<SearchConsoleImport> {
  const start = values.start as string | undefined
  const end = values.end as string | undefined
  if (values.pull === true) {
    const dates = validateDateRange(start, end)
    if (dates.length > 0) throw validationError('Search Console', dates)
    const key = parseServiceAccountKey(readFileSync(values.key as string, 'utf8'))
    const pulled = await pullSearchAnalytics({
      apiUrl: config.searchConsoleApiUrl,
      tokenUrl: config.searchConsoleTokenUrl,
      siteUrl: values.site as string,
      startDate: start!,
      endDate: end!,
      key,
      maxRetries: config.searchConsoleMaxRetries,
      log,
    })
    log.info({ rows: pulled.rows.length, requests: pulled.requests, retries: pulled.retries }, 'Search Console rows pulled')
    return searchAnalyticsImport('live', start, end, pulled.rows)
  }
  const text = readFileSync(file!, 'utf8')
  if (/\.csv$/i.test(file!) || !/^\s*\{/.test(text.replace(/^\ufeff/, ''))) return performanceCsvImport(text, start, end)
  let body: { startDate?: unknown; endDate?: unknown; rows?: unknown }
  try {
    body = JSON.parse(text) as typeof body
  } catch (err) {
    throw new DomainError('VALIDATION_FAILED', `${file} is not valid JSON: ${(err as Error).message}`)
  }
  if (!Array.isArray(body.rows)) throw new DomainError('VALIDATION_FAILED', `${file}: "rows" must be the array of Search Analytics rows`)
  return searchAnalyticsImport('json', start ?? body.startDate, end ?? body.endDate, body.rows)
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      start: { type: 'string' },
      end: { type: 'string' },
      url: { type: 'string' },
      'soft-purge': { type: 'boolean', default: false },
      pull: { type: 'boolean', default: false },
      site: { type: 'string' },
      key: { type: 'string' },
    },
  })
  const file = positionals[0]
  if (values.pull ? values.site === undefined || values.key === undefined || file !== undefined : file === undefined) {
    process.stderr.write(USAGE)
    return 2
  }
  const config = loadConfig()
  const input = await readImport(config, file, values)
  const softPurge = values['soft-purge'] === true

  if (values.url !== undefined) {
    const rows = input.rows.map((r) => ({ keys: [r.url], clicks: r.clicks, impressions: r.impressions, ctr: r.ctr, position: r.position }))
    const result = await postToOrigin(values.url, config.adminToken, '/admin/search-console', { startDate: input.startDate, endDate: input.endDate, rows, source: input.source, softPurge })
    process.stdout.write(`${JSON.stringify(result)}\n`)
    return 0
  }

  const { changedPaths, ...result } = await withDatabase(config, log, (db) => applySearchConsoleImport(db, input, { ...config, softPurge }))
  log.info({ changed: changedPaths.length }, 'imported into the database directly; a running origin keeps its cached pages until they expire (use --url to evict them)')
  process.stdout.write(`${JSON.stringify(result)}\n`)
  return 0
}

runCli('gsc:import', main)
