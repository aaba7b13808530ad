// `npm run bench:faults`: Redis and PostgreSQL faults injected under load, counting what the clients
// see on warm keys. Two origin instances share a private redis-server and an embedded PostgreSQL
// (PGlite, in this process's child); autocannon drives both over 100 warm keys while the script kills,
// restarts and pauses Redis, then pauses PostgreSQL. Short fresh and stale-while-revalidate windows
// make the warm entries pass through L1, L2, stale-while-revalidate and stale-if-error during the run.
// Results go between the faults markers of bench/RESULTS.md. Bounded: about 50 s of load.

import autocannon from 'autocannon'
import { fork, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import type { IncomingHttpHeaders } from 'node:http'
import { cpus } from 'node:os'
import { fileURLToPath } from 'node:url'
import { startEmbeddedPostgres } from '../src/db/embedded-postgres.ts'
import { embeddedPostgresPid } from '../test/support/processes.ts'
import { privateRedis } from '../test/support/redis-server.ts'

const CONNECTIONS_PER_INSTANCE = Number(process.env.BENCH_CONNECTIONS ?? 20)
const RESULTS = fileURLToPath(new URL('./RESULTS.md', import.meta.url))
const START = '<!-- faults:start -->'
const END = '<!-- faults:end -->'
const SEGMENTS = ['general', 'enterprise'] as const
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const cleanups: Array<() => unknown> = []
const redis = await privateRedis({ teardown: (fn) => cleanups.push(fn) })
const database = await startEmbeddedPostgres('memory://')

const ORIGIN_ENV = {
  DATABASE_URL: database.connectionString,
  DB_POOL_MAX: '1',
  REDIS_URL: redis.url,
  REDIS_KEY_PREFIX: 'vo-bench-faults:',
  LOG_LEVEL: 'error',
  L1_TTL_SECONDS: '2',
  ORIGIN_FRESH_SECONDS: '6',
  STALE_WHILE_REVALIDATE_SECONDS: '4',
  DB_STATEMENT_TIMEOUT_MS: '1000',
  DB_CONNECT_TIMEOUT_MS: '1000',
  LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS: '0',
}

function startOrigin(env: Record<string, string>): Promise<{ child: ChildProcess; address: string }> {
  const child = fork(fileURLToPath(new URL('./origin-server.ts', import.meta.url)), [], { env: { ...process.env, ...ORIGIN_ENV, ...env }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  return new Promise((resolve, reject) => {
    child.once('message', (m) => resolve({ child, address: (m as { address: string }).address }))
    child.once('exit', (code) => reject(new Error(`origin exited with ${code}`)))
  })
}

// The first instance migrates and seeds; the second starts on the seeded database.
const a = await startOrigin({ MIGRATE_ON_START: 'true', SEED_DEMO: 'true' })
const b = await startOrigin({ MIGRATE_ON_START: 'false', SEED_DEMO: 'false' })

// 100 warm keys: 50 pages of the demo index in two segments, each fetched once from each instance.
const indexHtml = await (await fetch(`${a.address}/`)).text()
const paths = [...new Set([...indexHtml.matchAll(/href="(\/[a-z0-9-]+\/[a-z0-9-]+\/[a-z0-9-]+)"/g)].map((m) => m[1]!))].slice(0, 50)
const keys = paths.flatMap((path) => SEGMENTS.map((segment) => ({ path, segment })))
for (const origin of [a, b]) {
  for (const { path, segment } of keys) {
    const res = await fetch(`${origin.address}${path}`, { headers: { 'x-segment': segment } })
    await res.arrayBuffer()
    if (res.status !== 200) throw new Error(`warming ${path} (${segment}): HTTP ${res.status}`)
  }
}

interface Phase {
  name: string
  seconds: number
  begin?: () => unknown
}
const pgPid = embeddedPostgresPid()
if (pgPid === undefined) throw new Error('the embedded PostgreSQL process was not found')
const phases: Phase[] = [
  { name: 'healthy', seconds: 6 },
  { name: 'Redis killed', seconds: 6, begin: () => redis.kill() },
  { name: 'Redis restarted', seconds: 6, begin: () => redis.start() },
  { name: 'Redis paused (SIGSTOP)', seconds: 5, begin: () => redis.pause() },
  { name: 'Redis resumed', seconds: 5, begin: () => redis.resume() },
  { name: 'PostgreSQL paused (SIGSTOP)', seconds: 14, begin: () => process.kill(pgPid, 'SIGSTOP') },
  { name: 'PostgreSQL resumed', seconds: 6, begin: () => process.kill(pgPid, 'SIGCONT') },
]

interface Tally {
  requests: number
  byStatus: Map<number, number>
  byCache: Map<string, number>
  latencies: number[]
}
const tallies = phases.map((): Tally => ({ requests: 0, byStatus: new Map(), byCache: new Map(), latencies: [] }))
let current = 0
const bump = <K>(map: Map<K, number>, key: K) => map.set(key, (map.get(key) ?? 0) + 1)

function drive(address: string): Promise<autocannon.Result> {
  let next = 0
  let finish: (result: autocannon.Result) => void = () => undefined
  const done = new Promise<autocannon.Result>((resolve) => (finish = resolve))
  const instance = autocannon({
    url: address,
    connections: CONNECTIONS_PER_INSTANCE,
    duration: phases.reduce((sum, p) => sum + p.seconds, 0) + 1,
    // A response slower than this counts as an error (autocannon's timeout), never as silently waiting.
    timeout: 10,
    requests: [
      {
        setupRequest: (request: autocannon.Request) => {
          const key = keys[next++ % keys.length]!
          return { ...request, path: key.path, headers: { 'x-segment': key.segment } }
        },
        onResponse: (status: number, _body: string, _context: object, headers?: IncomingHttpHeaders) => {
          const tally = tallies[current]!
          bump(tally.byCache, `${status} ${String(headers?.['x-cache'] ?? '-')}`)
        },
      },
    ],
  }, (err, result) => {
    if (err !== null && err !== undefined) throw err
    finish(result)
  })
  instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
    const tally = tallies[current]!
    tally.requests++
    bump(tally.byStatus, statusCode)
    tally.latencies.push(responseTime)
  })
  instance.on('reqError', () => {
    const tally = tallies[current]!
    tally.requests++
    bump(tally.byStatus, 0)
  })
  return done
}

const runs = [drive(a.address), drive(b.address)]
for (const [n, phase] of phases.entries()) {
  current = n
  await phase.begin?.()
  process.stderr.write(`${phase.name} (${phase.seconds} s)\n`)
  await sleep(phase.seconds * 1000)
}
const results = await Promise.all(runs)
current = phases.length - 1

const percentile = (values: number[], p: number): number => {
  if (values.length === 0) return 0
  const sorted = [...values].sort((x, y) => x - y)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}
const format = (map: Map<string | number, number>) =>
  [...map.entries()]
    .sort((x, y) => y[1] - x[1])
    .map(([k, v]) => `${k === 0 ? 'error/timeout' : k}: ${v}`)
    .join(', ')
const rows = phases.map((phase, n) => {
  const t = tallies[n]!
  const failed = [...t.byStatus.entries()].filter(([status]) => status === 0 || status >= 500).reduce((sum, [, v]) => sum + v, 0)
  return `| ${phase.name} | ${phase.seconds} | ${t.requests} | **${failed}** | ${percentile(t.latencies, 50).toFixed(1)} | ${percentile(t.latencies, 99).toFixed(1)} | ${t.latencies.reduce((m, v) => Math.max(m, v), 0).toFixed(0)} | ${format(t.byCache)} |`
})
const totalFailed = tallies.reduce((sum, t) => sum + [...t.byStatus.entries()].filter(([s]) => s === 0 || s >= 500).reduce((x, [, v]) => x + v, 0), 0)
const totalRequests = tallies.reduce((sum, t) => sum + t.requests, 0)
const timeouts = results.reduce((sum, r) => sum + r.timeouts, 0)

const section = `${START}
## Faults under load (warm keys)

\`npm run bench:faults\` (${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores): two origin instances sharing a private redis-server
and an embedded PostgreSQL, ${CONNECTIONS_PER_INSTANCE} autocannon connections on each, going round ${keys.length} warm keys
(${paths.length} demo pages x ${SEGMENTS.join(', ')}). L1_TTL_SECONDS=2, ORIGIN_FRESH_SECONDS=6,
STALE_WHILE_REVALIDATE_SECONDS=4, DB_STATEMENT_TIMEOUT_MS=1000, so during the run warm entries expire
from L1, are read from L2, go stale and, with PostgreSQL paused, are served by stale-if-error.

| phase | s | requests | 5xx or error | p50 ms | p99 ms | max ms | status and X-Cache |
|---|---|---|---|---|---|---|---|
${rows.join('\n')}

${totalRequests} requests, **${totalFailed}** answered 5xx or not at all (autocannon timeouts: ${timeouts}; the bar: 0 on warm keys).
A request is counted in the phase during which its answer arrived.
${END}`

const previous = existsSync(RESULTS) ? readFileSync(RESULTS, 'utf8') : ''
const at = previous.indexOf(START)
const updated = at === -1 ? `${previous.trimEnd()}\n\n${section}\n` : `${previous.slice(0, at)}${section}${previous.slice(previous.indexOf(END) + END.length)}`
writeFileSync(RESULTS, updated)
process.stdout.write(`${section}\n`)

for (const origin of [a, b]) origin.child.disconnect()
await sleep(500)
for (const cleanup of cleanups) await cleanup()
await database.stop()
process.exit(totalFailed === 0 ? 0 : 1)
