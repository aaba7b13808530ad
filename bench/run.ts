// `npm run bench`: the hit path of the service as it ships, against bare Fastify on the same Node.
// The origin is started exactly as an operator starts it, `npm start` with PORT and a fresh DATA_DIR and
// nothing else (log level info, one JSON access line per request to stdout, here a file; Redis at its
// default address). It is pinned to core 0 and wrk to core 1 (taskset), and every baseline runs on core
// 0 too. Each round measures every side once, in an order that reverses every round; the ratios are
// taken within a round and the report gives their medians. Results go to bench/RESULTS.md.
// Bounded: ROUNDS x 13 measurements x DURATION seconds (default 5 x 13 x 5 s = 325 s), plus start-up
// and the stampedes. Cold misses on a real PostgreSQL are `npm run bench:cold`.

import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { get as httpGet } from 'node:http'
import net from 'node:net'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { deleteKeysWithPrefix } from '../test/support/redis-keys.ts'
import { freePort } from '../test/support/net.ts'
import { cpuMs, median } from './measure.ts'

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
const DURATION = Number(process.env.BENCH_DURATION ?? 5)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const PAGE = '/crm/dentists/austin'
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const HERE = fileURLToPath(new URL('.', import.meta.url))
/** Origin and baselines on one core, the load generator on another, when the machine has two. */
const PINNED = cpus().length >= 2
const SERVER_CORE = '0'
const LOAD_CORE = '1'
const pinned = (core: string, command: string, args: string[]): [string, string[]] => (PINNED ? ['taskset', ['-c', core, command, ...args]] : [command, args])

if (spawnSync('wrk', ['--version']).error !== undefined) {
  process.stderr.write('bench: wrk is not installed (Debian: apt-get install wrk); it is the load generator, pinned to its own core\n')
  process.exit(2)
}

const cleanups: Array<() => unknown> = []
const scratch = mkdtempSync(join(tmpdir(), 'vo-bench-'))
cleanups.push(() => rmSync(scratch, { recursive: true, force: true }))

/** The environment an operator's shell would give `npm start`: nothing of this script's own. */
const shellEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? scratch }

interface Origin {
  url: string
  /** The node process that serves (npm's grandchild), for its CPU time. */
  pid: number
  logFile: string
}

/** The node process serving `port` (npm -> sh -> node): found by its command line and its PORT. */
function serverPid(port: number): number | undefined {
  const read = (pid: string, file: string): string => {
    try {
      return readFileSync(`/proc/${pid}/${file}`, 'utf8')
    } catch {
      return ''
    }
  }
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    // The node process itself, not the shell npm runs it through (whose command line names it too).
    const argv = read(pid, 'cmdline').split('\0')
    if (!/(^|\/)node$/.test(argv[0] ?? '') || !argv.some((arg) => /\bserver\.ts$/.test(arg))) continue
    if (read(pid, 'environ').split('\0').includes(`PORT=${port}`)) return Number(pid)
  }
  return undefined
}

/** `npm start` as an operator runs it: PORT and DATA_DIR, plus `extra` (stated in the report) for the L2 origin. */
async function startOrigin(name: string, extra: Record<string, string> = {}): Promise<Origin> {
  const port = await freePort()
  const logFile = join(scratch, `${name}.log`)
  const out = openSync(logFile, 'w')
  const [command, args] = pinned(SERVER_CORE, 'npm', ['start', '--silent'])
  const child = spawn(command, args, { cwd: ROOT, env: { ...shellEnv, PORT: String(port), DATA_DIR: join(scratch, `${name}-data`), ...extra }, stdio: ['ignore', out, 'inherit'], detached: true })
  cleanups.push(() => {
    try {
      process.kill(-child.pid!, 'SIGTERM')
    } catch {
      // already gone
    }
  })
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 300_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name}: npm start exited with ${child.exitCode} (log: ${readFileSync(logFile, 'utf8').slice(-2000)})`)
    try {
      if ((await fetch(`${url}/health/ready`)).ok) break
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${name}: not ready after 300 s`)
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  const pid = serverPid(port)
  if (pid === undefined) throw new Error(`${name}: no node server.ts process under npm (pid ${child.pid})`)
  return { url, pid, logFile }
}

function startBare(env: Record<string, string>, script = 'bare-server.ts'): Promise<{ url: string; pid: number; etag: string }> {
  // Forked with the Node running this script (npm puts Node 24 first on the PATH), then pinned by pid.
  const child: ChildProcess = fork(join(HERE, script), [], { env: { ...shellEnv, ...env }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  cleanups.push(() => child.connected && child.disconnect())
  if (PINNED) spawnSync('taskset', ['-p', '-c', SERVER_CORE, String(child.pid)])
  return new Promise((resolve, reject) => {
    child.once('message', (m) => resolve({ url: (m as { address: string }).address, pid: child.pid!, etag: (m as { etag: string }).etag }))
    child.once('exit', (code) => reject(new Error(`bare-server exited with ${code}`)))
  })
}

const toMs = (value: string): number => {
  const m = /^([\d.]+)(us|ms|s)$/.exec(value)
  if (m === null) return Number.NaN
  return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1)
}

interface Sample {
  rps: number
  p99: number
  errors: number
  cpuUs: number
}

/** wrk on its own core against `url`; the server's CPU time per request from /proc. */
function measure(url: string, headers: Record<string, string>, pid: number, script?: string): Sample {
  const cpuBefore = cpuMs(pid)
  const [command, args] = pinned(LOAD_CORE, 'wrk', ['-t1', `-c${CONNECTIONS}`, `-d${DURATION}s`, '--latency', ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), ...(script === undefined ? [] : ['-s', script]), url])
  const run = spawnSync(command, args, { encoding: 'utf8', timeout: (DURATION + 30) * 1000 })
  if (run.status !== 0) throw new Error(`wrk failed: ${run.stderr || run.stdout}`)
  const out = run.stdout
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0)
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0)
  const p99 = toMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? '')
  const errors = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0) + Number(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)?.slice(1).reduce((a, b) => a + Number(b), 0) ?? 0)
  return { rps, p99, errors, cpuUs: ((cpuMs(pid) - cpuBefore) * 1000) / Math.max(1, requests) }
}

/** Bytes on the wire for one answer (status line, headers, body), read off a raw socket. */
function wireBytes(url: string, path: string, headers: Record<string, string>): Promise<{ total: number; body: number; encoding: string }> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname)
    const chunks: Buffer[] = []
    socket.on('data', (chunk) => chunks.push(chunk))
    socket.on('error', reject)
    socket.on('end', () => {
      const raw = Buffer.concat(chunks)
      const split = raw.indexOf('\r\n\r\n')
      const head = raw.subarray(0, split).toString('latin1')
      resolve({ total: raw.length, body: raw.length - split - 4, encoding: /\r\ncontent-encoding: *(\S+)/i.exec(head)?.[1] ?? 'identity' })
    })
    socket.end(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}Connection: close\r\n\r\n`)
  })
}

try {
  const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/12'
  const prefix = `vo-bench-${process.pid}:`
  cleanups.push(() => deleteKeysWithPrefix(REDIS_URL, prefix))
  process.stderr.write('bench: starting the origin with npm start (embedded PostgreSQL, demo data)...\n')
  const origin = await startOrigin('origin')
  // L2 hit: L1 never fresh (L1_TTL_SECONDS=0), so every request reads Redis.
  const l2 = await startOrigin('l2', { REDIS_URL, REDIS_KEY_PREFIX: prefix, L1_TTL_SECONDS: '0' })

  const identity = await fetch(`${origin.url}${PAGE}`, { headers: { 'accept-encoding': 'identity' } })
  const body = Buffer.from(await identity.arrayBuffer())
  const originHeaders = Object.fromEntries([...identity.headers].filter(([name]) => !['date', 'connection', 'keep-alive', 'content-length', 'transfer-encoding'].includes(name)))
  const brReply = await new Promise<Buffer>((resolve, reject) => {
    const { hostname, port } = new URL(origin.url)
    httpGet({ hostname, port, path: PAGE, headers: { 'accept-encoding': 'br' } }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c)).on('end', () => resolve(Buffer.concat(chunks)))
    }).on('error', reject)
  })
  const originEtag = originHeaders.etag!
  await (await fetch(`${l2.url}${PAGE}`)).arrayBuffer()
  // Distinct keys for the L2 read without coalescing: the pages the demo index links, each fetched once so Redis holds it.
  const indexHtml = await (await fetch(`${l2.url}/`)).text()
  const indexPaths = [...new Set([...indexHtml.matchAll(/href="(\/[a-z0-9-]+\/[a-z0-9-]+\/[a-z0-9-]+)"/g)].map((m) => m[1]!))]
  for (const path of indexPaths) await (await fetch(`${l2.url}${path}`)).arrayBuffer()
  const rotate = join(scratch, 'rotate.lua')
  writeFileSync(rotate, `local paths = {${indexPaths.map((p) => JSON.stringify(p)).join(', ')}}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format("GET", paths[(i % #paths) + 1])\nend\n`)

  const bareOwn = await startBare({ BARE_BODY_B64: body.toString('base64'), BARE_BR_B64: brReply.toString('base64') })
  const bareOrigin = await startBare({ BARE_BODY_B64: body.toString('base64'), BARE_HEADERS_JSON: JSON.stringify(originHeaders) })
  const raw = await startBare({ BARE_BODY_B64: body.toString('base64'), BARE_HEADERS_JSON: JSON.stringify(originHeaders) }, 'raw-server.ts')

  type Side = { url: string; headers: Record<string, string>; pid: number; script?: string }
  const sides: Record<string, Side> = {
    originL1: { url: `${origin.url}${PAGE}`, headers: {}, pid: origin.pid },
    originL1Coded: { url: `${origin.url}${PAGE}`, headers: { 'accept-encoding': 'br, gzip' }, pid: origin.pid },
    origin304: { url: `${origin.url}${PAGE}`, headers: { 'if-none-match': originEtag }, pid: origin.pid },
    originL2: { url: `${l2.url}${PAGE}`, headers: {}, pid: l2.pid },
    originL2Keys: { url: l2.url, headers: {}, pid: l2.pid, script: rotate },
    bareOwn: { url: `${bareOwn.url}${PAGE}`, headers: {}, pid: bareOwn.pid },
    bareOwnCoded: { url: `${bareOwn.url}${PAGE}`, headers: { 'accept-encoding': 'br, gzip' }, pid: bareOwn.pid },
    bareOwn304: { url: `${bareOwn.url}${PAGE}`, headers: { 'if-none-match': bareOwn.etag }, pid: bareOwn.pid },
    bareOwnKeys: { url: bareOwn.url, headers: {}, pid: bareOwn.pid, script: rotate },
    bareOrigin: { url: `${bareOrigin.url}${PAGE}`, headers: {}, pid: bareOrigin.pid },
    bareOrigin304: { url: `${bareOrigin.url}${PAGE}`, headers: { 'if-none-match': bareOrigin.etag }, pid: bareOrigin.pid },
    raw: { url: `${raw.url}${PAGE}`, headers: {}, pid: raw.pid },
    raw304: { url: `${raw.url}${PAGE}`, headers: { 'if-none-match': raw.etag }, pid: raw.pid },
  }
  /** bar undefined: shown for what it tells, not judged. */
  const scenarios: Array<{ name: string; origin: string; bare: string; baseline: string; bar: number | undefined }> = [
    { name: 'L1 hit (200, identity)', origin: 'originL1', bare: 'bareOwn', baseline: 'own headers', bar: 1.0 },
    { name: 'L1 hit (200, identity)', origin: 'originL1', bare: 'bareOrigin', baseline: "the origin's headers", bar: undefined },
    { name: 'L1 hit, Accept-Encoding: br, gzip (br bytes)', origin: 'originL1Coded', bare: 'bareOwnCoded', baseline: 'own headers, same br bytes', bar: undefined },
    { name: 'floor: raw node:http, stored headers and bytes, nothing else', origin: 'raw', bare: 'bareOwn', baseline: 'own headers', bar: undefined },
    { name: '304 revalidation', origin: 'origin304', bare: 'bareOwn304', baseline: "own headers, its own 304", bar: 1.0 },
    { name: '304 revalidation', origin: 'origin304', bare: 'bareOrigin304', baseline: "the origin's headers, its own 304", bar: undefined },
    { name: 'floor: raw node:http 304, nothing else', origin: 'raw304', bare: 'bareOwn304', baseline: 'own headers, its own 304', bar: undefined },
    { name: 'L2 hit (L1 off, Redis), one page', origin: 'originL2', bare: 'bareOwn', baseline: 'own headers', bar: 0.65 },
    { name: `L2 hit (L1 off, Redis), ${indexPaths.length} keys in turn`, origin: 'originL2Keys', bare: 'bareOwnKeys', baseline: 'own headers', bar: undefined },
  ]

  const names = Object.keys(sides)
  const samples = new Map<string, Sample[]>(names.map((name) => [name, []]))
  const logBytesBefore = statSync(origin.logFile).size
  let originRequests = 0
  for (let round = 1; round <= ROUNDS; round++) {
    // The order reverses every round, so drift on a shared machine does not favour one side.
    for (const name of round % 2 === 0 ? [...names].reverse() : names) {
      const side = sides[name]!
      const sample = measure(side.url, side.headers, side.pid, side.script)
      samples.get(name)!.push(sample)
      if (name.startsWith('originL1') || name === 'origin304') originRequests += sample.rps * DURATION
      process.stderr.write(`round ${round} ${name}: ${sample.rps.toFixed(0)} req/s, p99 ${sample.p99} ms, ${sample.cpuUs.toFixed(1)} us CPU/request${sample.errors > 0 ? `, ${sample.errors} errors` : ''}\n`)
    }
  }
  const logBytes = statSync(origin.logFile).size - logBytesBefore

  const rows = scenarios.map((s) => {
    const o = samples.get(s.origin)!
    const b = samples.get(s.bare)!
    const ratios = o.map((sample, i) => sample.rps / b[i]!.rps)
    const ratio = median(ratios)
    const verdict = s.bar === undefined ? '(no bar)' : `>= ${s.bar.toFixed(2)} ${ratio >= s.bar ? '**met**' : '**NOT met**'}`
    return `| ${s.name} | ${s.baseline} | ${median(o.map((x) => x.rps)).toFixed(0)} | ${median(b.map((x) => x.rps)).toFixed(0)} | **${ratio.toFixed(3)}** (${ratios.map((r) => r.toFixed(2)).join(', ')}) | ${median(o.map((x) => x.p99)).toFixed(2)} / ${median(b.map((x) => x.p99)).toFixed(2)} | ${median(o.map((x) => x.cpuUs)).toFixed(1)} / ${median(b.map((x) => x.cpuUs)).toFixed(1)} | ${o.reduce((n, x) => n + x.errors, 0)} | ${verdict} |`
  })

  // Bytes per hit by coding, as the CDN's fetch puts them on the wire.
  const byteRows: string[] = []
  for (const acceptEncoding of ['', 'gzip', 'br, gzip']) {
    const originBytes = await wireBytes(origin.url, PAGE, acceptEncoding === '' ? {} : { 'accept-encoding': acceptEncoding })
    const bareBytes = await wireBytes(bareOwn.url, PAGE, acceptEncoding === '' ? {} : { 'accept-encoding': acceptEncoding })
    byteRows.push(`| ${acceptEncoding === '' ? '(none)' : acceptEncoding} | ${originBytes.encoding} | ${originBytes.body} | ${originBytes.total} | ${(originBytes.total / (await wireBytes(origin.url, PAGE, {})).total).toFixed(2)} | ${bareBytes.total} |`)
  }

  // Stampede: 500 concurrent requests on one cold key, split over two instances sharing Redis and the
  // database; renders are counted by the instances themselves.
  const stampedeStart = (env: Record<string, string>): Promise<{ child: ChildProcess; address: string; databaseUrl: string }> => {
    const child = fork(join(HERE, 'origin-server.ts'), [], { env: { ...shellEnv, ...env }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
    cleanups.push(() => child.connected && child.disconnect())
    return new Promise((resolve, reject) => {
      child.once('message', (m) => resolve({ child, ...(m as { address: string; databaseUrl: string }) }))
      child.once('exit', (code) => reject(new Error(`origin-server exited with ${code}`)))
    })
  }
  const renders = (child: ChildProcess): Promise<number> => {
    child.send('stats')
    return new Promise((resolve) => child.once('message', (m) => resolve((m as { renders: number }).renders)))
  }
  const stampedeA = await stampedeStart({ DATA_DIR: 'memory://', REDIS_URL, REDIS_KEY_PREFIX: `${prefix}stampede:` })
  const stampedeB = await stampedeStart({ DATABASE_URL: stampedeA.databaseUrl, DB_POOL_MAX: '1', REDIS_URL, REDIS_KEY_PREFIX: `${prefix}stampede:` })
  const stampedeRows: string[] = []
  for (const cold of ['/helpdesk/gyms/miami', '/crm/schools/denver', '/payroll/clinics/dallas']) {
    const [beforeA, beforeB] = [await renders(stampedeA.child), await renders(stampedeB.child)]
    const statuses = await Promise.all(Array.from({ length: 500 }, (_, i) => fetch(`${(i % 2 === 0 ? stampedeA : stampedeB).address}${cold}`).then(async (r) => (await r.arrayBuffer(), r.status))))
    const [afterA, afterB] = [await renders(stampedeA.child), await renders(stampedeB.child)]
    stampedeRows.push(`| ${cold} | 500 (250 + 250) | ${statuses.filter((s) => s === 200).length} | ${afterA - beforeA} | ${afterB - beforeB} | ${afterA - beforeA + afterB - beforeB} |`)
  }
  const soloBefore = await renders(stampedeA.child)
  await Promise.all(Array.from({ length: 500 }, () => fetch(`${stampedeA.address}/helpdesk/nonprofits/austin`).then((r) => r.arrayBuffer())))
  const soloRenders = (await renders(stampedeA.child)) - soloBefore

  const report = `# Benchmark results

Written by \`npm run bench\` (bench/run.ts) on ${new Date().toISOString().slice(0, 10)}: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), Node ${process.version}.

**The service as it ships.** The origin is \`npm start\` with \`PORT\` and a fresh \`DATA_DIR\` and nothing else:
embedded PostgreSQL with the demo data, Redis at its default address, \`LOG_LEVEL=info\` with one JSON access
line per request on stdout (here a file, as a container runtime keeps it), every other default. The L2 rows
use a second \`npm start\` with \`L1_TTL_SECONDS=0\` (L1 never fresh), \`REDIS_URL=${REDIS_URL}\` and a key prefix.
${PINNED ? `Origin and baselines are pinned to core ${SERVER_CORE} and the load generator (wrk, 1 thread, ${CONNECTIONS} connections) to core ${LOAD_CORE} with \`taskset\`.` : `One core: origin, baselines and wrk share it (no pinning possible).`}
${ROUNDS} rounds of ${DURATION} s per side; each round measures every side once, in an order that reverses every round;
the ratio is origin req/s over baseline req/s within a round, and the table gives the median with every round's
ratio in brackets. The baselines are bare Fastify (bench/bare-server.ts) on the same Node, on the same core,
answering the same ${body.length}-byte body: **own headers** is what a user would compare with (Fastify's own
minimal headers and an ETag; the stricter baseline, and the one the bars are set against), **the origin's headers**
sends the origin's full header set. The CPU column is each server's own CPU time per request (from /proc), which
does not depend on how the machine's time was shared. The machine is shared and noisy: read the medians.

| scenario | baseline (bare Fastify) | origin req/s | bare req/s | ratio (median, rounds) | p99 ms origin / bare | CPU us/request origin / bare | origin errors | bar |
|---|---|---|---|---|---|---|---|---|
${rows.join('\n')}

The access log: ${(logBytes / Math.max(1, originRequests)).toFixed(0)} bytes per request on average were written to the log file during the L1 and 304 rows
(${(logBytes / 1048576).toFixed(0)} MB for about ${(originRequests / 1e6).toFixed(2)} million requests): every hit logged (\`ACCESS_LOG_HITS=all\`, the default).

## Bytes per hit by coding

One request for \`${PAGE}\`, as the CDN's fetch gets it, counted off the socket (status line, headers, body):

| Accept-Encoding | coding served | body bytes | bytes on the wire | of identity | bare Fastify, same request |
|---|---|---|---|---|---|
${byteRows.join('\n')}

The codings are made once per render (gzip level 6, brotli quality 5) and kept beside the identity bytes: a hit
compresses nothing, so the coded row's throughput above is the same lookup writing fewer bytes.

## Stampede: renders per cold key

One instance, 500 concurrent requests on one cold key: **${soloRenders} render(s)** (bar: 1).

Two instances sharing Redis and the database, 500 concurrent requests on one cold key split between them
(bar: 1 render across both):

| cold key | requests | 200s | renders A | renders B | renders total |
|---|---|---|---|---|---|
${stampedeRows.join('\n')}

Cold misses on a real PostgreSQL with 10,000 variants: \`npm run bench:cold\` (its section below).
bentocache was measured for the L1 hit separately: see bench/bentocache/RESULTS.md.
`
  // The other benchmarks (bench/cold.ts, bench/sitemaps.ts, bench/faults.ts...) write their own sections
  // between <!-- NAME:start --> and <!-- NAME:end --> markers: keep them.
  const resultsPath = join(HERE, 'RESULTS.md')
  const previous = existsSync(resultsPath) ? readFileSync(resultsPath, 'utf8') : ''
  const kept = [...previous.matchAll(/<!-- (\w+):start -->[\s\S]*?<!-- \1:end -->/g)].map((m) => m[0])
  writeFileSync(resultsPath, [report, ...kept].join('\n') + (kept.length > 0 ? '\n' : ''))
  process.stdout.write(report)
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup()
}
process.exit(0)
