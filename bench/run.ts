// `npm run bench`: load benchmarks against 127.0.0.1, each as a ratio to bare Fastify measured in the
// same run, interleaved over several rounds; medians are written to bench/RESULTS.md.
// Bounded: ROUNDS x scenarios x 2 sides x DURATION seconds (default 5 x 5 x 2 x 5 s = 250 s), plus the stampedes
// and the cold misses.

import autocannon from 'autocannon'
import { fork, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { fileURLToPath } from 'node:url'
import { deleteKeysWithPrefix } from '../test/support/redis-keys.ts'

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const DURATION = Number(process.env.BENCH_DURATION ?? 5)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const PAGE = '/crm/dentists/austin'

function start(entry: string, env: Record<string, string>): Promise<{ child: ChildProcess; message: Record<string, string> }> {
  const child = fork(fileURLToPath(new URL(entry, import.meta.url)), [], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  return new Promise((resolve, reject) => {
    child.once('message', (message) => resolve({ child, message: message as Record<string, string> }))
    child.once('exit', (code) => reject(new Error(`${entry} exited with ${code}`)))
  })
}

/** CPU time (user + system, ms) a process has used: /proc/<pid>/stat fields 14 and 15, in clock ticks of 10 ms. */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 10
}

/**
 * Throughput, and the server's CPU time per request: the second does not depend on how much of the
 * shared cores the load generator got, so it is the steadier measure of what the origin adds.
 */
async function measure(url: string, headers: Record<string, string>, pid: number, paths?: readonly string[]): Promise<{ rps: number; p99: number; non2xx: number; cpuUs: number }> {
  const cpuBefore = cpuMs(pid)
  // With `paths`, consecutive requests go round the list (path and X-Segment), so no two connections
  // ask for the same key at the same time.
  let next = 0
  const requests =
    paths === undefined
      ? undefined
      : [{ setupRequest: (request: autocannon.Request) => {
          const [path, segment] = paths[next++ % paths.length]!.split('|')
          return { ...request, path, headers: { ...headers, 'x-segment': segment! } }
        } }]
  const result = await autocannon({ url, connections: CONNECTIONS, duration: DURATION, headers, pipelining: 1, ...(requests === undefined ? {} : { requests }) })
  const cpuUs = ((cpuMs(pid) - cpuBefore) * 1000) / Math.max(1, result.requests.total)
  return { rps: result.requests.average, p99: result.latency.p99, non2xx: result.non2xx, cpuUs }
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/12'
const prefix = `vo-bench-${process.pid}:`
const origin = await start('./origin-server.ts', { DATA_DIR: 'memory://', REDIS_URL: 'off', LOG_LEVEL: 'warn' })
const originUrl = origin.message.address!
// L2 hit: L1 never fresh (L1_TTL_SECONDS=0), so every request reads Redis.
const l2Origin = await start('./origin-server.ts', { DATA_DIR: 'memory://', REDIS_URL, REDIS_KEY_PREFIX: prefix, L1_TTL_SECONDS: '0', LOG_LEVEL: 'warn' })
const l2Url = l2Origin.message.address!
await fetch(`${l2Url}${PAGE}`)
// Distinct keys for the L2 read without coalescing: the pages the demo index links, in every segment,
// each fetched once so that Redis holds it.
const indexHtml = await (await fetch(`${l2Url}/`)).text()
const indexPaths = [...new Set([...indexHtml.matchAll(/href="(\/[a-z0-9-]+\/[a-z0-9-]+\/[a-z0-9-]+)"/g)].map((m) => m[1]!))]
const distinctKeys = indexPaths.flatMap((path) => ['general', 'enterprise', 'smb', 'developer'].map((segment) => `${path}|${segment}`))
for (const key of distinctKeys) {
  const [path, segment] = key.split('|')
  await (await fetch(`${l2Url}${path}`, { headers: { 'x-segment': segment! } })).arrayBuffer()
}
const first = await fetch(`${originUrl}${PAGE}`)
const body = Buffer.from(await first.arrayBuffer())
const originEtag = first.headers.get('etag')!
const originHeaders = Object.fromEntries([...first.headers].filter(([name]) => !['date', 'connection', 'keep-alive', 'content-length', 'transfer-encoding'].includes(name)))
const bare = await start('./bare-server.ts', { BARE_BODY_B64: body.toString('base64'), BARE_HEADERS_JSON: JSON.stringify(originHeaders) })
const bareUrl = bare.message.address!

const noHeaders: Record<string, string> = {}
type Side = { url: string; headers: Record<string, string>; pid: number; paths?: readonly string[] }
const bare200: Side = { url: `${bareUrl}${PAGE}`, headers: noHeaders, pid: bare.child.pid! }
/** bar undefined: shown for what it tells, not judged. */
const scenarios: Array<{ name: string; origin: Side; bare: Side; bar: number | undefined }> = [
  { name: 'L1 hit (200, full body)', origin: { url: `${originUrl}${PAGE}`, headers: noHeaders, pid: origin.child.pid! }, bare: bare200, bar: 0.9 },
  { name: 'L2 hit (L1 off, Redis), one page', origin: { url: `${l2Url}${PAGE}`, headers: noHeaders, pid: l2Origin.child.pid! }, bare: bare200, bar: 0.6 },
  {
    name: `L2 hit (L1 off, Redis), ${distinctKeys.length} keys in turn`,
    origin: { url: `${l2Url}${PAGE}`, headers: noHeaders, pid: l2Origin.child.pid!, paths: distinctKeys },
    bare: { ...bare200, paths: distinctKeys },
    bar: undefined,
  },
  { name: '304 revalidation (baseline: bare 200)', origin: { url: `${originUrl}${PAGE}`, headers: { 'if-none-match': originEtag }, pid: origin.child.pid! }, bare: bare200, bar: 1.0 },
  {
    name: '304 revalidation (baseline: bare 304)',
    origin: { url: `${originUrl}${PAGE}`, headers: { 'if-none-match': originEtag }, pid: origin.child.pid! },
    bare: { url: `${bareUrl}${PAGE}`, headers: { 'if-none-match': bare.message.etag! }, pid: bare.child.pid! },
    bar: undefined,
  },
]

const samples = new Map<string, { origin: number[]; bare: number[]; ratio: number[]; originP99: number[]; bareP99: number[]; originCpu: number[]; bareCpu: number[]; errors: number }>()
for (const s of scenarios) samples.set(s.name, { origin: [], bare: [], ratio: [], originP99: [], bareP99: [], originCpu: [], bareCpu: [], errors: 0 })

for (let round = 1; round <= ROUNDS; round++) {
  for (const s of scenarios) {
    // Alternate which side goes first, so drift on a shared machine does not favour one side.
    const order = round % 2 === 0 ? (['bare', 'origin'] as const) : (['origin', 'bare'] as const)
    const result: Record<string, Awaited<ReturnType<typeof measure>>> = {}
    for (const side of order) result[side] = await measure(s[side].url, s[side].headers, s[side].pid, s[side].paths)
    const entry = samples.get(s.name)!
    entry.origin.push(result.origin!.rps)
    entry.bare.push(result.bare!.rps)
    entry.ratio.push(result.origin!.rps / result.bare!.rps)
    entry.originP99.push(result.origin!.p99)
    entry.bareP99.push(result.bare!.p99)
    entry.originCpu.push(result.origin!.cpuUs)
    entry.bareCpu.push(result.bare!.cpuUs)
    entry.errors += result.origin!.non2xx === 0 || s.name.startsWith('304') ? 0 : result.origin!.non2xx
    process.stderr.write(`round ${round} ${s.name}: origin ${result.origin!.rps.toFixed(0)} req/s, bare ${result.bare!.rps.toFixed(0)} req/s, ratio ${(result.origin!.rps / result.bare!.rps).toFixed(3)}; CPU/request origin ${result.origin!.cpuUs.toFixed(0)} us, bare ${result.bare!.cpuUs.toFixed(0)} us\n`)
  }
}

// Stampede: 500 concurrent requests on one cold key, split over two instances sharing Redis and
// the database; renders are counted by the instances themselves.
async function renders(child: ChildProcess): Promise<number> {
  child.send('stats')
  return new Promise((resolve) => child.once('message', (m) => resolve((m as { renders: number }).renders)))
}
const stampedeA = await start('./origin-server.ts', { DATA_DIR: 'memory://', REDIS_URL, REDIS_KEY_PREFIX: `${prefix}stampede:`, LOG_LEVEL: 'warn' })
const stampedeB = await start('./origin-server.ts', { DATABASE_URL: stampedeA.message.databaseUrl!, DB_POOL_MAX: '1', REDIS_URL, REDIS_KEY_PREFIX: `${prefix}stampede:`, LOG_LEVEL: 'warn' })
const stampedeRows: string[] = []
for (const cold of ['/helpdesk/gyms/miami', '/crm/schools/denver', '/payroll/clinics/dallas']) {
  const [beforeA, beforeB] = [await renders(stampedeA.child), await renders(stampedeB.child)]
  const statuses = await Promise.all(Array.from({ length: 500 }, (_, i) => fetch(`${(i % 2 === 0 ? stampedeA : stampedeB).message.address}${cold}`).then((r) => r.status)))
  const [afterA, afterB] = [await renders(stampedeA.child), await renders(stampedeB.child)]
  stampedeRows.push(`| ${cold} | 500 (250 + 250) | ${statuses.filter((s) => s === 200).length} | ${afterA - beforeA} | ${afterB - beforeB} | ${afterA - beforeA + afterB - beforeB} |`)
}
// One instance alone: 500 concurrent requests, one cold key.
const [beforeSolo] = [await renders(origin.child)]
await Promise.all(Array.from({ length: 500 }, () => fetch(`${originUrl}/helpdesk/nonprofits/austin`).then((r) => r.arrayBuffer())))
const soloRenders = (await renders(origin.child)) - beforeSolo

// Cold misses with 10,000 variants: every request is a (landing page, segment) pair never served
// before, so each one renders: page row, nearest variant of the segment within the page's own, template.
const COLD_VARIANTS = Number(process.env.BENCH_COLD_VARIANTS ?? 10_000)
const COLD_PAGES = 1_000
const ADMIN = 'bench-admin-token-0123456789'
const coldOrigin = await start('./origin-server.ts', { DATA_DIR: 'memory://', REDIS_URL: 'off', LOG_LEVEL: 'warn', ADMIN_TOKEN: ADMIN, DB_STATEMENT_TIMEOUT_MS: '600000' })
const coldUrl = coldOrigin.message.address!
const words = ['invoices', 'payroll', 'tickets', 'leads', 'inventory', 'shifts', 'campaigns', 'reports', 'contracts', 'expenses', 'onboarding', 'scheduling']
const segmentsList = ['general', 'enterprise', 'smb', 'developer']
const post = async (path: string, body: object): Promise<void> => {
  const res = await fetch(`${coldUrl}${path}`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`)
}
const loadStarted = Date.now()
await post('/admin/pages', { pages: Array.from({ length: COLD_PAGES }, (_, n) => ({ path: `/bench/lp-${n}`, kind: 'landing', title: `Landing ${n}`, intent_text: `${words[n % 12]} ${words[(n * 3) % 12]} software for ${words[(n * 11) % 12]}` })) })
for (let i = 0; i < COLD_VARIANTS; i += 2000) {
  await post('/admin/variants', {
    variants: Array.from({ length: Math.min(2000, COLD_VARIANTS - i) }, (_, k) => {
      const n = i + k
      // Ten variants per landing page, two or three per segment: the nearest of them is chosen.
      return { key: `bench-${n}`, segment: segmentsList[n % 4], page: `/bench/lp-${Math.floor(n / 4) % COLD_PAGES}`, headline: `Handle ${words[n % 12]} and ${words[(n * 7) % 12]} for ${words[(n * 5) % 12]} teams, plan ${n}` }
    }),
  })
}
const loadSeconds = (Date.now() - loadStarted) / 1000
let coldCounter = 0
const coldResult = await autocannon({
  url: coldUrl,
  connections: 10,
  amount: COLD_PAGES * 4,
  requests: [
    {
      setupRequest: (request) => {
        const n = coldCounter++
        return { ...request, path: `/bench/lp-${Math.floor(n / 4) % COLD_PAGES}`, headers: { 'x-segment': segmentsList[n % 4]! } }
      },
    },
  ],
})
const coldBare = await autocannon({ url: `${bareUrl}${PAGE}`, connections: 10, amount: COLD_PAGES * 4 })

for (const child of [origin, l2Origin, bare, stampedeA, stampedeB, coldOrigin]) child.child.disconnect()
await deleteKeysWithPrefix(REDIS_URL, prefix)

const rows = scenarios.map((s) => {
  const e = samples.get(s.name)!
  const ratio = median(e.ratio)
  return `| ${s.name} | ${median(e.origin).toFixed(0)} | ${median(e.bare).toFixed(0)} | **${ratio.toFixed(3)}** (${e.ratio.map((r) => r.toFixed(2)).join(', ')}) | ${median(e.originP99)} / ${median(e.bareP99)} | ${median(e.originCpu).toFixed(0)} / ${median(e.bareCpu).toFixed(0)} | ${s.bar === undefined ? '(no bar)' : `>= ${s.bar.toFixed(2)} ${ratio >= s.bar ? 'met' : 'NOT met'}`} |`
})

const report = `# Benchmark results

Written by \`npm run bench\` (bench/run.ts) on ${new Date().toISOString().slice(0, 10)}: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), Node ${process.version}.
autocannon in the bench process, ${CONNECTIONS} connections, ${DURATION} s per measurement, ${ROUNDS} rounds with origin and
baseline interleaved (the side that goes first alternates). The baseline is bare Fastify answering the
same ${body.length}-byte body with the same response headers (copied from the origin's). Ratios are origin req/s over baseline req/s
in the same round (the demo page is ${body.length} bytes, smaller than the 5 KB the issue names: a smaller body
weighs the origin's fixed per-request cost more, so the ratios err low); the table gives medians, with every round's ratio in brackets. The load generator
shares the 2 cores with the servers, so absolute numbers are low and noisy; the ratio is the result.
The CPU column is each server's own CPU time (from /proc) divided by the requests it answered, medians
over the rounds: it does not depend on the share of the cores the load generator got.

Origin: embedded PostgreSQL (in-memory), REDIS_URL=off, LOG_LEVEL=warn, page \`${PAGE}\` (demo data).

| scenario | origin req/s | bare req/s | ratio (median) | p99 ms origin / bare | CPU us/request origin / bare | bar |
|---|---|---|---|---|---|---|
${rows.join('\n')}

L2 hit: a second origin with L1_TTL_SECONDS=0 (L1 never fresh) reading Redis (${REDIS_URL}, key prefix per run).
"One page" is the scenario the bar is set for: 50 connections on one key, so concurrent lookups share
the Redis read already in flight for that key (single-flight L2 reads, counted by
\`variant_origin_l2_reads_coalesced_total\`), as they would on a hot page whose L1 copy just expired.
"${distinctKeys.length} keys in turn" goes round the demo index's pages in every segment, so reads rarely
overlap and nearly every request pays its own Redis round trip (a write and a read on the Redis
socket on top of the HTTP ones): that row is the cost of a lone L2 read, and it has no bar.

304: the issue's baseline is bare Fastify sending the full body; the stricter row compares with bare
Fastify answering a 304 itself.

## Stampede: renders per cold key

One instance, 500 concurrent requests on one cold key: **${soloRenders} render(s)** (bar: 1).

Two instances sharing Redis and the database, 500 concurrent requests on one cold key split between them
(bar: 1 render across both):

| cold key | requests | 200s | renders A | renders B | renders total |
|---|---|---|---|---|---|
${stampedeRows.join('\n')}

## Cold misses with ${COLD_VARIANTS.toLocaleString('en')} variants

${COLD_VARIANTS} variants over 4 segments and ${COLD_PAGES} landing pages ingested through the admin API in ${loadSeconds.toFixed(0)} s
(embedded PostgreSQL). Then ${COLD_PAGES * 4} requests, 10 connections, each a (page, segment) pair never served
before, so each one renders (page row, nearest variant of the segment, template):

| | req/s | p50 ms | p99 ms | non-2xx |
|---|---|---|---|---|
| origin, cold misses | ${coldResult.requests.average.toFixed(0)} | ${coldResult.latency.p50} | ${coldResult.latency.p99} | ${coldResult.non2xx} |
| bare Fastify, same count | ${coldBare.requests.average.toFixed(0)} | ${coldBare.latency.p50} | ${coldBare.latency.p99} | ${coldBare.non2xx} |

Ratio ${(coldResult.requests.average / coldBare.requests.average).toFixed(3)}: a miss costs database round trips through the
embedded PostgreSQL's single session; this is what the caches above keep the CDN from seeing.

bentocache was measured for the L1 hit separately: see bench/bentocache/RESULTS.md.
`
// The sitemap and fault benchmarks (bench/sitemaps.ts, bench/faults.ts) write their own sections
// between <!-- NAME:start --> and <!-- NAME:end --> markers: keep them.
const resultsPath = fileURLToPath(new URL('./RESULTS.md', import.meta.url))
const previous = existsSync(resultsPath) ? readFileSync(resultsPath, 'utf8') : ''
const kept = [...previous.matchAll(/<!-- (\w+):start -->[\s\S]*?<!-- \1:end -->/g)].map((m) => m[0])
writeFileSync(resultsPath, [report, ...kept].join('\n') + (kept.length > 0 ? '\n' : ''))
process.stdout.write(report)
process.exit(0)
