// `npm run bench:sitemaps`: generates every sitemap (index + shards) for 250,000 and then 1,000,000
// published pages through the real origin over HTTP, and records URLs per second and peak RSS.
// The database is the embedded PostgreSQL (a PGlite child process) or DATABASE_URL (with pgvector).
// RSS measured: the origin's Node process (a child of this script, sampled every 10 ms), and the
// embedded PGlite process's peak (VmHWM from /proc) when it runs. Results go between the sitemaps
// markers of bench/RESULTS.md. Bounded: two sizes, one pass each plus a cached-boundaries pass.

import { fork, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { migrateToLatest } from '../src/db/database.ts'
import { startEmbeddedPostgres } from '../src/db/embedded-postgres.ts'
import { embeddedPostgresPid } from '../test/support/processes.ts'

const SIZES = (process.env.BENCH_SITEMAP_SIZES ?? '250000,1000000').split(',').map(Number)
const RESULTS = fileURLToPath(new URL('./RESULTS.md', import.meta.url))
const START = '<!-- sitemaps:start -->'
const END = '<!-- sitemaps:end -->'
const MB = 1024 * 1024

const embedded = process.env.DATABASE_URL === undefined ? await startEmbeddedPostgres('memory://') : undefined
const connectionString = process.env.DATABASE_URL ?? embedded!.connectionString

function openPool(): { pool: pg.Pool; db: Kysely<any> } {
  const pool = new pg.Pool({ connectionString, max: 1, query_timeout: 600_000 })
  return { pool, db: new Kysely<any>({ dialect: new PostgresDialect({ pool }) }) }
}

/** Peak RSS of the embedded PGlite process (a child of this one), from /proc; undefined elsewhere. */
function pgliteHighWaterMark(): number | undefined {
  const pid = embeddedPostgresPid()
  if (pid === undefined) return undefined
  try {
    const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return hwm === null ? undefined : Number(hwm[1]) * 1024
  } catch {
    return undefined // the process went away while we looked
  }
}

/** V8 flags of the heap-capped run: a small old space and young generation, so the GC keeps RSS near the live set. */
const CAPPED_HEAP = ['--max-old-space-size=64', '--max-semi-space-size=1']

function startOrigin(v8Flags: string[]): Promise<{ child: ChildProcess; address: string; idleRss: number }> {
  const child = fork(fileURLToPath(new URL('./sitemaps-origin.ts', import.meta.url)), [], {
    execArgv: [...process.execArgv, ...v8Flags],
    env: { ...process.env, DATABASE_URL: connectionString, DB_POOL_MAX: '1', MIGRATE_ON_START: 'false', SEED_DEMO: 'false', REDIS_URL: 'off', LOG_LEVEL: 'warn', DB_STATEMENT_TIMEOUT_MS: '600000' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  return new Promise((resolve, reject) => {
    child.once('message', (m) => resolve({ child, ...(m as { address: string; idleRss: number }) }))
    child.once('exit', (code) => reject(new Error(`origin exited with ${code}`)))
  })
}

/** Streams a document and counts its <url> entries, holding one chunk at a time. */
async function countEntries(url: string, tag: string): Promise<{ entries: number; bytes: number }> {
  const response = await fetch(url)
  if (response.status !== 200) throw new Error(`${url}: HTTP ${response.status}`)
  const decoder = new TextDecoder()
  let carry = ''
  let entries = 0
  let bytes = 0
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    bytes += chunk.byteLength
    const text = carry + decoder.decode(chunk, { stream: true })
    let at = text.indexOf(tag)
    let last = 0
    while (at !== -1) {
      entries++
      last = at + tag.length
      at = text.indexOf(tag, last)
    }
    carry = text.slice(Math.max(last, text.length - tag.length))
  }
  return { entries, bytes }
}

interface Row {
  heap: 'default' | 'capped'
  pages: number
  shards: number
  urls: number
  bytes: number
  indexMs: number
  shardsMs: number
  urlsPerSecond: number
  cachedIndexMs: number
  idleRss: number
  peakRss: number
  peakHeap: number
  pgliteHwm: number | undefined
}

async function measure(pages: number, heap: Row['heap']): Promise<Row> {
  const origin = await startOrigin(heap === 'capped' ? CAPPED_HEAP : [])
  try {
    const base = origin.address
    // First request on a new version: computes the shard boundaries (one pass over the index).
    let started = performance.now()
    const index = await countEntries(`${base}/sitemap.xml`, '</sitemap>')
    const indexMs = performance.now() - started
    started = performance.now()
    let urls = 0
    let bytes = 0
    for (let shard = 0; shard < index.entries; shard++) {
      const result = await countEntries(`${base}/sitemaps/${shard}.xml`, '</url>')
      urls += result.entries
      bytes += result.bytes
    }
    const shardsMs = performance.now() - started
    started = performance.now()
    await countEntries(`${base}/sitemap.xml`, '</sitemap>')
    const cachedIndexMs = performance.now() - started
    const rss = await new Promise<{ peakRss: number; peakHeap: number }>((resolve) => {
      origin.child.once('message', (m) => resolve(m as { peakRss: number; peakHeap: number }))
      origin.child.send('rss')
    })
    if (urls !== pages) throw new Error(`expected ${pages} URLs in the sitemaps, got ${urls}`)
    return { heap, pages, shards: index.entries, urls, bytes, indexMs, shardsMs, urlsPerSecond: urls / ((indexMs + shardsMs) / 1000), cachedIndexMs, idleRss: origin.idleRss, peakRss: rss.peakRss, peakHeap: rss.peakHeap, pgliteHwm: pgliteHighWaterMark() }
  } finally {
    const exited = new Promise((resolve) => origin.child.once('exit', resolve))
    origin.child.disconnect()
    await exited
  }
}

interface WriterRow {
  pages: number
  shards: number
  bytes: number
  ms: number
  maxRss: number
}

/** `npm run sitemaps:write`, exactly as package.json runs it (V8 flags included): its own maxRSS, as it reports it. */
async function measureWriter(pages: number): Promise<WriterRow> {
  const out = mkdtempSync(join(tmpdir(), 'vo-sitemaps-'))
  try {
    const child = spawn('npm', ['run', '--silent', 'sitemaps:write', '--', '--out', out], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
      env: { ...process.env, DATABASE_URL: connectionString, DB_POOL_MAX: '1', MIGRATE_ON_START: 'false', LOG_LEVEL: 'warn', DB_STATEMENT_TIMEOUT_MS: '600000' },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let stdout = ''
    child.stdout!.on('data', (chunk) => (stdout += chunk))
    const code = await new Promise((resolve) => child.once('exit', resolve))
    if (code !== 0) throw new Error(`sitemaps:write exited with ${code}`)
    const report = JSON.parse(stdout) as { shards: number; bytes: number; ms: number; maxRssBytes: number }
    let urls = 0
    for (const name of readdirSync(join(out, 'sitemaps'))) urls += readFileSync(join(out, 'sitemaps', name), 'utf8').split('</url>').length - 1
    if (urls !== pages) throw new Error(`sitemaps:write wrote ${urls} URLs, expected ${pages}`)
    return { pages, shards: report.shards, bytes: report.bytes, ms: report.ms, maxRss: report.maxRssBytes }
  } finally {
    rmSync(out, { recursive: true, force: true })
  }
}

const rows: Row[] = []
const writerRows: WriterRow[] = []
let inserted = 0
const setup = openPool()
await migrateToLatest(setup.db)
await setup.pool.end()
for (const size of SIZES) {
  // The embedded server takes one connection at a time: the pool closes before the origin connects.
  const { pool, db } = openPool()
  const started = performance.now()
  // One INSERT ... SELECT generate_series: no embeddings, weights spread with ties (3 decimals).
  await sql`INSERT INTO pages (path, kind, title, canonical_url, crawl_weight, vertical)
    SELECT '/bench/p-' || i, 'seo', 'Page ' || i, 'https://www.example.com/bench/p-' || i, ((i::bigint * 7919) % 1000) / 1000.0, 'bench'
    FROM generate_series(${inserted + 1}::int, ${size}::int) AS i`.execute(db)
  await sql`ANALYZE pages`.execute(db)
  console.log(`inserted ${size - inserted} pages in ${Math.round(performance.now() - started)} ms`)
  inserted = size
  await pool.end()
  for (const heap of ['default', 'capped'] as const) {
    const row = await measure(size, heap)
    console.log(JSON.stringify(row))
    rows.push(row)
  }
  const writer = await measureWriter(size)
  console.log(JSON.stringify(writer))
  writerRows.push(writer)
}
await embedded?.stop()

const fmt = (n: number) => n.toLocaleString('en-US', { maximumFractionDigits: 0 })
const mb = (n: number | undefined) => (n === undefined ? 'n/a' : `${(n / MB).toFixed(0)} MB`)
const section = [
  START,
  '## Sitemaps',
  '',
  `\`npm run bench:sitemaps\` (${new Date().toISOString().slice(0, 10)}, ${cpus().length} CPUs shared with other work, load average ${loadavg()[0]!.toFixed(1)} at the end, ${embedded === undefined ? 'PostgreSQL from DATABASE_URL' : 'embedded PostgreSQL (PGlite, in memory)'}).`,
  'Every sitemap (the index, then each 50,000-URL shard in turn) fetched over HTTP from the real origin (buildApp,',
  'REDIS_URL=off) in its own Node process; pages inserted with one INSERT ... SELECT generate_series, weights with ties.',
  'The first request computes the shard boundaries (one pass over the sitemap index); shards are keyset-streamed.',
  '',
  '| origin heap | pages | shards | URLs | bytes | index (boundaries) ms | shards ms | URLs/s (all) | cached index ms | origin RSS idle | origin RSS peak | origin heapUsed peak | PGlite peak RSS (VmHWM) |',
  '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.heap} | ${fmt(r.pages)} | ${r.shards} | ${fmt(r.urls)} | ${mb(r.bytes)} | ${fmt(r.indexMs)} | ${fmt(r.shardsMs)} | ${fmt(r.urlsPerSecond)} | ${fmt(r.cachedIndexMs)} | ${mb(r.idleRss)} | ${mb(r.peakRss)} | ${mb(r.peakHeap)} | ${mb(r.pgliteHwm)} |`),
  '',
  ...(['default', 'capped'] as const).map((heap) => {
    const [small, large] = rows.filter((r) => r.heap === heap)
    if (small === undefined || large === undefined) return ''
    return `${heap} heap: time ratio ${((large.indexMs + large.shardsMs) / (small.indexMs + small.shardsMs)).toFixed(2)} for ${(large.pages / small.pages).toFixed(1)}x the pages; origin peak RSS ${mb(small.peakRss)} -> ${mb(large.peakRss)}.`
  }),
  '',
  `\`npm run sitemaps:write -- --out DIR\` (the same index and shards as static files, streamed the same way, in a process`,
  `that loads only the database client; package.json runs it with ${JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).scripts['sitemaps:write'].match(/--max-[^ ]+/g).join(' ')}), peak RSS as the process reports it (\`maxRSS\`):`,
  '',
  '| pages | shards | bytes | ms | URLs/s | peak RSS |',
  '|---|---|---|---|---|---|',
  ...writerRows.map((w) => `| ${fmt(w.pages)} | ${w.shards} | ${mb(w.bytes)} | ${fmt(w.ms)} | ${fmt(w.pages / (w.ms / 1000))} | ${mb(w.maxRss)} |`),
  '',
  writerRows.length === 2 ? `sitemaps:write: time ratio ${(writerRows[1]!.ms / writerRows[0]!.ms).toFixed(2)} for ${(writerRows[1]!.pages / writerRows[0]!.pages).toFixed(1)}x the pages; peak RSS ${mb(writerRows[0]!.maxRss)} -> ${mb(writerRows[1]!.maxRss)}.` : '',
  '',
  `"capped" runs the same origin with V8 flags ${CAPPED_HEAP.join(' ')}: the GC then works closer to the live set,`,
  'which shows what the sitemap code holds (one batch); with default flags V8 lets garbage accumulate before collecting.',
  'RSS is the origin process (what serves the sitemaps). The PGlite column is the separate embedded-database process,',
  'whose WASM heap holds the whole in-memory database, so it grows with the data and is not the sitemap code\'s memory.',
  END,
].join('\n')
const current = readFileSync(RESULTS, 'utf8')
const at = current.indexOf(START)
const end = current.indexOf(END)
const next = at !== -1 && end > at ? current.slice(0, at) + section + current.slice(end + END.length) : `${current.trimEnd()}\n\n${section}\n`
writeFileSync(RESULTS, next)
console.log(section)
