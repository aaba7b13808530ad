// `npm run bench`: load benchmarks against 127.0.0.1, each as a ratio to bare Fastify measured in the
// same run, interleaved over several rounds; medians are written to bench/RESULTS.md.
// Bounded: ROUNDS x scenarios x DURATION seconds (default 5 x 2 x 2 x 5 s = under two minutes).

import autocannon from 'autocannon'
import { fork, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { fileURLToPath } from 'node:url'

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

async function measure(url: string, headers: Record<string, string>): Promise<{ rps: number; p99: number; non2xx: number }> {
  const result = await autocannon({ url, connections: CONNECTIONS, duration: DURATION, headers, pipelining: 1 })
  return { rps: result.requests.average, p99: result.latency.p99, non2xx: result.non2xx }
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

const origin = await start('./origin-server.ts', { DATA_DIR: 'memory://', REDIS_URL: 'off', LOG_LEVEL: 'warn' })
const originUrl = origin.message.address!
const first = await fetch(`${originUrl}${PAGE}`)
const body = Buffer.from(await first.arrayBuffer())
const originEtag = first.headers.get('etag')!
const originHeaders = Object.fromEntries([...first.headers].filter(([name]) => !['date', 'connection', 'keep-alive', 'content-length', 'transfer-encoding'].includes(name)))
const bare = await start('./bare-server.ts', { BARE_BODY_B64: body.toString('base64'), BARE_HEADERS_JSON: JSON.stringify(originHeaders) })
const bareUrl = bare.message.address!

const noHeaders: Record<string, string> = {}
const scenarios: Array<{ name: string; origin: { url: string; headers: Record<string, string> }; bare: { url: string; headers: Record<string, string> }; bar: number }> = [
  { name: 'L1 hit (200, full body)', origin: { url: `${originUrl}${PAGE}`, headers: noHeaders }, bare: { url: `${bareUrl}${PAGE}`, headers: noHeaders }, bar: 0.9 },
  { name: '304 revalidation', origin: { url: `${originUrl}${PAGE}`, headers: { 'if-none-match': originEtag } }, bare: { url: `${bareUrl}${PAGE}`, headers: { 'if-none-match': bare.message.etag! } }, bar: 1.0 },
]

const samples = new Map<string, { origin: number[]; bare: number[]; ratio: number[]; originP99: number[]; bareP99: number[]; errors: number }>()
for (const s of scenarios) samples.set(s.name, { origin: [], bare: [], ratio: [], originP99: [], bareP99: [], errors: 0 })

for (let round = 1; round <= ROUNDS; round++) {
  for (const s of scenarios) {
    // Alternate which side goes first, so drift on a shared machine does not favour one side.
    const order = round % 2 === 0 ? (['bare', 'origin'] as const) : (['origin', 'bare'] as const)
    const result: Record<string, Awaited<ReturnType<typeof measure>>> = {}
    for (const side of order) result[side] = await measure(s[side].url, s[side].headers)
    const entry = samples.get(s.name)!
    entry.origin.push(result.origin!.rps)
    entry.bare.push(result.bare!.rps)
    entry.ratio.push(result.origin!.rps / result.bare!.rps)
    entry.originP99.push(result.origin!.p99)
    entry.bareP99.push(result.bare!.p99)
    entry.errors += result.origin!.non2xx === 0 || s.name.startsWith('304') ? 0 : result.origin!.non2xx
    process.stderr.write(`round ${round} ${s.name}: origin ${result.origin!.rps.toFixed(0)} req/s, bare ${result.bare!.rps.toFixed(0)} req/s, ratio ${(result.origin!.rps / result.bare!.rps).toFixed(3)}\n`)
  }
}

origin.child.disconnect()
bare.child.disconnect()

const rows = scenarios.map((s) => {
  const e = samples.get(s.name)!
  const ratio = median(e.ratio)
  return `| ${s.name} | ${median(e.origin).toFixed(0)} | ${median(e.bare).toFixed(0)} | **${ratio.toFixed(3)}** (${e.ratio.map((r) => r.toFixed(2)).join(', ')}) | ${median(e.originP99)} / ${median(e.bareP99)} | >= ${s.bar.toFixed(2)} ${ratio >= s.bar ? 'met' : 'NOT met'} |`
})

const report = `# Benchmark results

Written by \`npm run bench\` (bench/run.ts) on ${new Date().toISOString().slice(0, 10)}: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), Node ${process.version}.
autocannon in the bench process, ${CONNECTIONS} connections, ${DURATION} s per measurement, ${ROUNDS} rounds with origin and
baseline interleaved (the side that goes first alternates). The baseline is bare Fastify answering the
same ${body.length}-byte body with the same response headers (copied from the origin's). Ratios are origin req/s over baseline req/s
in the same round; the table gives medians, with every round's ratio in brackets. The load generator
shares the 2 cores with the servers, so absolute numbers are low and noisy; the ratio is the result.

Origin: embedded PostgreSQL (in-memory), REDIS_URL=off, LOG_LEVEL=warn, page \`${PAGE}\` (demo data).

| scenario | origin req/s | bare req/s | ratio (median) | p99 ms origin / bare | bar |
|---|---|---|---|---|---|
${rows.join('\n')}
`
writeFileSync(fileURLToPath(new URL('./RESULTS.md', import.meta.url)), report)
process.stdout.write(report)
process.exit(0)
