// `npm run ingest -- FILE.ndjson [--url http://127.0.0.1:3000] [--batch 1000]`
// One JSON object per line, each with "type": "segment" | "page" | "variant" and that record's fields.
// The whole file is validated first (every problem reported with its line number, nothing written if
// any); then segments, pages and variants are ingested in batches, each batch one transaction.
// Without --url the CLI writes to the configured database itself; with --url it sends the batches to
// a running origin's admin API (ADMIN_TOKEN), which also drops that origin's cached pages.

import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { pino } from 'pino'
import type { Kysely } from 'kysely'
import { loadConfig, type Config } from '../config.ts'
import { runCli, withDatabase } from './run-cli.ts'
import { postToOrigin, requireAdminToken } from './admin-client.ts'
import type { Database } from '../db/schema.ts'
import { createEmbedder } from '../embeddings/create-embedder.ts'
import { DomainError, type Problem } from '../errors.ts'
import { ingestPages, ingestSegments, ingestVariants } from '../ingest/ingest-service.ts'
import { validatePages, validateSegments, validateVariants } from '../ingest/validation.ts'
import { chunks } from '../chunks.ts'

const log = pino({ level: process.env.LOG_LEVEL ?? 'info' })

type RecordType = 'segment' | 'page' | 'variant'
interface Grouped {
  records: Record<RecordType, unknown[]>
  lines: Record<RecordType, number[]>
  problems: string[]
}

async function readFile(file: string): Promise<Grouped> {
  const grouped: Grouped = { records: { segment: [], page: [], variant: [] }, lines: { segment: [], page: [], variant: [] }, problems: [] }
  const reader = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity })
  let lineNumber = 0
  for await (const line of reader) {
    lineNumber++
    if (line.trim() === '') continue
    let parsed: unknown
    try {
      parsed = JSON.parse(line)
    } catch (err) {
      grouped.problems.push(`line ${lineNumber}: not valid JSON (${(err as Error).message})`)
      continue
    }
    const type = (parsed as { type?: unknown } | null)?.type
    if (type !== 'segment' && type !== 'page' && type !== 'variant') {
      grouped.problems.push(`line ${lineNumber}: "type" must be "segment", "page" or "variant"`)
      continue
    }
    const { type: _type, ...record } = parsed as Record<string, unknown>
    grouped.records[type].push(record)
    grouped.lines[type].push(lineNumber)
  }
  return grouped
}

function describe(problems: Problem[], lines: number[]): string[] {
  return problems.map((p) => `line ${lines[p.record] ?? '?'}: ${p.field}: ${p.message}`)
}

const lineOf = (problem: string): number => Number(/^line (\d+)/.exec(problem)?.[1] ?? 0)


async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { url: { type: 'string' }, batch: { type: 'string', default: '1000' } },
  })
  const file = positionals[0]
  const batchSize = Number(values.batch)
  if (file === undefined || !Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) {
    process.stderr.write('usage: npm run ingest -- FILE.ndjson [--url http://127.0.0.1:3000] [--batch 1..10000]\n')
    return 2
  }
  const config = loadConfig()
  const grouped = await readFile(file)
  const segmentCheck = validateSegments(grouped.records.segment)
  const pageCheck = validatePages(grouped.records.page, config.publicBaseUrl)
  // Variants may name segments from the database or from this file; the database part is checked per batch.
  const fileSegments = new Set(segmentCheck.segments.map((s) => s.slug))
  const variantCheck = validateVariants(grouped.records.variant, undefined)
  const problems = [
    ...grouped.problems,
    ...describe(segmentCheck.problems, grouped.lines.segment),
    ...describe(pageCheck.problems, grouped.lines.page),
    ...describe(variantCheck.problems, grouped.lines.variant),
  ].sort((a, b) => lineOf(a) - lineOf(b))
  if (problems.length > 0) {
    process.stderr.write(`${file}: ${problems.length} problem(s); nothing was written\n${problems.map((p) => `  ${p}`).join('\n')}\n`)
    return 1
  }
  log.info({ file, segments: grouped.records.segment.length, pages: grouped.records.page.length, variants: grouped.records.variant.length, fileSegments: [...fileSegments] }, 'file valid; ingesting')

  if (values.url !== undefined) return sendAll(grouped, batchSize, viaApi(values.url, config.adminToken))
  return withDatabase(config, log, (db) => sendAll(grouped, batchSize, viaDatabase(db, config)))
}

/** Sends every batch in file order (segments, then pages, then variants) and prints the totals. */
async function sendAll(grouped: Grouped, batchSize: number, send: Sender): Promise<number> {
  const totals: Record<string, Record<string, number>> = {}
  for (const type of ['segment', 'page', 'variant'] as const) {
    const all = grouped.records[type]
    for (const [n, batch] of chunks(all, batchSize).entries()) {
      let result: Record<string, unknown>
      try {
        result = await send(type, batch)
      } catch (err) {
        const done = n * batchSize
        const details = err instanceof DomainError && err.details !== undefined ? ` ${JSON.stringify(err.details)}` : ''
        throw new Error(`${type} batch ${n + 1} (records ${done + 1}-${done + batch.length}) failed; the ${done} before it were written, and a re-run skips what is unchanged: ${(err as Error).message}${details}`, { cause: err })
      }
      const sum = (totals[type] ??= {})
      for (const [key, value] of Object.entries(result)) if (typeof value === 'number') sum[key] = (sum[key] ?? 0) + value
    }
  }
  process.stdout.write(`${JSON.stringify(totals)}\n`)
  return 0
}

type Sender = (type: RecordType, batch: unknown[]) => Promise<Record<string, unknown>>

function viaApi(baseUrl: string, token: string | undefined): Sender {
  requireAdminToken(token) // before any input is read
  const paths = { segment: ['/admin/segments', 'segments'], page: ['/admin/pages', 'pages'], variant: ['/admin/variants', 'variants'] } as const
  return async (type, batch) => {
    const [path, field] = paths[type]
    return postToOrigin(baseUrl, token, path, { [field]: batch })
  }
}

function viaDatabase(db: Kysely<Database>, config: Config): Sender {
  const embedder = createEmbedder(config)
  return async (type, batch) => {
    if (type === 'segment') {
      const { affectedSegments: _segments, ...result } = await ingestSegments(db, batch, config)
      return result
    }
    if (type === 'page') {
      const { affectedPaths: _paths, ...result } = await ingestPages(db, embedder, batch, config.publicBaseUrl, config)
      return result
    }
    const { affectedPaths: _paths, ...result } = await ingestVariants(db, embedder, batch, config)
    return result
  }
}

runCli('ingest', main)
