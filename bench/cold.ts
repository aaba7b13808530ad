// `npm run bench:cold -- --database-url postgres://user@host:5432/postgres`: cold misses on a real
// PostgreSQL. Creates a fresh database on that server (or, with --use-database, uses the empty database
// the URL names), starts the origin as `npm start` does (`node server.ts`, the shipped defaults, log
// level info; only DATABASE_URL, PORT, ADMIN_TOKEN and REDIS_URL set, and REDIS_KEY_PREFIX on a shared
// Redis), loads 50 segments, 1,000 landing
// pages and 10,000 variants through the admin API, then sends never-served (page, segment) pairs, 8 at
// a time, checking that every answer is a 200 rendered for it (X-Cache: MISS, never the DEFAULT stand-in
// or a cache hit). Interleaved rounds with bare Fastify (bench/bare-server.ts) answering the same bytes,
// origin and bare server pinned to core 0, the load generator (bench/cold-client.ts) to core 1. Then a
// profile pass: another origin on the same database with bench/cold-query-log.ts preloaded counts the
// statements per render, and each statement is EXPLAIN ANALYZEd on the loaded data. Results go between
// the cold markers of bench/RESULTS.md; the database it created is dropped at the end.
//
// Options:
//   --database-url URL   required: a PostgreSQL server with pgvector; the database in the URL is where
//                        CREATE DATABASE runs (postgres, say), unless --use-database
//   --use-database       use the database the URL names instead (it must be empty: no tables); it is
//                        left loaded at the end (drop it yourself)
//   --rounds N           interleaved rounds (default 5)
//   --requests N         never-served pairs per round and side (default 4000)
//   --connections N      requests in flight (default 8)
//   --redis-url URL|off  the origin's Redis (default: a private redis-server per origin, started and stopped
//                        here, so no key of another user's Redis is touched; a URL: keys under a
//                        REDIS_KEY_PREFIX of this run's, deleted at the end; `off`: the in-process cache alone)
//   --compare-tree [LABEL=]DIR  also measure another checkout of this project (its own database and
//                        Redis) in the same rounds, e.g. the code before a change: `mkdir /tmp/before &&
//                        git archive HEAD | tar -x -C /tmp/before && ln -s $PWD/node_modules /tmp/before/`;
//                        repeatable; LABEL defaults to the directory's name
//   --keep-database      do not drop the created database(s) at the end (prints their URLs)
//   --no-results         print the section instead of writing bench/RESULTS.md
// Environment: BENCH_KEEP_LOGS=1 keeps the origins' logs (printed at the end); BENCH_ORIGIN_NODE_OPTIONS
// passes profiling flags to the origins (e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof').

import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { basename, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import pg from 'pg'
import { freePort } from '../test/support/net.ts'
import { deleteKeysWithPrefix } from '../test/support/redis-keys.ts'
import { privateRedis } from '../test/support/redis-server.ts'
import type { ColdJob, ColdJobResult } from './cold-client.ts'
import { cleanUpOnSignals, cleanup, cleanups, cpuMs, log, median, sleep, writeResultsSection } from './measure.ts'

const HERE = fileURLToPath(new URL('.', import.meta.url))
const THIS_TREE = resolve(HERE, '..')
const RESULTS = join(HERE, 'RESULTS.md')
const START = '<!-- cold:start -->'
const END = '<!-- cold:end -->'
const ADMIN_TOKEN = 'bench-cold-admin-token-0123456789'
const SEGMENTS = 50
const PAGES = 1_000
const VERTICALS = 20
const PAGE_VARIANTS_PER_PAGE = 8
const VERTICAL_VARIANTS_PER_SEGMENT = 2
const WARM_UP_PAIRS = 1_000
const PROFILE_RENDERS = 200
const EXPLAIN_SAMPLES = 25
const BAR_P99_MS = 25

function usage(message: string): never {
  process.stderr.write(`bench:cold: ${message}\nusage: npm run bench:cold -- --database-url postgres://user@host:5432/postgres [--use-database] [--rounds 5] [--requests 4000] [--connections 8] [--redis-url URL|off] [--compare-tree [LABEL=]DIR ...] [--keep-database] [--no-results]\n`)
  process.exit(2)
}

let args: ReturnType<typeof parseOptions>
function parseOptions() {
  return parseArgs({
    options: {
      'database-url': { type: 'string' },
      'use-database': { type: 'boolean', default: false },
      rounds: { type: 'string', default: '5' },
      requests: { type: 'string', default: '4000' },
      connections: { type: 'string', default: '8' },
      'redis-url': { type: 'string' },
      'compare-tree': { type: 'string', multiple: true },
      'keep-database': { type: 'boolean', default: false },
      'no-results': { type: 'boolean', default: false },
    },
    strict: true,
  }).values
}
try {
  args = parseOptions()
} catch (err) {
  usage(err instanceof Error ? err.message : String(err))
}
const serverUrlText = args['database-url']
if (serverUrlText === undefined || serverUrlText === '') usage('--database-url is required: a PostgreSQL server with pgvector, e.g. postgres://postgres@127.0.0.1:5432/postgres')
let serverUrl: URL
try {
  serverUrl = new URL(serverUrlText)
} catch {
  usage('--database-url is not a URL (postgres://user[:password]@host:port/database)')
}
if (serverUrl.protocol !== 'postgres:' && serverUrl.protocol !== 'postgresql:') usage('--database-url must be a postgres:// URL')
const positive = (name: string, text: string, max: number): number => {
  const n = Number(text)
  if (!Number.isInteger(n) || n < 1 || n > max) usage(`--${name} must be an integer from 1 to ${max}`)
  return n
}
const ROUNDS = positive('rounds', args.rounds, 50)
const REQUESTS = positive('requests', args.requests, 20_000)
const CONNECTIONS = positive('connections', args.connections, 256)
const compareTrees = (args['compare-tree'] ?? []).map((option) => {
  const at = option.indexOf('=')
  const tree = resolve(at === -1 ? option : option.slice(at + 1))
  if (!existsSync(join(tree, 'server.ts'))) usage(`--compare-tree ${tree} has no server.ts`)
  return { label: at === -1 ? basename(tree) : option.slice(0, at), tree }
})
const THIS_LABEL = 'this tree'
const labels = [THIS_LABEL, ...compareTrees.map((c) => c.label)]
if (new Set(labels).size !== labels.length || labels.includes('bare')) usage('--compare-tree labels must differ from each other and from "this tree" and "bare"')
const redisOption = args['redis-url']
const pairsNeeded = WARM_UP_PAIRS + ROUNDS * REQUESTS + PROFILE_RENDERS + 5
if (pairsNeeded > PAGES * SEGMENTS) usage(`${ROUNDS} rounds of ${REQUESTS} need ${pairsNeeded} never-served pairs; the dataset has ${PAGES * SEGMENTS}`)
/** The URL with its password hidden, for messages and the results. */
const shown = (url: URL): string => {
  const copy = new URL(url)
  if (copy.password !== '') copy.password = '***'
  return copy.toString()
}
const commandLine = `npm run bench:cold -- ${process.argv
  .slice(2)
  .map((a) => (a.startsWith('postgres') ? shown(new URL(a)) : a))
  .join(' ')}`

// ---------------------------------------------------------------------------------------------------
// Cleanup: whatever was started or created is undone on the way out, on an error or Ctrl-C too.
cleanUpOnSignals()
const work = mkdtempSync(join(tmpdir(), 'vo-cold-'))
let keepWork = process.env.BENCH_KEEP_LOGS === '1'
cleanups.push(() => {
  if (keepWork && readdirSync(work).length > 0) log(`logs kept in ${work}`)
  else rmSync(work, { recursive: true, force: true })
})

// Pinning: origin and baseline on core 0, the load generator on core 1, when there are two cores and taskset.
const canPin = cpus().length >= 2 && (() => {
  try {
    execFileSync('taskset', ['-c', '0', 'true'])
    return true
  } catch {
    return false
  }
})()
const pinned = (core: number, command: string, argv: string[]): [string, string[]] => (canPin ? ['taskset', ['-c', String(core), command, ...argv]] : [command, argv])

// ---------------------------------------------------------------------------------------------------
// Databases
async function withClient<T>(url: URL, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url.toString(), connectionTimeoutMillis: 10_000 })
  try {
    await client.connect()
  } catch (err) {
    throw new Error(`cannot connect to ${shown(url)}: ${err instanceof Error ? err.message : String(err)}`)
  }
  try {
    return await fn(client)
  } finally {
    await client.end().catch(() => undefined)
  }
}

async function prepareDatabase(label: string): Promise<URL> {
  let url: URL
  if (args['use-database']) {
    url = new URL(serverUrl)
    const tables = await withClient(url, async (c) => Number((await c.query("SELECT count(*) AS n FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")).rows[0].n))
    if (tables > 0) throw new Error(`--use-database: ${shown(url)} is not empty (${tables} tables); give an empty database, or leave out --use-database to have one created`)
  } else {
    const name = `vo_cold_${Date.now().toString(36)}_${process.pid}_${label.toLowerCase().replace(/[^a-z0-9]+/g, '_')}`
    await withClient(serverUrl, (c) => c.query(`CREATE DATABASE ${name}`))
    url = new URL(serverUrl)
    url.pathname = `/${name}`
    cleanups.push(async () => {
      if (args['keep-database']) return log(`kept database ${shown(url)}`)
      await withClient(serverUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
      log(`dropped database ${name}`)
    })
  }
  try {
    await withClient(url, (c) => c.query('CREATE EXTENSION IF NOT EXISTS vector'))
  } catch (err) {
    throw new Error(`the vector extension cannot be created in ${shown(url)}: ${err instanceof Error ? err.message : String(err)} (the server needs pgvector installed, and the user the right to create it)`)
  }
  return url
}

// ---------------------------------------------------------------------------------------------------
// Processes
/** bench/measure.ts's cpuMs, 0 for a process that is gone (a pool's backend may close in a round). */
function cpuOf(pid: number): number {
  try {
    return cpuMs(pid)
  } catch {
    return 0
  }
}

interface Origin {
  label: string
  tree: string
  url: string
  pid: number
  databaseUrl: URL
  redisPid: number | undefined
  logFile: string
  stop(): Promise<void>
}

async function startOrigin(label: string, tree: string, databaseUrl: URL, redis: { url: string | undefined; pid?: number | undefined; prefix?: string | undefined }, preload?: { module: string; out: string }): Promise<Origin> {
  const port = await freePort()
  const logFile = join(work, `origin-${label.replace(/[^A-Za-z0-9]+/g, '-')}${preload === undefined ? '' : '-profile'}.log`)
  const fd = openSync(logFile, 'a')
  // The shipped defaults: nothing but what the run needs. (No LOG_LEVEL: info, as npm start.)
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', DATABASE_URL: databaseUrl.toString(), PORT: String(port), ADMIN_TOKEN }
  if (redis.url !== undefined) env.REDIS_URL = redis.url
  if (redis.prefix !== undefined) env.REDIS_KEY_PREFIX = redis.prefix
  if (preload !== undefined) env.COLD_QUERY_LOG = preload.out
  // A profiling aid, off by default: e.g. BENCH_ORIGIN_NODE_OPTIONS='--cpu-prof --cpu-prof-dir=/tmp/prof'.
  if (process.env.BENCH_ORIGIN_NODE_OPTIONS !== undefined) env.NODE_OPTIONS = process.env.BENCH_ORIGIN_NODE_OPTIONS
  const [command, argv] = pinned(0, process.execPath, [...(preload === undefined ? [] : ['--import', preload.module]), 'server.ts'])
  const child = spawn(command, argv, { cwd: tree, env, stdio: ['ignore', fd, fd] })
  closeSync(fd)
  let exit = ''
  const exited = new Promise<void>((r) => child.once('exit', (code, signal) => r(void (exit = signal === null ? `code ${code}` : `signal ${signal}`))))
  let gone = false
  void exited.then(() => (gone = true))
  const stop = async () => {
    if (gone) return
    child.kill('SIGTERM')
    await Promise.race([exited, sleep(15_000).then(() => child.kill('SIGKILL'))])
  }
  cleanups.push(stop)
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 180_000
  for (;;) {
    if (gone) {
      keepWork = true
      throw new Error(`origin ${label} (${tree}) exited during start (${exit}); its log: ${logFile}\n${readFileSync(logFile, 'utf8').slice(-2000)}`)
    }
    try {
      if ((await fetch(`${url}/health/live`)).status === 200) break
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`origin ${label} did not answer within 180 s; its log: ${logFile}`)
    await sleep(100)
  }
  return { label, tree, url, pid: child.pid!, databaseUrl, redisPid: redis.pid, logFile, stop }
}

function forkPinned(core: number, entry: string, env: Record<string, string>): ChildProcess {
  // fork() cannot run under taskset; spawn with an IPC channel, which passes through exec.
  const [command, argv] = pinned(core, process.execPath, [...process.execArgv, entry])
  const child = spawn(command, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  cleanups.push(() => {
    if (child.connected) child.disconnect()
  })
  return child
}

function nextMessage<T>(child: ChildProcess): Promise<T> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`child exited with ${code}`))
    child.once('exit', onExit)
    child.once('message', (m) => {
      child.off('exit', onExit)
      resolve(m as T)
    })
  })
}

// ---------------------------------------------------------------------------------------------------
// The dataset
const WORDS = ['invoices', 'payroll', 'tickets', 'leads', 'inventory', 'shifts', 'campaigns', 'reports', 'contracts', 'expenses', 'onboarding', 'scheduling', 'approvals', 'forecasts', 'renewals', 'audits', 'orders', 'returns', 'quotes', 'timesheets', 'budgets', 'vendors', 'claims', 'alerts']
const VERTICAL_SLUGS = ['crm', 'payroll', 'helpdesk', 'invoicing', 'inventory', 'scheduling', 'recruiting', 'analytics', 'marketing', 'accounting', 'logistics', 'compliance', 'procurement', 'ecommerce', 'security', 'backup', 'telephony', 'learning', 'expenses', 'contracts'].slice(0, VERTICALS)
const w = (n: number) => WORDS[((n % WORDS.length) + WORDS.length) % WORDS.length]!
const segmentSlug = (s: number) => (s === 0 ? 'general' : `seg-${String(s).padStart(2, '0')}`)
const pagePath = (n: number) => `/cold/${VERTICAL_SLUGS[n % VERTICALS]}/lp-${n}`

const segments = Array.from({ length: SEGMENTS }, (_, s) => ({ slug: segmentSlug(s), description: `Audience ${s}: teams that care about ${w(s)} and ${w(s * 5 + 1)}`, is_default: s === 0 }))
const pages = Array.from({ length: PAGES }, (_, n) => ({
  path: pagePath(n),
  kind: 'landing',
  title: `${VERTICAL_SLUGS[n % VERTICALS]} software for ${w(n)} and ${w(n * 7)} (${n})`,
  meta_description: `Run ${w(n)}, ${w(n * 3)} and ${w(n * 11)} in one place: ${VERTICAL_SLUGS[n % VERTICALS]} for growing teams.`,
  body_html: Array.from({ length: 6 }, (_, p) => `<h2>${w(n + p)} without the spreadsheets</h2><p>Teams that handle ${w(n * p + 1)} and ${w(n + p * 5)} every day use one workspace for ${w(n * 3 + p)}, ${w(n * 5 + p)} and ${w(n * 7 + p)}: fewer hand-offs, clear owners, reports that are always current.</p>`).join('\n'),
  intent_text: `${w(n)} ${w(n * 3)} software for ${w(n * 11)} in ${VERTICAL_SLUGS[n % VERTICALS]}`,
  vertical: VERTICAL_SLUGS[n % VERTICALS],
}))
function variantRecord(key: string, segment: number, scope: { page: string } | { vertical: string }, n: number) {
  return {
    key,
    segment: segmentSlug(segment),
    ...scope,
    headline: `Handle ${w(n)} and ${w(n * 7)} for ${w(n * 5)} teams`,
    subhead: `Built for ${segmentSlug(segment)}: ${w(n * 3)} and ${w(n * 13)} without the busywork (${n}).`,
    features: [`${w(n + 1)} in one place`, `automatic ${w(n + 2)}`, `${w(n + 3)} reports`],
    cta_label: `Try it for ${w(n * 5)}`,
    cta_url: 'page' in scope ? scope.page : `/cold/${scope.vertical}`,
    social_proof: `Teams running ${w(n * 9)} switched in a week.`,
  }
}
// Each page: its own variants for 8 of the 50 segments; each vertical: 2 variants for every segment, so
// every (page, segment) pair has a variant in scope and every page differs by segment.
const variants = [
  ...Array.from({ length: PAGES * PAGE_VARIANTS_PER_PAGE }, (_, i) => {
    const n = Math.floor(i / PAGE_VARIANTS_PER_PAGE)
    const k = i % PAGE_VARIANTS_PER_PAGE
    return variantRecord(`cold-p${n}-${k}`, (n * 13 + k * 7) % SEGMENTS, { page: pagePath(n) }, i)
  }),
  ...Array.from({ length: VERTICALS * SEGMENTS * VERTICAL_VARIANTS_PER_SEGMENT }, (_, i) => {
    const v = Math.floor(i / (SEGMENTS * VERTICAL_VARIANTS_PER_SEGMENT))
    const s = Math.floor(i / VERTICAL_VARIANTS_PER_SEGMENT) % SEGMENTS
    return variantRecord(`cold-v${v}-s${s}-${i % VERTICAL_VARIANTS_PER_SEGMENT}`, s, { vertical: VERTICAL_SLUGS[v]! }, i * 31 + 7)
  }),
]

async function admin(origin: Origin, route: string, body: object): Promise<void> {
  const res = await fetch(`${origin.url}${route}`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })
  if (!res.ok) throw new Error(`${origin.label} POST ${route}: ${res.status} ${(await res.text()).slice(0, 2000)}`)
}

async function load(origin: Origin): Promise<number> {
  const started = Date.now()
  await admin(origin, '/admin/segments', { segments })
  await admin(origin, '/admin/pages', { pages })
  for (let i = 0; i < variants.length; i += 2_000) await admin(origin, '/admin/variants', { variants: variants.slice(i, i + 2_000) })
  const counts = await withClient(origin.databaseUrl, async (c) => (await c.query('SELECT (SELECT count(*) FROM segments) AS s, (SELECT count(*) FROM pages) AS p, (SELECT count(*) FROM content_variants) AS v')).rows[0])
  if (Number(counts.s) !== SEGMENTS || Number(counts.p) !== PAGES || Number(counts.v) !== variants.length) throw new Error(`${origin.label}: loaded ${counts.s} segments, ${counts.p} pages, ${counts.v} variants`)
  // As a server would be after autovacuum: statistics for the planner on the loaded tables.
  await withClient(origin.databaseUrl, (c) => c.query('ANALYZE'))
  return (Date.now() - started) / 1000
}

// Every (page, segment) pair once, in a fixed shuffled order: warm-up, then each round's, then the
// profile's. Each is asked for once per origin (origins have their own database and Redis).
function shuffledPairs(): Array<[string, string]> {
  let seed = 0x2f6b1a3d
  const random = () => {
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const all: Array<[string, string]> = []
  for (let n = 0; n < PAGES; n++) for (let s = 0; s < SEGMENTS; s++) all.push([pagePath(n), segmentSlug(s)])
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[all[i], all[j]] = [all[j]!, all[i]!]
  }
  return all
}

// ---------------------------------------------------------------------------------------------------
// Measurement
const percentile = (values: readonly number[], p: number): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}
/** PIDs of the PostgreSQL backends serving this database (the origin's pool), for their CPU time. */
async function backendPids(url: URL): Promise<number[]> {
  const database = decodeURIComponent(url.pathname.slice(1))
  return withClient(serverUrl, async (c) => (await c.query("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'variant-origin'", [database])).rows.map((r) => Number(r.pid)))
}

interface Sample {
  p50: number
  p99: number
  max: number
  rps: number
  outcomes: Record<string, number>
  cpuUsPerRequest: number
  pgCpuUsPerRequest: number | undefined
  redisCpuUsPerRequest: number | undefined
}

async function drive(client: ChildProcess, job: ColdJob, pids: { own: number; pg?: () => Promise<number[]>; redis?: number | undefined }): Promise<Sample> {
  // The pool's backends are listed before and after: a connection the pool opened during the round (its
  // idle ones close after 30 s, so one that waited out other sides' turns comes back new) counts whole.
  const pgBefore = pids.pg === undefined ? undefined : new Map((await pids.pg()).map((pid) => [pid, cpuOf(pid)]))
  const before = { own: cpuOf(pids.own), redis: pids.redis === undefined ? undefined : cpuOf(pids.redis) }
  const reply = nextMessage<{ result?: ColdJobResult; error?: string }>(client)
  client.send(job)
  const { result, error } = await reply
  if (result === undefined) throw new Error(`load generator: ${error}`)
  const n = Math.max(1, result.requests)
  const pgMs = pgBefore === undefined ? undefined : (await pids.pg!()).reduce((sum, pid) => sum + cpuOf(pid) - (pgBefore.get(pid) ?? 0), 0)
  return {
    p50: percentile(result.latencies, 50),
    p99: percentile(result.latencies, 99),
    max: percentile(result.latencies, 100),
    rps: result.requests / (result.durationMs / 1000),
    outcomes: result.outcomes,
    cpuUsPerRequest: ((cpuOf(pids.own) - before.own) * 1000) / n,
    pgCpuUsPerRequest: pgMs === undefined ? undefined : (pgMs * 1000) / n,
    redisCpuUsPerRequest: pids.redis === undefined ? undefined : ((cpuOf(pids.redis) - before.redis!) * 1000) / n,
  }
}

const allMiss = (s: Sample, expected: number) => s.outcomes['200 MISS'] === expected && Object.keys(s.outcomes).length === 1

// ---------------------------------------------------------------------------------------------------
// Profile: statements per render, and their plans
interface StatementProfile {
  sql: string
  perRender: number
  clientMs: number
  planningMs: number
  executionMs: number
  plan: string[]
}
interface Profile {
  renders: number
  withVariant: number
  statements: StatementProfile[]
  connectionSetup: number
  /** Redis commands per render (a private Redis only: a shared one counts others' too). */
  redisCommands: Array<[command: string, perRender: number]> | undefined
  /** Median time of one miss on its own (the load generator's view, one request at a time). */
  aloneMs: number
}

/** Calls per command since the server started, from INFO commandstats. */
async function redisCommandCalls(url: string): Promise<Map<string, number>> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 })
  try {
    await redis.connect()
    const info = await redis.info('commandstats')
    return new Map([...info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)].map((m) => [m[1]!, Number(m[2])]))
  } finally {
    redis.disconnect()
  }
}

async function profile(label: string, tree: string, databaseUrl: URL, redis: { url: string | undefined; prefix: string | undefined; private: boolean }, pairs: Array<[string, string]>): Promise<Profile> {
  const out = join(work, `queries-${label.replace(/[^A-Za-z0-9]+/g, '-')}.json`)
  const origin = await startOrigin(label, tree, databaseUrl, redis, { module: join(HERE, 'cold-query-log.ts'), out })
  try {
    // A few renders first (connections opened, segments loaded), then the window.
    for (let i = 0; i < 5; i++) await (await fetch(`${origin.url}${pairs[i]![0]}`, { headers: { 'x-segment': pairs[i]![1] } })).arrayBuffer()
    const dump = async (): Promise<Array<{ sql: string; values: unknown[]; ms: number }>> => {
      rmSync(out, { force: true })
      process.kill(origin.pid, 'SIGWINCH')
      for (let i = 0; i < 100 && !existsSync(out); i++) await sleep(20)
      return JSON.parse(readFileSync(out, 'utf8'))
    }
    await dump()
    const redisBefore = redis.private && redis.url !== undefined ? await redisCommandCalls(redis.url) : undefined
    let withVariant = 0
    const window = pairs.slice(5)
    const times: number[] = []
    for (const [path, segment] of window) {
      const started = performance.now()
      const res = await fetch(`${origin.url}${path}`, { headers: { 'x-segment': segment } })
      const body = await res.text()
      times.push(performance.now() - started)
      if (res.status !== 200 || res.headers.get('x-cache') !== 'MISS') throw new Error(`profile ${label}: ${path} (${segment}) answered ${res.status} ${res.headers.get('x-cache')}`)
      if (body.includes('data-variant="')) withVariant++
    }
    const queries = await dump()
    const redisAfter = redisBefore === undefined ? undefined : await redisCommandCalls(redis.url!)
    const renders = window.length
    const connectionSetup = queries.filter((q) => /^SET /i.test(q.sql)).length
    const byText = new Map<string, Array<{ values: unknown[]; ms: number }>>()
    for (const q of queries) {
      if (/^SET /i.test(q.sql)) continue
      byText.set(q.sql, [...(byText.get(q.sql) ?? []), { values: q.values, ms: q.ms }])
    }
    const statements: StatementProfile[] = []
    await withClient(databaseUrl, async (c) => {
      await c.query("SET hnsw.iterative_scan = 'strict_order'")
      for (const [sql, runs] of byText) {
        const plans: Array<{ planning: number; execution: number; lines: string[] }> = []
        for (const run of runs.slice(0, EXPLAIN_SAMPLES)) {
          const result = await c.query(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${sql}`, run.values)
          const lines = result.rows.map((r) => String(r['QUERY PLAN']))
          const grab = (name: string) => Number(/([\d.]+) ms/.exec(lines.find((l) => l.startsWith(name)) ?? '')?.[1] ?? NaN)
          plans.push({ planning: grab('Planning Time'), execution: grab('Execution Time'), lines })
        }
        statements.push({
          sql,
          perRender: runs.length / renders,
          clientMs: median(runs.map((r) => r.ms)),
          planningMs: median(plans.map((p) => p.planning)),
          executionMs: median(plans.map((p) => p.execution)),
          plan: plans.at(-1)?.lines ?? [],
        })
      }
    })
    const redisCommands =
      redisAfter === undefined
        ? undefined
        : [...redisAfter]
            .filter(([command]) => command !== 'info')
            .map(([command, calls]): [string, number] => [command, (calls - (redisBefore!.get(command) ?? 0)) / renders])
            .filter(([, perRender]) => perRender >= 0.05)
            .sort((a, b) => b[1] - a[1])
    return { renders, withVariant, statements, connectionSetup, redisCommands, aloneMs: median(times) }
  } finally {
    await origin.stop()
  }
}

/** The plan without the lines that say little here (heap fetches, sort method, the planner's own buffers). */
function keyLines(plan: string[]): string[] {
  const out: string[] = []
  let inPlanning = false
  for (const line of plan) {
    if (/^Planning:/.test(line)) {
      inPlanning = true
      continue
    }
    if (inPlanning && /^\s+Buffers:/.test(line)) continue
    inPlanning = false
    if (/^\s*(Heap Fetches|Index Searches|Heap Blocks|Sort Method|Memory Usage):/.test(line)) continue
    out.push(line.replace(/\s+$/, ''))
  }
  return out
}

// ---------------------------------------------------------------------------------------------------
// The run
try {
  const [serverVersion, vectorVersion] = await withClient(serverUrl, async (c) => [
    String((await c.query('SHOW server_version')).rows[0].server_version),
    String((await c.query("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")).rows[0]?.default_version ?? 'not installed'),
  ])
  const trees = [{ label: THIS_LABEL, tree: THIS_TREE }, ...compareTrees]
  if (args['use-database'] && trees.length > 1) usage('--use-database gives one database; --compare-tree needs two (leave out --use-database)')

  const setups: Array<{ label: string; tree: string; databaseUrl: URL; redisUrl: string | undefined; redisPid: number | undefined; redisPrefix: string | undefined }> = []
  for (const { label, tree } of trees) {
    const databaseUrl = await prepareDatabase(label)
    let redisUrl: string | undefined
    let redisPid: number | undefined
    let redisPrefix: string | undefined
    if (redisOption === undefined) {
      const redis = await privateRedis({ teardown: (fn) => cleanups.push(fn) })
      redisUrl = redis.url
      redisPid = Number(execFileSync('sh', ['-c', `pgrep -f 'redis-server 127.0.0.1:${redis.port}' || true`]).toString().trim().split('\n')[0]) || undefined
    } else if (redisOption !== 'off') {
      // A Redis shared with others (or with an earlier run): keys under a prefix of this run's, removed at the end,
      // so no entry of another run answers and none of this one stays.
      redisUrl = redisOption
      redisPrefix = `vo-cold-${process.pid}-${label.replace(/[^A-Za-z0-9]+/g, '-')}:`
      const prefix = redisPrefix
      cleanups.push(() => deleteKeysWithPrefix(redisOption, prefix))
    } else redisUrl = 'off'
    setups.push({ label, tree, databaseUrl, redisUrl, redisPid, redisPrefix })
  }

  const origins: Origin[] = []
  const loadSeconds: Record<string, number> = {}
  for (const s of setups) {
    log(`${s.label}: starting the origin (${s.tree}) on ${shown(s.databaseUrl)}, Redis ${s.redisUrl ?? '(default)'}`)
    const origin = await startOrigin(s.label, s.tree, s.databaseUrl, { url: s.redisUrl, pid: s.redisPid, prefix: s.redisPrefix })
    origins.push(origin)
    log(`${s.label}: loading ${SEGMENTS} segments, ${PAGES} pages, ${variants.length} variants`)
    loadSeconds[s.label] = await load(origin)
    log(`${s.label}: loaded in ${loadSeconds[s.label]!.toFixed(0)} s`)
  }

  const pairs = shuffledPairs()
  let cursor = 0
  const take = (n: number) => pairs.slice(cursor, (cursor += n))

  const client = forkPinned(1, join(HERE, 'cold-client.ts'), {})
  await nextMessage(client)

  // Warm-up (not recorded): the origins' JIT and the server's caches, on pairs never used again.
  const warmPairs = take(WARM_UP_PAIRS)
  for (const origin of origins) {
    const warm = await drive(client, { url: origin.url, pairs: warmPairs, connections: CONNECTIONS }, { own: origin.pid })
    log(`${origin.label}: warm-up ${WARM_UP_PAIRS} pairs, p50 ${warm.p50.toFixed(1)} ms, p99 ${warm.p99.toFixed(1)} ms, ${JSON.stringify(warm.outcomes)}`)
  }

  // The baseline answers what a cold miss answers: the bytes and headers of one.
  const [samplePath, sampleSegment] = pairs[pairs.length - 1]!
  const sample = await fetch(`${origins[0]!.url}${samplePath}`, { headers: { 'x-segment': sampleSegment } })
  const sampleBody = Buffer.from(await sample.arrayBuffer())
  const sampleHeaders = Object.fromEntries([...sample.headers].filter(([name]) => !['date', 'connection', 'keep-alive', 'content-length', 'transfer-encoding'].includes(name)))
  const bare = forkPinned(0, join(HERE, 'bare-server.ts'), { BARE_BODY_B64: sampleBody.toString('base64'), BARE_HEADERS_JSON: JSON.stringify(sampleHeaders) })
  const bareInfo = await nextMessage<{ address: string }>(bare)
  await drive(client, { url: bareInfo.address, pairs: warmPairs, connections: CONNECTIONS }, { own: bare.pid! })

  type Side = { label: string; url: string; own: number; origin?: Origin }
  const sides: Side[] = [...origins.map((o) => ({ label: o.label, url: o.url, own: o.pid, origin: o })), { label: 'bare', url: bareInfo.address, own: bare.pid! }]
  const samples = new Map<string, Sample[]>(sides.map((s) => [s.label, []]))
  for (let round = 0; round < ROUNDS; round++) {
    const roundPairs = take(REQUESTS)
    // The side that goes first turns round by round, so drift on a shared machine favours none.
    const order = sides.map((_, i) => sides[(i + round) % sides.length]!)
    for (const side of order) {
      const origin = side.origin
      const result = await drive(client, { url: side.url, pairs: roundPairs, connections: CONNECTIONS }, { own: side.own, pg: origin === undefined ? undefined : () => backendPids(origin.databaseUrl), redis: origin?.redisPid })
      samples.get(side.label)!.push(result)
      log(`round ${round + 1} ${side.label}: p50 ${result.p50.toFixed(1)} ms, p99 ${result.p99.toFixed(1)} ms, ${result.rps.toFixed(0)} req/s, CPU/request ${result.cpuUsPerRequest.toFixed(0)} us${result.pgCpuUsPerRequest === undefined ? '' : ` (PostgreSQL ${result.pgCpuUsPerRequest.toFixed(0)} us${result.redisCpuUsPerRequest === undefined ? '' : `, Redis ${result.redisCpuUsPerRequest.toFixed(0)} us`})`}, ${JSON.stringify(result.outcomes)}`)
    }
  }
  const loadAverage = loadavg()[0]!
  for (const origin of origins) await origin.stop()
  bare.disconnect()
  client.disconnect()

  const profilePairs = take(PROFILE_RENDERS + 5)
  const profiles = new Map<string, Profile>()
  for (const s of setups) {
    log(`${s.label}: profile pass (${PROFILE_RENDERS} renders, one at a time, statements recorded)`)
    profiles.set(s.label, await profile(s.label, s.tree, s.databaseUrl, { url: s.redisUrl, prefix: s.redisPrefix, private: s.redisPid !== undefined }, profilePairs))
  }

  // -------------------------------------------------------------------------------------------------
  // Results
  const bareSamples = samples.get('bare')!
  const fmt = (x: number | undefined, digits = 1) => (x === undefined || Number.isNaN(x) ? '-' : x.toFixed(digits))
  const rows: string[] = []
  const verdicts: string[] = []
  for (const side of sides) {
    const ss = samples.get(side.label)!
    const ratios = ss.map((s, i) => s.rps / bareSamples[i]!.rps)
    const misses = ss.every((s) => allMiss(s, REQUESTS))
    const outcomes = new Map<string, number>()
    for (const s of ss) for (const [k, v] of Object.entries(s.outcomes)) outcomes.set(k, (outcomes.get(k) ?? 0) + v)
    const name = side.label === 'bare' ? 'bare Fastify (baseline)' : `origin, ${side.label === THIS_LABEL ? 'this tree' : `${side.label} (${side.origin!.tree})`}`
    rows.push(
      `| ${name} | **${fmt(median(ss.map((s) => s.p50)))}** (${ss.map((s) => fmt(s.p50)).join(', ')}) | **${fmt(median(ss.map((s) => s.p99)))}** (${ss.map((s) => fmt(s.p99)).join(', ')}) | ${fmt(median(ss.map((s) => s.rps)), 0)} | ${side.label === 'bare' ? '1' : `${fmt(median(ratios), 3)} (${ratios.map((r) => r.toFixed(2)).join(', ')})`} | ${fmt(median(ss.map((s) => s.cpuUsPerRequest)), 0)} | ${side.origin === undefined ? '-' : `${fmt(median(ss.map((s) => s.pgCpuUsPerRequest ?? NaN)), 0)} / ${side.origin.redisPid === undefined ? '-' : fmt(median(ss.map((s) => s.redisCpuUsPerRequest ?? NaN)), 0)}`} | ${[...outcomes].map(([k, v]) => `${k}: ${v}`).join(', ')} |`,
    )
    if (side.origin !== undefined) {
      const p99 = median(ss.map((s) => s.p99))
      verdicts.push(`${name}: p99 ${fmt(p99)} ms ${p99 <= BAR_P99_MS ? '<=' : '>'} ${BAR_P99_MS} ms, ${misses ? `every answer 200 MISS (${ROUNDS} x ${REQUESTS})` : 'NOT every answer a 200 MISS'}: bar **${p99 <= BAR_P99_MS && misses ? 'met' : 'NOT met'}**`)
    }
  }
  const profileText = setups
    .map((s) => {
      const p = profiles.get(s.label)!
      const total = p.statements.reduce((sum, st) => sum + st.perRender, 0)
      const statements = p.statements
        .map(
          (st, i) =>
            `${i + 1}. ${fmt(st.perRender, 2)} per render; round trip as the origin sees it ${fmt(st.clientMs, 2)} ms (median), EXPLAIN ANALYZE planning ${fmt(st.planningMs, 3)} ms + execution ${fmt(st.executionMs, 3)} ms (medians of ${Math.min(EXPLAIN_SAMPLES, Math.round(st.perRender * p.renders))} runs with the recorded parameters):\n\n   \`\`\`sql\n${st.sql.trim().replace(/\s+/g, ' ').replace(/^/gm, '   ')}\n   \`\`\`\n   \`\`\`\n${keyLines(st.plan).map((l) => `   ${l}`).join('\n')}\n   \`\`\``,
        )
        .join('\n')
      const redisLine =
        p.redisCommands === undefined
          ? ''
          : ` Redis commands per render: ${p.redisCommands.reduce((sum, [, n]) => sum + n, 0).toFixed(1)} (${p.redisCommands.map(([c, n]) => `${c} ${n.toFixed(2)}`).join(', ')}).`
      return `**${s.label === THIS_LABEL ? 'This tree' : `${s.label} (${s.tree})`}**: ${fmt(total, 2)} statements per render (${p.renders} renders of never-served pairs, one at a time, median ${fmt(p.aloneMs, 2)} ms each; ${p.withVariant} showed a variant; ${p.connectionSetup} per-connection \`SET hnsw.iterative_scan\` besides).${redisLine}\n\n${statements}`
    })
    .join('\n\n')

  const section = `${START}
## Cold misses on a real PostgreSQL (never-served page x segment pairs)

\`${commandLine}\` (${new Date().toISOString().slice(0, 10)}; ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}) shared with other work, load average ${loadAverage.toFixed(2)} at the end of the rounds; Node ${process.version}; PostgreSQL ${serverVersion}, pgvector ${vectorVersion}).

Dataset, loaded through the admin API into a fresh database (${Object.entries(loadSeconds).map(([k, v]) => `${k}: ${v.toFixed(0)} s`).join(', ')}): ${SEGMENTS} segments, ${PAGES} landing pages over ${VERTICALS} verticals,
${variants.length} variants (${PAGES * PAGE_VARIANTS_PER_PAGE} page variants, ${PAGE_VARIANTS_PER_PAGE} segments per page; ${VERTICALS * SEGMENTS * VERTICAL_VARIANTS_PER_SEGMENT} vertical variants, ${VERTICAL_VARIANTS_PER_SEGMENT} per vertical and segment),
so every pair has a variant in scope and every page differs by segment; local embedder, 1536 dimensions. The origin runs as \`npm start\`
does (\`node server.ts\`, log level info, JSON lines to a file) with only DATABASE_URL, PORT, ADMIN_TOKEN and REDIS_URL set: ${redisOption === undefined ? 'a private redis-server started for the run (one per origin)' : redisOption === 'off' ? 'REDIS_URL=off' : `REDIS_URL=${redisOption} with a REDIS_KEY_PREFIX of the run's own`}.
${canPin ? 'Origin and baseline pinned to core 0 (`taskset -c 0`), the load generator (autocannon in its own process) to core 1; PostgreSQL and Redis are not pinned.' : 'Not pinned (taskset or a second core missing).'}
Warm-up: ${WARM_UP_PAIRS} pairs per origin, not recorded. Then ${ROUNDS} rounds; in each, every side answers ${REQUESTS} pairs never asked for
before (the same ${REQUESTS} for each origin, which have their own database and Redis), ${CONNECTIONS} in flight, the side that goes first turning
round by round. Requests carry \`X-Segment\` and no \`Accept-Encoding\` (the identity bytes come back; the origin makes its codings at
render time whatever the request accepts). The baseline is bare Fastify (bench/bare-server.ts) answering the bytes and headers of one
cold miss (${sampleBody.length} bytes). Latencies from the load generator, per round (p50, p99 over the round's ${REQUESTS}); medians of the
rounds in bold, each round in brackets. Ratio: req/s over bare Fastify's in the same round. CPU: each process's own CPU time (all
its threads) over the requests: the origin's; the PostgreSQL backends of its pool; its Redis.

| side | p50 ms | p99 ms | req/s | ratio to bare | CPU us/request | PostgreSQL / Redis CPU us/request | answers |
|---|---|---|---|---|---|---|---|
${rows.join('\n')}

Bar (p99 <= ${BAR_P99_MS} ms, every answer a real render): ${verdicts.join('; ')}.

### Profile of a miss

An origin of the same tree on the same database with bench/cold-query-log.ts preloaded (a wrapper of pg's
\`Client.query\`: statement text, parameters and round-trip time); every statement is then run under
\`EXPLAIN (ANALYZE, BUFFERS)\` with the parameters the origin sent, on the loaded data. Key plan lines:

${profileText}
${END}`

  if (args['no-results']) process.stdout.write(`${section}\n`)
  else {
    writeResultsSection(RESULTS, START, END, section)
    process.stdout.write(`${section}\n`)
  }
} catch (err) {
  keepWork = true
  process.stderr.write(`bench:cold: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exitCode = 1
} finally {
  await cleanup()
}
process.exit(process.exitCode ?? 0)
