// `npm run bench:experiments`: proof by simulation, through a real Varnish, that the experiment bandit
// learns without costing the CDN its offload. Two sides, one after the other, each on its own origin
// (`node server.ts` as `npm start` runs it, a fresh DATA_DIR: the embedded PostgreSQL with the demo site)
// behind its own varnishd running the VCL that origin generates (GET /admin/cdn/varnish.vcl, the output of
// `npm run cdn:config -- --flavour varnish`):
//   - learning: reallocation every EXPERIMENT_REALLOCATE_SECONDS (5 s here), buckets moved by Thompson
//     sampling and purged at Varnish by xkey tag through the outbox;
//   - uniform: the same, with the experiment paused right after it starts: a paused experiment keeps its
//     starting even split.
// On each, two variants are added to one demo landing page for one segment (three compete), the
// experiment is awaited (GET /admin/experiments), then the same seeded visitor stream runs through
// Varnish (bench/experiments-visitors.ts): each page view GETs the page with its own cookie jar, keeps the
// vo_bucket cookie Varnish sets, reads the variant off the hero, and sends the beacon's `view` and, with
// the variant's true conversion rate, its `cta_click` to POST /events through Varnish. Then the consumer
// is awaited until GET /admin/experiments counts exactly what was sent, and every bucket is asked of
// Varnish and of the origin to check the edge serves each bucket the variant the origin assigns.
// Results go between the experiments markers of bench/RESULTS.md (and to stdout).
//
// Options:
//   --visitors N          page views per side (default 6000)
//   --rates a,b,c         true conversion rate of each variant, in variant id order (default 0.02,0.04,0.08)
//   --duration-s S        pacing: page view i starts no earlier than i * S / N seconds in (default 90)
//   --concurrency N       page views in flight (default 8)
//   --returning F         share of page views by a returning visitor, reusing an earlier jar (default 0.3)
//   --seed N              the visitor stream's seed (default 15)
//   --reallocate-seconds S  the learning side's period (default 5)
//   --page PATH, --segment SLUG  the demo landing page and segment that compete (default /crm, smb)
//   --redis-url URL       the origins' Redis (default redis://127.0.0.1:6379), keys under a prefix of this
//                         run's, deleted at the end
//   --no-results          print the section instead of writing bench/RESULTS.md

import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { freePort } from '../test/support/net.ts'
import { deleteKeysWithPrefix } from '../test/support/redis-keys.ts'
import { findVarnishd, vclFor } from '../test/support/varnish.ts'
import { type PageView, readHero, runVisitors, visitorStream, type VisitorRun } from './experiments-visitors.ts'
import { cleanUpOnSignals, cleanup, cleanups, log, sleep, writeResultsSection } from './measure.ts'
import type { ExperimentReport } from '../src/experiments/experiment-report.ts'

const HERE = fileURLToPath(new URL('.', import.meta.url))
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const RESULTS = join(HERE, 'RESULTS.md')
const START = '<!-- experiments:start -->'
const END = '<!-- experiments:end -->'
const ADMIN_TOKEN = 'bench-experiments-admin-token-0123456789'
const BUCKETS = 20
const MIN_SHARE = 0.05
const BROWSER = 'Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0'
const BAR_BEST_SHARE = 0.7
const BAR_HIT_RATIO = 0.9
const BEACON_PATH = '/assets/vo-beacon.js'

function usage(message: string): never {
  process.stderr.write(
    `bench:experiments: ${message}\nusage: npm run bench:experiments -- [--visitors 6000] [--rates 0.02,0.04,0.08] [--duration-s 90] [--concurrency 8] [--returning 0.3] [--seed 15] [--reallocate-seconds 5] [--page /crm] [--segment smb] [--redis-url redis://127.0.0.1:6379] [--no-results]\n`,
  )
  process.exit(2)
}

let args: ReturnType<typeof parseOptions>
function parseOptions() {
  return parseArgs({
    options: {
      visitors: { type: 'string', default: '6000' },
      rates: { type: 'string', default: '0.02,0.04,0.08' },
      'duration-s': { type: 'string', default: '90' },
      concurrency: { type: 'string', default: '8' },
      returning: { type: 'string', default: '0.3' },
      seed: { type: 'string', default: '15' },
      'reallocate-seconds': { type: 'string', default: '5' },
      page: { type: 'string', default: '/crm' },
      segment: { type: 'string', default: 'smb' },
      'redis-url': { type: 'string', default: 'redis://127.0.0.1:6379' },
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
const integer = (name: string, text: string, min: number, max: number): number => {
  const n = Number(text)
  if (!Number.isInteger(n) || n < min || n > max) usage(`--${name} must be an integer from ${min} to ${max}`)
  return n
}
const VISITORS = integer('visitors', args.visitors, 100, 100_000)
const DURATION_S = integer('duration-s', args['duration-s'], 1, 3_600)
const CONCURRENCY = integer('concurrency', args.concurrency, 1, 256)
const SEED = integer('seed', args.seed, 0, 2 ** 32 - 1)
const REALLOCATE_SECONDS = integer('reallocate-seconds', args['reallocate-seconds'], 1, 3_600)
const RETURNING = Number(args.returning)
if (!(RETURNING >= 0 && RETURNING < 1)) usage('--returning must be a number from 0 to below 1')
const RATES = args.rates.split(',').map(Number)
if (RATES.length !== 3 || RATES.some((r) => !(r >= 0 && r <= 1))) usage('--rates must be three rates from 0 to 1, comma-separated (one per variant, in id order)')
const PAGE = args.page
const SEGMENT = args.segment
if (!/^\/[a-z0-9/-]*$/.test(PAGE)) usage('--page must be a landing page path such as /crm')
const REDIS_URL = args['redis-url']
const commandLine = `npm run bench:experiments${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`

// ---------------------------------------------------------------------------------------------------
// Cleanup: whatever was started or created is undone on the way out, on an error or Ctrl-C too.
cleanUpOnSignals()
const work = mkdtempSync(join(tmpdir(), 'vo-bench-experiments-'))
cleanups.push(() => rmSync(work, { recursive: true, force: true }))

/** Stops a child: SIGTERM, SIGKILL after `graceMs`; resolves once it is gone. */
function stopper(child: ChildProcess, graceMs: number): () => Promise<void> {
  let gone = child.exitCode !== null || child.signalCode !== null
  const exited = new Promise<void>((resolve) => {
    if (gone) resolve()
    child.once('exit', () => {
      gone = true
      resolve()
    })
  })
  return async () => {
    if (gone) return
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
    await exited
    clearTimeout(timer)
  }
}

async function until<T>(what: string, timeoutMs: number, intervalMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastError = ''
  for (;;) {
    try {
      const value = await probe()
      if (value !== undefined) return value
    } catch (err) {
      lastError = err instanceof Error ? err.message : String(err)
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${lastError === '' ? '' : ` (last error: ${lastError})`}`)
    await sleep(intervalMs)
  }
}

// ---------------------------------------------------------------------------------------------------
// The origin, Varnish and varnishncsa
interface Origin {
  url: string
  logFile: string
  stop(): Promise<void>
}

async function startOrigin(side: string, env: Record<string, string>): Promise<Origin> {
  const port = Number(env.PORT)
  const logFile = join(work, `origin-${side}.log`)
  const fd = openSync(logFile, 'w')
  // `npm start` is `node server.ts`; only the environment the run needs (log level info, JSON lines to the file).
  const child = spawn(process.execPath, ['server.ts'], { cwd: ROOT, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? work, ...env }, stdio: ['ignore', fd, fd] })
  closeSync(fd)
  const stop = stopper(child, 15_000)
  cleanups.push(stop)
  const url = `http://127.0.0.1:${port}`
  try {
    await until(`the ${side} origin to answer /health/live`, 180_000, 200, async () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the origin exited (${child.exitCode ?? child.signalCode})`)
      return (await fetch(`${url}/health/live`)).status === 200 ? true : undefined
    })
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- origin log (tail) ---\n${readFileSync(logFile, 'utf8').slice(-3000)}`)
  }
  return { url, logFile, stop }
}

interface Varnish {
  url: string
  instance: string
  ncsaFile: string
  stats(...names: string[]): Record<string, number>
  stop(): Promise<void>
}

async function startVarnish(side: string, varnishd: string, vcl: string, backendPort: number, port: number): Promise<Varnish> {
  const dir = join(work, `varnish-${side}`)
  mkdirSync(dir)
  // varnishd drops root to its own users: they must read the VCL and use the work directory.
  chmodSync(work, 0o755)
  chmodSync(dir, 0o755)
  const vclFile = join(dir, 'generated.vcl')
  writeFileSync(vclFile, vclFor(vcl, '127.0.0.1', backendPort), { mode: 0o644 })
  const instance = join(dir, 'instance')
  const child = spawn(varnishd, ['-F', '-n', instance, '-f', vclFile, '-a', `127.0.0.1:${port}`, '-s', 'malloc,128m', '-p', 'vsl_space=16M'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()))
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()))
  const stopVarnishd = stopper(child, 5_000)
  cleanups.push(stopVarnishd)
  const url = `http://127.0.0.1:${port}`
  try {
    await until('varnishd to answer /health/live through it', 60_000, 200, async () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`varnishd exited (${child.exitCode ?? child.signalCode})`)
      const res = await fetch(`${url}/health/live`, { signal: AbortSignal.timeout(2_000) })
      await res.arrayBuffer()
      return res.status === 200 ? true : undefined
    })
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${output.slice(-3000)}`)
  }
  // Every PURGE Varnish receives (from the origin's outbox worker): its tags and what xkey did with them.
  const ncsaFile = join(dir, 'purges.tsv')
  const ncsaFd = openSync(ncsaFile, 'w')
  const ncsa = spawn('varnishncsa', ['-n', instance, '-c', '-q', 'ReqMethod eq "PURGE"', '-F', '%{%s}t\t%{xkey-purge}i\t%{xkey-softpurge}i\t%s\t%{VSL:RespReason}x'], { stdio: ['ignore', ncsaFd, 'pipe'] })
  closeSync(ncsaFd)
  let ncsaErr = ''
  ncsa.stderr?.on('data', (chunk: Buffer) => (ncsaErr += chunk.toString()))
  const stopNcsa = stopper(ncsa, 3_000)
  cleanups.push(stopNcsa)
  await sleep(500)
  if (ncsa.exitCode !== null) log(`${side}: varnishncsa exited (${ncsa.exitCode}): ${ncsaErr.trim()}; PURGE requests will not be listed`)
  const varnishstat = 'varnishstat'
  const stats = (...names: string[]): Record<string, number> => {
    const result = spawnSync(varnishstat, ['-n', instance, '-1', '-j', ...names.flatMap((n) => ['-f', n])], { encoding: 'utf8', timeout: 10_000 })
    if (result.status !== 0) throw new Error(`varnishstat: ${result.stderr}`)
    const parsed = JSON.parse(result.stdout) as { counters?: Record<string, { value: number }> } & Record<string, { value?: number }>
    const counters = parsed.counters ?? parsed
    return Object.fromEntries(names.map((n) => [n, Number(counters[n]?.value ?? NaN)]))
  }
  const stop = async () => {
    await sleep(300) // varnishncsa's last records
    await stopNcsa()
    await stopVarnishd()
  }
  return { url, instance, ncsaFile, stats, stop }
}

// ---------------------------------------------------------------------------------------------------
// The admin API

const auth = { authorization: `Bearer ${ADMIN_TOKEN}` }
async function adminPost(origin: Origin, route: string, body: object): Promise<unknown> {
  const res = await fetch(`${origin.url}${route}`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify(body) })
  const text = await res.text()
  if (!res.ok) throw new Error(`POST ${route}: ${res.status} ${text.slice(0, 2000)}`)
  return JSON.parse(text) as unknown
}
async function experiment(origin: Origin): Promise<ExperimentReport | undefined> {
  const res = await fetch(`${origin.url}/admin/experiments?page=${encodeURIComponent(PAGE)}`, { headers: auth })
  if (!res.ok) throw new Error(`GET /admin/experiments: ${res.status} ${(await res.text()).slice(0, 500)}`)
  const body = (await res.json()) as { experiments: ExperimentReport[] }
  return body.experiments.find((e) => e.segment === SEGMENT)
}

/** Two more variants of the page for the segment (the demo gives it one): three compete. */
const NEW_VARIANTS = [
  {
    key: 'bench-experiments-b',
    segment: SEGMENT,
    page: PAGE,
    headline: 'Set up in an afternoon, no consultants needed',
    subhead: 'Import your contacts from a spreadsheet and start selling today.',
    features: ['Free import', 'Pipeline templates', 'Email sync'],
    cta_label: 'Start free',
    cta_url: PAGE,
    social_proof: 'Rated 4.7 by 1,200 owners.',
  },
  {
    key: 'bench-experiments-c',
    segment: SEGMENT,
    page: PAGE,
    headline: 'Never lose a lead again: every call, email and quote in one place',
    subhead: 'Reminders that follow up for you, on your phone and your laptop.',
    features: ['Automatic follow-ups', 'Mobile app', 'Quotes in two clicks'],
    cta_label: 'See it with your data',
    cta_url: PAGE,
    social_proof: '9 of 10 teams keep it after the trial.',
  },
]

// ---------------------------------------------------------------------------------------------------
// One side
interface Poll {
  at: number
  report: ExperimentReport
}
interface SideResult {
  side: string
  variants: number[]
  best: number
  startReport: ExperimentReport
  finalReport: ExperimentReport
  run: VisitorRun
  polls: Poll[]
  varnishDelta: Record<string, number>
  caughtUpMs: number | undefined
  sent: Map<number, { views: number; conversions: number }>
  probe: { mismatches: string[]; attempts: number; edgeCounts: Map<number, number>; originCounts: Map<number, number> }
  logStats: { reallocations: number; moved: number; started: number; purgeFailures: number; reallocationFailures: number; errors: string[]; outsideExperimentEvents: number; deadLetters: number }
  purges: { requests: number; hard: number; soft: number; objects: number; tags: number; statuses: Map<string, number> }
  loadStart: number
  loadEnd: number
}

async function runSide(side: 'learning' | 'uniform', varnishd: string): Promise<SideResult> {
  const originPort = await freePort()
  const varnishPort = await freePort()
  const prefix = `vo-bench-experiments-${process.pid}-${side}:`
  cleanups.push(() => deleteKeysWithPrefix(REDIS_URL, prefix))
  log(`${side}: starting the origin on :${originPort} (fresh DATA_DIR, Redis ${REDIS_URL} under ${prefix})`)
  const origin = await startOrigin(side, {
    PORT: String(originPort),
    DATA_DIR: join(work, `data-${side}`),
    ADMIN_TOKEN,
    REDIS_URL,
    REDIS_KEY_PREFIX: prefix,
    CDN_FLAVOUR: 'varnish',
    PURGE_TARGETS: 'varnish',
    VARNISH_PURGE_URL: `http://127.0.0.1:${varnishPort}`,
    EXPERIMENT_BUCKETS: String(BUCKETS),
    EXPERIMENT_REALLOCATE_SECONDS: String(REALLOCATE_SECONDS),
    EXPERIMENT_MIN_SHARE: String(MIN_SHARE),
    EVENTS_RATE_LIMIT_PER_MINUTE: '1000000',
  })
  const vclRes = await fetch(`${origin.url}/admin/cdn/varnish.vcl`, { headers: auth })
  const vcl = await vclRes.text()
  if (!vclRes.ok || !vcl.includes(`Experiment buckets: ${BUCKETS}`)) throw new Error(`GET /admin/cdn/varnish.vcl: ${vclRes.status} ${vcl.slice(0, 500)}`)
  log(`${side}: starting varnishd on :${varnishPort} with the VCL the origin generates`)
  const varnish = await startVarnish(side, varnishd, vcl, originPort, varnishPort)

  const ingest = (await adminPost(origin, '/admin/variants', { variants: NEW_VARIANTS })) as { inserted?: number }
  if (ingest.inserted !== NEW_VARIANTS.length) throw new Error(`POST /admin/variants inserted ${ingest.inserted}, not ${NEW_VARIANTS.length}`)
  const added = Date.now()
  const startReport = await until(`the experiment on ${PAGE} for ${SEGMENT} to start (one reallocation period, ${REALLOCATE_SECONDS} s)`, REALLOCATE_SECONDS * 1000 + 60_000, 250, async () => {
    const e = await experiment(origin)
    return e !== undefined && e.variants.length === 3 ? e : undefined
  })
  log(`${side}: experiment started ${((Date.now() - added) / 1000).toFixed(1)} s after the variants were added: variants ${startReport.variants.map((v) => v.variant).join(', ')}, buckets ${startReport.variants.map((v) => Math.round(v.share * BUCKETS)).join('/')}`)
  let report = startReport
  if (side === 'uniform') {
    report = (await adminPost(origin, '/admin/experiments', { page: PAGE, segment: SEGMENT, action: 'pause' })) as ExperimentReport
    if (report.status !== 'paused') throw new Error(`pause answered status ${report.status}`)
    const moved = report.variants.some((v, i) => v.share !== startReport.variants[i]!.share)
    if (moved) throw new Error(`a reallocation moved buckets before the pause: ${JSON.stringify(report.variants.map((v) => v.share))}`)
    log(`${side}: paused right after the start: the split stays ${report.variants.map((v) => Math.round(v.share * BUCKETS)).join('/')}`)
  }
  // The origin's registry has it once the page, asked directly, carries the experiment.
  await until('the origin to serve the page under experiment', 30_000, 200, async () => {
    const res = await fetch(`${origin.url}${PAGE}`, { headers: { 'x-segment': SEGMENT, 'x-bucket': '0', 'user-agent': BROWSER } })
    return readHero(await res.text()).experiment ? true : undefined
  })

  const variants = startReport.variants.map((v) => v.variant).sort((a, b) => a - b)
  const rates = new Map(variants.map((v, i) => [v, RATES[i]!]))
  const best = [...rates].reduce((a, b) => (b[1] >= a[1] ? b : a))[0]
  const plans = visitorStream(SEED, VISITORS, RETURNING, 2 * CONCURRENCY)

  const counters = ['MAIN.cache_hit', 'MAIN.cache_hit_grace', 'MAIN.cache_miss', 'MAIN.cache_hitmiss', 'MAIN.cache_hitpass', 'MAIN.s_pass', 'MAIN.client_req', 'MAIN.backend_req', 'MAIN.n_object']
  const before = varnish.stats(...counters)
  const polls: Poll[] = []
  let polling = true
  const visitorsStart = performance.now()
  const poller = (async () => {
    while (polling) {
      try {
        const e = await experiment(origin)
        if (e !== undefined) polls.push({ at: performance.now() - visitorsStart, report: e })
      } catch {
        // a missed poll: the next one sees the same reallocatedAt or a later one
      }
      await sleep(1_000)
    }
  })()
  const loadStart = loadavg()[0]!
  log(`${side}: ${VISITORS} page views, ${CONCURRENCY} in flight, paced over ${DURATION_S} s (seed ${SEED})`)
  let lastShown = 0
  const run = await runVisitors({
    baseUrl: varnish.url,
    path: PAGE,
    segment: SEGMENT,
    userAgent: BROWSER,
    plans,
    rates,
    concurrency: CONCURRENCY,
    durationMs: DURATION_S * 1000,
    beaconPath: BEACON_PATH,
    onProgress: (done, total) => {
      const now = performance.now()
      if (now - lastShown > 15_000 || done === total) {
        lastShown = now
        log(`${side}: ${done}/${total} page views after ${((now - visitorsStart) / 1000).toFixed(0)} s`)
      }
    },
  })
  const loadEnd = loadavg()[0]!
  polling = false
  await poller
  const after = varnish.stats(...counters)
  const varnishDelta = Object.fromEntries(counters.map((c) => [c, after[c]! - before[c]!]))

  // What was sent (answered 202) per variant; the report must count exactly that once the consumer caught up.
  const sent = new Map(variants.map((v) => [v, { views: 0, conversions: 0 }]))
  for (const view of run.views) {
    if (view.variant === undefined || !sent.has(view.variant)) continue
    const s = sent.get(view.variant)!
    if (view.viewSent) s.views++
    if (view.converted) s.conversions++
  }
  const matches = (e: ExperimentReport) => variants.every((v) => {
    const r = e.variants.find((x) => x.variant === v)
    return r !== undefined && r.views === sent.get(v)!.views && r.conversions === sent.get(v)!.conversions
  })
  const catchUpStart = Date.now()
  let caughtUpMs: number | undefined
  let finalReport: ExperimentReport
  try {
    finalReport = await until('the consumer to count every event sent', 120_000, 500, async () => {
      const e = await experiment(origin)
      return e !== undefined && matches(e) ? e : undefined
    })
    caughtUpMs = Date.now() - catchUpStart
    await sleep(2_000)
    // Nothing more may be counted afterwards (a duplicate, an event counted twice).
    const later = await experiment(origin)
    if (later !== undefined && !matches(later)) {
      caughtUpMs = undefined
      finalReport = later
    } else if (later !== undefined) finalReport = later
  } catch (err) {
    log(`${side}: ${(err as Error).message}`)
    finalReport = (await experiment(origin))!
  }
  log(`${side}: the report counts what was sent: ${caughtUpMs === undefined ? 'NO' : `yes, ${(caughtUpMs / 1000).toFixed(1)} s after the last page view`}`)

  // Every bucket, asked of Varnish (the cookie) and of the origin (X-Bucket, as Varnish sends it): the
  // edge must serve each bucket the variant the origin assigns it now, i.e. every moved bucket was purged.
  const probe = { mismatches: [] as string[], attempts: 0, edgeCounts: new Map<number, number>(), originCounts: new Map<number, number>() }
  for (let attempt = 1; attempt <= 5; attempt++) {
    probe.attempts = attempt
    const stamp = (await experiment(origin))?.reallocatedAt
    const mismatches: string[] = []
    const edgeCounts = new Map<number, number>()
    const originCounts = new Map<number, number>()
    for (let bucket = 0; bucket < BUCKETS; bucket++) {
      const direct = readHero(await (await fetch(`${origin.url}${PAGE}`, { headers: { 'x-segment': SEGMENT, 'x-bucket': String(bucket), 'user-agent': BROWSER } })).text()).variant
      const edgeRes = await fetch(`${varnish.url}${PAGE}`, { headers: { 'x-segment': SEGMENT, cookie: `vo_bucket=${bucket}`, 'user-agent': BROWSER } })
      const edge = readHero(await edgeRes.text()).variant
      if (direct !== undefined) originCounts.set(direct, (originCounts.get(direct) ?? 0) + 1)
      if (edge !== undefined) edgeCounts.set(edge, (edgeCounts.get(edge) ?? 0) + 1)
      if (edge !== direct) mismatches.push(`bucket ${bucket}: edge ${edge} (${edgeRes.headers.get('x-edge-cache')}), origin ${direct}`)
    }
    const restamp = (await experiment(origin))?.reallocatedAt
    Object.assign(probe, { mismatches, edgeCounts, originCounts })
    // A reallocation during the probe may have moved a bucket between the two asks: once more, after its purge.
    if (mismatches.length === 0 || stamp === restamp) break
    await sleep(1_500)
  }
  log(`${side}: edge vs origin per bucket: ${probe.mismatches.length === 0 ? `all ${BUCKETS} agree` : probe.mismatches.join('; ')}`)

  await varnish.stop()
  await origin.stop()

  // The origin's log: reallocations that changed something, purge failures, errors.
  const logStats = { reallocations: 0, moved: 0, started: 0, purgeFailures: 0, reallocationFailures: 0, errors: [] as string[], outsideExperimentEvents: 0, deadLetters: 0 }
  for (const line of readFileSync(origin.logFile, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue
    let entry: { level?: number; msg?: string; moved?: number; started?: number; outsideExperimentEvents?: number }
    try {
      entry = JSON.parse(line)
    } catch {
      continue
    }
    if (entry.msg === 'experiments reallocated') {
      logStats.reallocations++
      logStats.moved += entry.moved ?? 0
      logStats.started += entry.started ?? 0
    }
    if (entry.msg?.startsWith('CDN purge failed') === true) logStats.purgeFailures++
    if (entry.msg?.startsWith('experiment reallocation failed') === true) logStats.reallocationFailures++
    if (entry.outsideExperimentEvents !== undefined) logStats.outsideExperimentEvents += entry.outsideExperimentEvents
    if (/dead-letter/i.test(entry.msg ?? '')) logStats.deadLetters++
    if ((entry.level ?? 0) >= 50 && logStats.errors.length < 5) logStats.errors.push(line.slice(0, 400))
  }
  const purges = { requests: 0, hard: 0, soft: 0, objects: 0, tags: 0, statuses: new Map<string, number>() }
  if (existsSync(varnish.ncsaFile)) {
    for (const line of readFileSync(varnish.ncsaFile, 'utf8').split('\n')) {
      if (line.trim() === '') continue
      const [, hard, soft, status, reason] = line.split('\t')
      purges.requests++
      if (hard !== undefined && hard !== '-' && hard !== '') {
        purges.hard++
        purges.tags += hard.split(/\s+/).length
      }
      if (soft !== undefined && soft !== '-' && soft !== '') {
        purges.soft++
        purges.tags += soft.split(/\s+/).length
      }
      purges.statuses.set(status ?? '?', (purges.statuses.get(status ?? '?') ?? 0) + 1)
      purges.objects += Number(/(\d+) objects/.exec(reason ?? '')?.[1] ?? 0)
    }
  }
  return { side, variants, best, startReport: report, finalReport, run, polls, varnishDelta, caughtUpMs, sent, probe, logStats, purges, loadStart, loadEnd }
}

// ---------------------------------------------------------------------------------------------------
// Figures
const pct = (x: number, digits = 1) => `${(x * 100).toFixed(digits)}%`

interface Figures {
  pageRequests: number
  ok: number
  hits: number
  edge: Map<string, number>
  experimentViews: number
  lastQuarter: { best: number; views: number }
  quarters: number[]
  conversions: number
  expectedConversions: number
  newVisitors: number
  returning: number
  returningWithoutCookie: number
  cookiesSet: number
  unexpectedCookies: number
  errors: Map<string, number>
  distinctBuckets: number
  reallocationsSeen: number
  bucketsMovedSeen: number
  timeline: string[]
}

function figures(r: SideResult): Figures {
  const views = r.run.views
  const rates = new Map(r.variants.map((v, i) => [v, RATES[i]!]))
  const edge = new Map<string, number>()
  const errors = new Map<string, number>()
  let ok = 0
  let hits = 0
  let experimentViews = 0
  let conversions = 0
  let expectedConversions = 0
  let cookiesSet = 0
  let unexpectedCookies = 0
  let returningWithoutCookie = 0
  const buckets = new Set<number>()
  for (const v of views) {
    if (v.status === 200) ok++
    if (v.hit) hits++
    edge.set(v.edge || '(none)', (edge.get(v.edge || '(none)') ?? 0) + 1)
    if (v.error !== undefined) errors.set(v.error, (errors.get(v.error) ?? 0) + 1)
    if (v.experiment) experimentViews++
    if (v.converted) conversions++
    if (v.variant !== undefined && v.experiment) expectedConversions += rates.get(v.variant) ?? 0
    if (v.cookieSet) cookiesSet++
    if (v.cookieSet && v.hadCookie) unexpectedCookies++
    if (v.returning && !v.hadCookie) returningWithoutCookie++
    if (v.bucket !== undefined) buckets.add(v.bucket)
  }
  const quarter = Math.floor(views.length / 4)
  const bestShare = (from: number, to: number) => {
    const slice = views.slice(from, to).filter((v) => v.variant !== undefined && v.experiment)
    return { best: slice.filter((v) => v.variant === r.best).length, views: slice.length }
  }
  const quarters = [0, 1, 2, 3].map((q) => {
    const s = bestShare(q * quarter, q === 3 ? views.length : (q + 1) * quarter)
    return s.views === 0 ? 0 : s.best / s.views
  })
  // Reallocations as GET /admin/experiments saw them (1 s polls): each new reallocatedAt, with the bucket split after it.
  const timeline: string[] = []
  let stamp = r.startReport.reallocatedAt
  let counts = r.startReport.variants.map((v) => Math.round(v.share * BUCKETS))
  let reallocationsSeen = 0
  let bucketsMovedSeen = 0
  for (const p of r.polls) {
    if (p.report.reallocatedAt === stamp) continue
    stamp = p.report.reallocatedAt
    reallocationsSeen++
    const next = r.variants.map((id) => Math.round((p.report.variants.find((v) => v.variant === id)?.share ?? 0) * BUCKETS))
    bucketsMovedSeen += next.reduce((sum, n, i) => sum + Math.abs(n - counts[i]!), 0) / 2
    counts = next
    const pb = p.report.variants.find((v) => v.variant === r.best)?.probabilityBest ?? 0
    timeline.push(`${(p.at / 1000).toFixed(0)} s: ${next.join('/')} (P(best) ${pb.toFixed(3)})`)
  }
  return {
    pageRequests: views.length,
    ok,
    hits,
    edge,
    experimentViews,
    lastQuarter: bestShare(3 * quarter, views.length),
    quarters,
    conversions,
    expectedConversions,
    newVisitors: views.filter((v) => !v.returning).length,
    returning: views.filter((v) => v.returning).length,
    returningWithoutCookie,
    cookiesSet,
    unexpectedCookies,
    errors,
    distinctBuckets: buckets.size,
    reallocationsSeen,
    bucketsMovedSeen,
    timeline,
  }
}

// ---------------------------------------------------------------------------------------------------
// Main
try {
  const varnishd = findVarnishd()
  if (varnishd === undefined) throw new Error('varnishd is not installed (Debian: apt-get install -y varnish varnish-modules)')
  const varnishVersion = (spawnSync(varnishd, ['-V'], { encoding: 'utf8' }).stderr.split('\n')[0] ?? '').trim()
  const loadBefore = loadavg()
  const learning = await runSide('learning', varnishd)
  const uniform = await runSide('uniform', varnishd)
  const sides = [learning, uniform]
  const f = new Map(sides.map((s) => [s.side, figures(s)]))
  const fl = f.get('learning')!
  const fu = f.get('uniform')!

  const bestShareL = fl.lastQuarter.views === 0 ? 0 : fl.lastQuarter.best / fl.lastQuarter.views
  const hitRatio = (x: Figures) => (x.pageRequests === 0 ? 0 : x.hits / x.pageRequests)
  const bars = [
    { name: `learning side: page views on the best variant over the last quarter >= ${pct(BAR_BEST_SHARE, 0)}`, met: bestShareL >= BAR_BEST_SHARE, figure: `${pct(bestShareL)} (${fl.lastQuarter.best} of ${fl.lastQuarter.views})` },
    ...sides.map((s) => ({ name: `${s.side} side: Varnish hit ratio on ${PAGE} >= ${pct(BAR_HIT_RATIO, 0)}`, met: hitRatio(f.get(s.side)!) >= BAR_HIT_RATIO, figure: `${pct(hitRatio(f.get(s.side)!), 2)} (${f.get(s.side)!.hits} of ${f.get(s.side)!.pageRequests})` })),
    ...sides.map((s) => ({ name: `${s.side} side: GET /admin/experiments counts exactly the views and conversions sent, per variant`, met: s.caughtUpMs !== undefined, figure: s.caughtUpMs === undefined ? 'mismatch (see the table)' : `matched ${(s.caughtUpMs / 1000).toFixed(1)} s after the last page view, unchanged 2 s later` })),
    ...sides.map((s) => ({ name: `${s.side} side: Varnish serves every bucket the variant the origin assigns it (moved buckets were purged)`, met: s.probe.mismatches.length === 0, figure: s.probe.mismatches.length === 0 ? `${BUCKETS} of ${BUCKETS}` : s.probe.mismatches.join('; ') })),
  ]

  const variantTable = (s: SideResult) => {
    const rows = s.variants.map((id, i) => {
      const r = s.finalReport.variants.find((v) => v.variant === id)!
      const sent = s.sent.get(id)!
      const mark = id === s.best ? ' (best)' : ''
      return `| ${id}${mark} | ${pct(RATES[i]!, 0)} | ${r.views} / ${sent.views} | ${r.conversions} / ${sent.conversions} | ${pct(r.rate, 2)} | ${pct(r.interval95[0], 2)}-${pct(r.interval95[1], 2)} | ${r.probabilityBest.toFixed(4)} | ${pct(r.share, 0)} (${Math.round(r.share * BUCKETS)} of ${BUCKETS}) |`
    })
    return `| variant | true rate | views (report / sent) | conversions (report / sent) | rate | 95% interval | P(best) | share of buckets |\n|---|---|---|---|---|---|---|---|\n${rows.join('\n')}`
  }
  const edgeText = (x: Figures) => [...x.edge].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ')
  const row = (label: string, value: (s: SideResult, x: Figures) => string) => `| ${label} | ${sides.map((s) => value(s, f.get(s.side)!)).join(' | ')} |`
  const gained = fl.conversions - fu.conversions
  const gainedExpected = fl.expectedConversions - fu.expectedConversions
  const loadAfter = loadavg()

  const section = `${START}
## Experiments: the bandit learns through a real Varnish, and the CDN keeps its offload

\`${commandLine}\` (${new Date().toISOString().slice(0, 10)}; ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}) shared with other work, load average ${loadBefore[0]!.toFixed(2)} at the start, ${learning.loadStart.toFixed(2)}-${learning.loadEnd.toFixed(2)} over the learning side's visitors and ${uniform.loadStart.toFixed(2)}-${uniform.loadEnd.toFixed(2)} over the uniform side's, ${loadAfter[0]!.toFixed(2)} at the end; Node ${process.version}; ${varnishVersion}).

Each side: the origin started as \`npm start\` does (\`node server.ts\`, log level info) on a fresh DATA_DIR (the embedded
PostgreSQL with the demo site) with only PORT, DATA_DIR, ADMIN_TOKEN, REDIS_URL=${REDIS_URL} (a REDIS_KEY_PREFIX of the run's own,
deleted at the end), CDN_FLAVOUR=varnish, PURGE_TARGETS=varnish, VARNISH_PURGE_URL (its Varnish), EXPERIMENT_BUCKETS=${BUCKETS},
EXPERIMENT_REALLOCATE_SECONDS=${REALLOCATE_SECONDS}, EXPERIMENT_MIN_SHARE=${MIN_SHARE} and EVENTS_RATE_LIMIT_PER_MINUTE=1000000 (every visitor is 127.0.0.1);
in front of it a varnishd (\`-s malloc,128m\`) running the VCL that origin serves at GET /admin/cdn/varnish.vcl (what
\`npm run cdn:config -- --flavour varnish\` prints) with the backend lines pointed at it. Two variants of ${PAGE} for ${SEGMENT} were
added through POST /admin/variants (the demo page has one): three compete, with true conversion rates ${RATES.map((r) => pct(r, 0)).join(', ')} in
variant id order. The experiment started at the next reallocation (an even split, ${learning.startReport.variants.map((v) => Math.round(v.share * BUCKETS)).join('/')} buckets).
**learning**: reallocation every ${REALLOCATE_SECONDS} s (Thompson sampling, floor ${pct(MIN_SHARE, 0)}; moved buckets purged at Varnish by xkey tag through
the outbox). **uniform**: the same, with POST /admin/experiments \`pause\` right after the start (a paused experiment keeps its split;
reallocations still run and update P(best), but move nothing).

Visitors (bench/experiments-visitors.ts): ${VISITORS} page views per side from one stream seeded ${SEED} (mulberry32): ${pct(RETURNING, 0)} are returning
visitors reusing the cookie jar of an earlier page view (at least ${2 * CONCURRENCY} back), and each page view has one uniform draw that converts it
when under the shown variant's true rate, so both sides see the same visitors and the same draws. ${CONCURRENCY} in flight, page view i
starting no earlier than i x ${DURATION_S} s / ${VISITORS}. Each: GET ${PAGE} through Varnish with \`X-Segment: ${SEGMENT}\`, a Firefox User-Agent and its jar's
cookies; keeps the vo_bucket cookie Varnish sets; reads data-variant off the hero; loads ${BEACON_PATH} once per jar (then cached by the
browser); POSTs the beacon's \`view\` to /events through Varnish as text/plain ({type, ts, path, segment, variant, bucket}, as
src/experiments/beacon.ts builds it) and, when the draw converts, a \`cta_click\`. Not repeatable bit for bit: Varnish draws the buckets
(std.random) and the origin's Thompson sampling uses Math.random, and reallocations fall where the clock puts them.

Hit ratio: the visitors' page GETs of ${PAGE} only (not the beacon, the events or the end-of-run bucket probes); a hit is an answer whose
\`X-Varnish\` carries two ids (this request's and the object's: a cache hit, including grace hits and requests that waited on another's
fetch); X-Edge-Cache is the VCL's own label. The varnishstat line is the delta over the visitors (page and beacon GETs together).

| | learning | uniform |
|---|---|---|
${row('page views (200) / errors', (_s, x) => `${x.ok} / ${x.pageRequests - x.ok}${x.errors.size === 0 ? '' : ` (${[...x.errors].map(([k, v]) => `${k}: ${v}`).join(', ')})`}`)}
${row('new / returning page views (returning whose jar had no cookie yet)', (_s, x) => `${x.newVisitors} / ${x.returning} (${x.returningWithoutCookie})`)}
${row('vo_bucket cookies set by Varnish (on a request that had one)', (_s, x) => `${x.cookiesSet} (${x.unexpectedCookies}); ${x.distinctBuckets} distinct buckets`)}
${row('elapsed (visitors)', (s) => `${(s.run.elapsedMs / 1000).toFixed(1)} s`)}
${row(`**page views on the best variant, last quarter**`, (_s, x) => `**${pct(x.lastQuarter.views === 0 ? 0 : x.lastQuarter.best / x.lastQuarter.views)}** (${x.lastQuarter.best} of ${x.lastQuarter.views})`)}
${row('... by quarter of the stream', (_s, x) => x.quarters.map((q) => pct(q, 0)).join(' / '))}
${row('**conversions** (cta_click accepted)', (_s, x) => `**${x.conversions}**`)}
${row('expected conversions (sum of the true rates shown)', (_s, x) => x.expectedConversions.toFixed(1))}
${row(`**Varnish hit ratio on ${PAGE}**`, (_s, x) => `**${pct(hitRatio(x), 2)}** (${x.hits} of ${x.pageRequests}; ${x.pageRequests - x.hits} misses)`)}
${row('X-Edge-Cache', (_s, x) => edgeText(x))}
${row('varnishstat delta: cache_hit (grace) / cache_miss / hitmiss / hitpass / s_pass / backend_req', (s) => `${s.varnishDelta['MAIN.cache_hit']} (${s.varnishDelta['MAIN.cache_hit_grace']}) / ${s.varnishDelta['MAIN.cache_miss']} / ${s.varnishDelta['MAIN.cache_hitmiss']} / ${s.varnishDelta['MAIN.cache_hitpass']} / ${s.varnishDelta['MAIN.s_pass']} / ${s.varnishDelta['MAIN.backend_req']}`)}
${row('varnishstat cache_hit + cache_miss = page + beacon GETs, and cache_hit = their X-Varnish hits', (s, x) => (s.varnishDelta['MAIN.cache_hit']! + s.varnishDelta['MAIN.cache_miss']! === x.pageRequests + s.run.beacon.requests && s.varnishDelta['MAIN.cache_hit'] === x.hits + s.run.beacon.hits ? 'yes' : 'NO'))}
${row('beacon script loads (hits)', (s) => `${s.run.beacon.requests} (${s.run.beacon.hits})${s.run.beacon.failures > 0 ? `, ${s.run.beacon.failures} failed` : ''}`)}
${row('event POSTs refused or failed', (s) => (s.run.eventFailures.length === 0 ? '0' : s.run.eventFailures.slice(0, 3).join('; ')))}
${row('reallocations seen by GET /admin/experiments (buckets moved between polls)', (_s, x) => `${x.reallocationsSeen} (${x.bucketsMovedSeen})`)}
${row('origin log "experiments reallocated" lines (started, buckets moved)', (s) => `${s.logStats.reallocations} (${s.logStats.started}, ${s.logStats.moved})`)}
${row('PURGE requests at Varnish (hard / soft; tags; objects purged)', (s) => `${s.purges.requests} (${s.purges.hard} / ${s.purges.soft}; ${s.purges.tags}; ${s.purges.objects}), status ${[...s.purges.statuses].map(([k, v]) => `${k}: ${v}`).join(', ')}`)}
${row('origin log: purge failures / reallocation failures / errors', (s) => `${s.logStats.purgeFailures} / ${s.logStats.reallocationFailures} / ${s.logStats.errors.length}`)}
${row('edge = origin per bucket at the end', (s) => (s.probe.mismatches.length === 0 ? `${BUCKETS} of ${BUCKETS}` : `${BUCKETS - s.probe.mismatches.length} of ${BUCKETS}`))}

Conversions gained by learning: **${gained >= 0 ? '+' : ''}${gained}** (${fu.conversions === 0 ? '-' : `${gained >= 0 ? '+' : ''}${pct(gained / fu.conversions)}`}; ${fl.conversions} vs ${fu.conversions}); in expectation ${gainedExpected >= 0 ? '+' : ''}${gainedExpected.toFixed(1)} (${fl.expectedConversions.toFixed(1)} vs ${fu.expectedConversions.toFixed(1)}).

Final GET /admin/experiments, checked against the events sent (views and conversions: report / sent):

**learning** (status ${learning.finalReport.status}, best for visitors without a bucket: ${learning.finalReport.bestVariant}):

${variantTable(learning)}

**uniform** (status ${uniform.finalReport.status}, best for visitors without a bucket: ${uniform.finalReport.bestVariant}):

${variantTable(uniform)}

Learning side's bucket split (variants in id order) after each reallocation GET /admin/experiments saw, seconds into the visitors:
${fl.timeline.length === 0 ? '(none)' : fl.timeline.join('; ')}.

Bars:
${bars.map((b) => `- ${b.name}: ${b.figure}: **${b.met ? 'met' : 'NOT met'}**`).join('\n')}
${END}`

  if (args['no-results']) process.stdout.write(`${section}\n`)
  else {
    writeResultsSection(RESULTS, START, END, section)
    process.stdout.write(`${section}\n`)
  }
  if (bars.some((b) => !b.met)) process.exitCode = 1
} catch (err) {
  process.stderr.write(`bench:experiments: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exitCode = 1
} finally {
  await cleanup()
}
process.exit(process.exitCode ?? 0)
