// What the access log costs an L1 hit: `node server.ts` pinned to core 0 with its stdout to a file,
// wrk pinned to core 1, one server per logging setting, the settings measured in turn over several
// rounds (the order rotates each round), medians reported. Bounded: ROUNDS x 4 settings x DURATION s.
//
//   node bench/log-cost.ts            (LOG_COST_ROUNDS=5, LOG_COST_DURATION=5, LOG_COST_CONNECTIONS=50)
//
// Needs wrk and taskset. REDIS_URL=off: an L1 hit never reads Redis, so Redis would only add noise.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from '../test/support/net.ts'
import { until } from '../test/support/until.ts'
import { cpuMs, median } from './measure.ts'

const ROUNDS = Number(process.env.LOG_COST_ROUNDS ?? 5)
const DURATION = Number(process.env.LOG_COST_DURATION ?? 5)
const CONNECTIONS = Number(process.env.LOG_COST_CONNECTIONS ?? 50)
const PAGE = '/crm/dentists/austin'
const serverEntry = fileURLToPath(new URL('../server.ts', import.meta.url))

const SETTINGS: Array<{ name: string; env: Record<string, string> }> = [
  { name: 'every hit logged, async buffer (default: ACCESS_LOG_HITS=all, LOG_BUFFER_BYTES=4096)', env: {} },
  { name: 'every hit logged, synchronous (LOG_BUFFER_BYTES=0)', env: { LOG_BUFFER_BYTES: '0' } },
  { name: 'hits not logged (ACCESS_LOG_HITS=off)', env: { ACCESS_LOG_HITS: 'off' } },
  { name: 'no request lines (LOG_LEVEL=warn)', env: { LOG_LEVEL: 'warn' } },
]

interface Server {
  name: string
  child: ChildProcess
  url: string
  logFile: string
  rounds: Array<{ rps: number; p99Ms: number; cpuUs: number; logBytesPerRequest: number; errors: number }>
}

const dir = mkdtempSync(path.join(tmpdir(), 'vo-log-cost-'))

async function startServer(name: string, env: Record<string, string>, index: number): Promise<Server> {
  const port = await freePort()
  const logFile = path.join(dir, `server-${index}.log`)
  const out = openSync(logFile, 'w')
  const child = spawn('taskset', ['-c', '0', process.execPath, serverEntry], {
    env: { ...process.env, PORT: String(port), DATA_DIR: 'memory://', REDIS_URL: 'off', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', out, 'inherit'],
  })
  closeSync(out)
  const url = `http://127.0.0.1:${port}`
  await until(`${name} to be ready`, async () => {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}`)
    const res = await fetch(`${url}/health/ready`).catch(() => undefined)
    await res?.arrayBuffer()
    return res?.status === 200
  }, { timeoutMs: 120_000, intervalMs: 250 })
  const warm = await fetch(`${url}${PAGE}`)
  await warm.arrayBuffer()
  const hit = await fetch(`${url}${PAGE}`)
  await hit.arrayBuffer()
  if (hit.headers.get('x-cache') !== 'HIT-L1') throw new Error(`${name}: expected an L1 hit, got ${hit.headers.get('x-cache')}`)
  return { name, child, url, logFile, rounds: [] }
}

function wrk(url: string): { requests: number; rps: number; p99Ms: number; errors: number } {
  const result = spawnSync('taskset', ['-c', '1', 'wrk', '-t1', `-c${CONNECTIONS}`, `-d${DURATION}s`, '--latency', `${url}${PAGE}`], { encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`wrk failed: ${result.stderr}`)
  const text = result.stdout
  const requests = Number(/(\d+) requests in/.exec(text)?.[1])
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1])
  const p99 = /99%\s+([\d.]+)(us|ms|s)/.exec(text)
  const p99Ms = p99 === null ? Number.NaN : Number(p99[1]) * (p99[2] === 'us' ? 0.001 : p99[2] === 's' ? 1000 : 1)
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0)
  const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text)
  const errors = non2xx + (socketErrors === null ? 0 : socketErrors.slice(1).reduce((sum, n) => sum + Number(n), 0))
  return { requests, rps, p99Ms, errors }
}

const servers: Server[] = []
try {
  // One server per setting, started one after the other (each runs its own embedded PostgreSQL).
  for (const [i, setting] of SETTINGS.entries()) servers.push(await startServer(setting.name, setting.env, i))
  for (let round = 0; round < ROUNDS; round++) {
    for (let k = 0; k < servers.length; k++) {
      const server = servers[(k + round) % servers.length]!
      const bytesBefore = statSync(server.logFile).size
      const cpuBefore = cpuMs(server.child.pid!)
      const { requests, rps, p99Ms, errors } = wrk(server.url)
      const cpuUs = ((cpuMs(server.child.pid!) - cpuBefore) * 1000) / Math.max(1, requests)
      // The buffered lines reach the file within a second (the periodic flush).
      await new Promise((resolve) => setTimeout(resolve, 1_200))
      const logBytesPerRequest = (statSync(server.logFile).size - bytesBefore) / Math.max(1, requests)
      server.rounds.push({ rps, p99Ms, cpuUs, logBytesPerRequest, errors })
      process.stderr.write(`round ${round + 1}: ${server.name}: ${Math.round(rps)} req/s, p99 ${p99Ms} ms, ${cpuUs.toFixed(1)} us CPU/request\n`)
    }
  }
} finally {
  for (const server of servers) server.child.kill('SIGTERM')
  await Promise.all(servers.map((s) => (s.child.exitCode === null ? new Promise((resolve) => s.child.once('exit', resolve)) : undefined)))
  rmSync(dir, { recursive: true, force: true })
}

console.log(`L1 hit on ${PAGE}: wrk -t1 -c${CONNECTIONS} -d${DURATION}s on core 1, node server.ts on core 0 (stdout to a file, REDIS_URL=off), ${ROUNDS} interleaved rounds, medians [every round]`)
console.log('| setting | req/s | CPU us/request | p99 ms | log bytes/request | errors |')
console.log('|---|---|---|---|---|---|')
for (const server of servers) {
  const col = (pick: (r: Server['rounds'][number]) => number, digits: number) => `${median(server.rounds.map(pick)).toFixed(digits)} [${server.rounds.map((r) => pick(r).toFixed(digits)).join(', ')}]`
  console.log(`| ${server.name} | ${col((r) => r.rps, 0)} | ${col((r) => r.cpuUs, 1)} | ${median(server.rounds.map((r) => r.p99Ms)).toFixed(2)} | ${median(server.rounds.map((r) => r.logBytesPerRequest)).toFixed(0)} | ${server.rounds.reduce((s, r) => s + r.errors, 0)} |`)
}
