// Search Console data in the two shapes it comes in: Search Analytics API rows (`keys` = [page]) and
// the Performance report's CSV export ("Top pages","Clicks","Impressions","CTR","Position"). Every
// problem is reported with its row and field before anything is written.

import type { Problem } from '../errors.ts'
import { normalizeRequestUrl } from '../http/url-normalize.ts'
import { unstorableText } from '../storable-text.ts'

export interface SearchConsoleRow {
  url: string
  clicks: number
  impressions: number
  ctr: number
  position: number
}

const DATE = /^\d{4}-\d{2}-\d{2}$/

function isDate(value: unknown): value is string {
  if (typeof value !== 'string' || !DATE.test(value)) return false
  const parsed = new Date(`${value}T00:00:00Z`)
  return !Number.isNaN(parsed.getTime()) && parsed.toISOString().slice(0, 10) === value
}

/** The date range an import covers; problems are reported as record -1. */
export function validateDateRange(startDate: unknown, endDate: unknown): Problem[] {
  const problems: Problem[] = []
  if (!isDate(startDate)) problems.push({ record: -1, field: 'startDate', message: 'must be a date YYYY-MM-DD' })
  if (!isDate(endDate)) problems.push({ record: -1, field: 'endDate', message: 'must be a date YYYY-MM-DD' })
  if (problems.length === 0 && (startDate as string) > (endDate as string)) problems.push({ record: -1, field: 'endDate', message: 'must not be before startDate' })
  return problems
}

function isPageUrl(value: string): boolean {
  try {
    const url = new URL(value)
    return url.protocol === 'https:' || url.protocol === 'http:'
  } catch {
    return false
  }
}

interface NumberRule {
  field: string
  min: number
  max?: number
}

function checkNumber(value: unknown, rule: NumberRule, record: number, problems: Problem[], label = rule.field): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < rule.min || (rule.max !== undefined && value > rule.max)) {
    problems.push({ record, field: label, message: `must be a number ${rule.max === undefined ? `>= ${rule.min}` : `from ${rule.min} to ${rule.max}`}, got ${JSON.stringify(value) ?? 'nothing'}` })
    return 0
  }
  return value
}

const ROW_FIELDS = new Set(['keys', 'clicks', 'impressions', 'ctr', 'position'])

/** Rows as searchanalytics.query returns them with dimensions ['page']. */
export function validateSearchAnalyticsRows(records: readonly unknown[]): { rows: SearchConsoleRow[]; problems: Problem[] } {
  const problems: Problem[] = []
  const rows: SearchConsoleRow[] = []
  records.forEach((raw, index) => {
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      problems.push({ record: index, field: '(row)', message: 'must be a JSON object' })
      return
    }
    const record = raw as Record<string, unknown>
    for (const key of Object.keys(record)) if (!ROW_FIELDS.has(key)) problems.push({ record: index, field: key, message: 'is not a Search Analytics row field (keys, clicks, impressions, ctr, position)' })
    const keys = record.keys
    let url = ''
    const unstorable = Array.isArray(keys) && typeof keys[0] === 'string' ? unstorableText(keys[0]) : undefined
    if (!Array.isArray(keys) || keys.length !== 1 || typeof keys[0] !== 'string') {
      problems.push({ record: index, field: 'keys', message: 'must be [page URL] (query the API with dimensions ["page"])' })
    } else if (unstorable !== undefined) {
      problems.push({ record: index, field: 'keys', message: `the page URL ${unstorable}` })
    } else if (!isPageUrl(keys[0])) {
      problems.push({ record: index, field: 'keys', message: `${JSON.stringify(keys[0].slice(0, 200))} is not an absolute http(s) URL` })
    } else url = keys[0]
    const start = problems.length
    const row = {
      url,
      clicks: checkNumber(record.clicks, { field: 'clicks', min: 0 }, index, problems),
      impressions: checkNumber(record.impressions, { field: 'impressions', min: 0 }, index, problems),
      ctr: checkNumber(record.ctr, { field: 'ctr', min: 0, max: 1 }, index, problems),
      position: checkNumber(record.position, { field: 'position', min: 0 }, index, problems),
    }
    if (problems.length === start && row.clicks > row.impressions) problems.push({ record: index, field: 'clicks', message: `${row.clicks} clicks exceed ${row.impressions} impressions` })
    rows.push(row)
  })
  return { rows, problems }
}

/** RFC 4180 fields: quotes, doubled quotes inside them, commas and line breaks inside quotes, CRLF. */
export function parseCsv(text: string): string[][] {
  const records: string[][] = []
  let field = ''
  let record: string[] = []
  let quoted = false
  const source = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!
    if (quoted) {
      if (c === '"') {
        if (source[i + 1] === '"') {
          field += '"'
          i++
        } else quoted = false
      } else field += c
    } else if (c === '"' && field === '') quoted = true
    else if (c === ',') {
      record.push(field)
      field = ''
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && source[i + 1] === '\n') i++
      record.push(field)
      records.push(record)
      record = []
      field = ''
    } else field += c
  }
  if (field !== '' || record.length > 0) {
    record.push(field)
    records.push(record)
  }
  return records.filter((r) => !(r.length === 1 && r[0] === ''))
}

const COLUMNS = {
  url: ['top pages', 'page', 'pages', 'url'],
  clicks: ['clicks'],
  impressions: ['impressions'],
  ctr: ['ctr'],
  position: ['position'],
} as const

/** A number as the export writes it: "1234", "1,234", "3.2%" (CTR), "4.56". */
function exportNumber(value: string, percent: boolean): number {
  const trimmed = value.trim().replace(/,/g, '')
  const match = percent ? /^(\d+(?:\.\d+)?)\s*%$/.exec(trimmed) : /^(\d+(?:\.\d+)?)$/.exec(trimmed)
  return match === null ? Number.NaN : percent ? Number(`${match[1]}e-2`) : Number(match[1])
}

/**
 * The Performance report's "Pages" CSV. Rows are numbered from 0 after the header (record), and
 * messages name the line in the file.
 */
export function parsePerformanceCsv(text: string): { rows: SearchConsoleRow[]; problems: Problem[] } {
  const problems: Problem[] = []
  const table = parseCsv(text)
  const header = (table[0] ?? []).map((h) => h.trim().toLowerCase())
  const at = {} as Record<keyof typeof COLUMNS, number>
  const names = {} as Record<keyof typeof COLUMNS, string>
  for (const [key, candidates] of Object.entries(COLUMNS) as Array<[keyof typeof COLUMNS, readonly string[]]>) {
    at[key] = header.findIndex((h) => candidates.includes(h))
    names[key] = at[key] === -1 ? candidates[0]! : table[0]![at[key]]!.trim()
    if (at[key] === -1) problems.push({ record: -1, field: candidates[0]!, message: `column missing from the header (expected "Top pages","Clicks","Impressions","CTR","Position"; got ${JSON.stringify(table[0] ?? [])})` })
  }
  if (problems.length > 0) return { rows: [], problems }
  const rows: SearchConsoleRow[] = []
  table.slice(1).forEach((cells, index) => {
    const line = index + 2
    const cell = (key: keyof typeof COLUMNS) => cells[at[key]] ?? ''
    const start = problems.length
    const url = cell('url').trim()
    const unstorable = unstorableText(url)
    if (unstorable !== undefined) problems.push({ record: index, field: names.url, message: `line ${line}: the URL ${unstorable}` })
    else if (!isPageUrl(url)) problems.push({ record: index, field: names.url, message: `line ${line}: ${JSON.stringify(url.slice(0, 200))} is not an absolute http(s) URL` })
    const number = (key: 'clicks' | 'impressions' | 'ctr' | 'position', rule: NumberRule) => {
      const raw = cell(key)
      const value = exportNumber(raw, key === 'ctr')
      if (Number.isNaN(value) || value < rule.min || (rule.max !== undefined && value > rule.max)) {
        problems.push({ record: index, field: names[key], message: `line ${line}: ${JSON.stringify(raw)} is not ${key === 'ctr' ? 'a percentage such as 3.2%' : 'a number >= 0'}` })
        return 0
      }
      return value
    }
    const row = {
      url,
      clicks: number('clicks', { field: 'clicks', min: 0 }),
      impressions: number('impressions', { field: 'impressions', min: 0 }),
      ctr: number('ctr', { field: 'ctr', min: 0, max: 1 }),
      position: number('position', { field: 'position', min: 0 }),
    }
    if (problems.length === start && row.clicks > row.impressions) problems.push({ record: index, field: names.clicks, message: `line ${line}: ${row.clicks} clicks exceed ${row.impressions} impressions` })
    rows.push(row)
  })
  return { rows, problems }
}

/** The canonical page path a Search Console URL stands for; undefined when no page can have it. */
export function urlToPagePath(url: string): string | undefined {
  const { pathname } = new URL(url)
  const normalized = normalizeRequestUrl(pathname)
  return normalized.kind === 'invalid' ? undefined : normalized.path
}

export interface PageMetrics {
  path: string
  clicks: number
  impressions: number
  ctr: number
  position: number
}

/**
 * Rows whose URLs share a canonical path (http and https, www and not, a query string) are one page:
 * clicks and impressions add up, CTR is recomputed, position is averaged by impressions.
 */
export function aggregateByPath(rows: readonly SearchConsoleRow[]): { pages: PageMetrics[]; unmatchable: string[] } {
  const byPath = new Map<string, { clicks: number; impressions: number; positionSum: number; rows: number; positionPlain: number }>()
  const unmatchable: string[] = []
  for (const row of rows) {
    const path = urlToPagePath(row.url)
    if (path === undefined) {
      unmatchable.push(row.url)
      continue
    }
    const entry = byPath.get(path) ?? { clicks: 0, impressions: 0, positionSum: 0, rows: 0, positionPlain: 0 }
    entry.clicks += row.clicks
    entry.impressions += row.impressions
    entry.positionSum += row.position * row.impressions
    entry.positionPlain += row.position
    entry.rows++
    byPath.set(path, entry)
  }
  const pages = [...byPath].map(([path, e]) => ({
    path,
    clicks: e.clicks,
    impressions: e.impressions,
    ctr: e.impressions > 0 ? e.clicks / e.impressions : 0,
    position: e.impressions > 0 ? e.positionSum / e.impressions : e.positionPlain / e.rows,
  }))
  return { pages, unmatchable }
}
