// `npm run bench:compare -- <treeA> <treeB> [l1|l2|304]`: the same scenario against two checkouts of this
// project (each with its own node_modules), interleaved, to tell whether a change made the origin slower.
// Both origins run at once (bench/origin-server.ts of each tree, its own dependencies), the load goes to
// one at a time, the side that goes first alternates, and the measure is each origin's own CPU time per
// request (from /proc), which does not depend on how much of the shared cores the load generator got.
// Prints the medians and every round, and the ratio B/A (above 1: B costs more per request).
//
//   git worktree add /tmp/before <rev> && (cd /tmp/before && npm ci)
//   npm run bench:compare -- /tmp/before . l1

import autocannon from 'autocannon'
import { fork } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { cpuMs, median } from './measure.ts'

const [treeA, treeB, scenario = 'l1'] = process.argv.slice(2)
if (treeA === undefined || treeB === undefined || !['l1', 'l2', '304'].includes(scenario)) {
  process.stderr.write('usage: npm run bench:compare -- <treeA> <treeB> [l1|l2|304]\n')
  process.exit(2)
}
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 12)
const DURATION = Number(process.env.BENCH_DURATION ?? 3)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 20)
const PAGE = '/crm/dentists/austin'
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/12'

interface Origin {
  name: string
  url: string
  pid: number
  close(): void
}

async function start(name: string, tree: string): Promise<Origin> {
  const dir = resolve(tree)
  // The shipped defaults except what the scenario needs: no Redis for L1 and 304, L1 never fresh for L2.
  const env: Record<string, string> = {
    DATA_DIR: 'memory://',
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
    REDIS_URL: scenario === 'l2' ? REDIS_URL : 'off',
    REDIS_KEY_PREFIX: `vo-compare-${process.pid}-${name}:`,
    ...(scenario === 'l2' ? { L1_TTL_SECONDS: '0' } : {}),
  }
  const child = fork(`${dir}/bench/origin-server.ts`, [], { cwd: dir, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  const message = await new Promise<Record<string, string>>((resolve, reject) => {
    child.once('message', (m) => resolve(m as Record<string, string>))
    child.once('exit', (code) => reject(new Error(`${dir}/bench/origin-server.ts exited with ${code}`)))
  })
  return { name, url: message.address!, pid: child.pid!, close: () => child.disconnect() }
}

const origins = [await start('A', treeA), await start('B', treeB)]
try {
  const headers: Record<string, string> = {}
  for (const origin of origins) for (let i = 0; i < 2; i++) await fetch(origin.url + PAGE) // rendered, then cached
  if (scenario === '304') headers['if-none-match'] = (await fetch(origins[0]!.url + PAGE)).headers.get('etag')!
  const cpu: Record<string, number[]> = { A: [], B: [] }
  const rps: Record<string, number[]> = { A: [], B: [] }
  for (let round = 0; round < ROUNDS; round++) {
    for (const origin of round % 2 === 0 ? origins : [...origins].reverse()) {
      const before = cpuMs(origin.pid)
      const result = await autocannon({ url: origin.url + PAGE, connections: CONNECTIONS, duration: DURATION, headers })
      if (result.non2xx > 0 && scenario !== '304') throw new Error(`${origin.name}: ${result.non2xx} non-2xx answers`)
      cpu[origin.name]!.push(((cpuMs(origin.pid) - before) * 1000) / Math.max(1, result.requests.total))
      rps[origin.name]!.push(result.requests.average)
    }
  }
  for (const [name, tree] of [['A', treeA], ['B', treeB]] as const) {
    process.stdout.write(`${scenario} ${name} ${tree}: CPU us/request median ${median(cpu[name]!).toFixed(1)} (${cpu[name]!.map((v) => v.toFixed(0)).join(', ')}), req/s median ${median(rps[name]!).toFixed(0)}\n`)
  }
  process.stdout.write(`${scenario}: B/A CPU per request ${(median(cpu.B!) / median(cpu.A!)).toFixed(3)}\n`)
} finally {
  for (const origin of origins) origin.close()
}
process.exit(0)
