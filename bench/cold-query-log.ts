// Preloaded into an origin by `npm run bench:cold` for its profile pass only (`node --import` this
// file), never into the origin it measures: records every statement the pg client sends (its text,
// parameters and round-trip time as the origin sees it). SIGWINCH writes what was recorded since the
// last SIGWINCH to COLD_QUERY_LOG (JSON) and starts over (not SIGUSR2: close-with-grace closes the
// server on that one).

import { renameSync, writeFileSync } from 'node:fs'
import pg from 'pg'

interface Recorded {
  sql: string
  values: unknown[]
  ms: number
}

const out = process.env.COLD_QUERY_LOG
let recorded: Recorded[] = []

const query = pg.Client.prototype.query as (...args: unknown[]) => unknown
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]): unknown {
  const [config, values] = args
  const sql = typeof config === 'string' ? config : ((config as { text?: string } | null)?.text ?? '')
  const params = Array.isArray(values) ? values : ((config as { values?: unknown[] } | null)?.values ?? [])
  const started = performance.now()
  const result = query.apply(this, args)
  const record = () => void recorded.push({ sql, values: params, ms: performance.now() - started })
  if (result instanceof Promise) result.then(record, record)
  else record()
  return result
} as typeof pg.Client.prototype.query

process.on('SIGWINCH', () => {
  // Written aside and renamed: the reader waits for the name, so it never reads half a file.
  if (out !== undefined) {
    writeFileSync(`${out}.part`, JSON.stringify(recorded))
    renameSync(`${out}.part`, out)
  }
  recorded = []
})
