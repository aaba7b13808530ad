import autocannon from 'autocannon'
import { fork } from 'node:child_process'
const start = async (entry: string, env: Record<string, string>, dir: string) => {
  const child = fork(entry, [], { env: { ...process.env, ...env }, execArgv: ['--cpu-prof', `--cpu-prof-dir=${dir}`], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  const msg: any = await new Promise((r) => child.once('message', r))
  return { child, address: msg.address as string }
}
const PAGE = '/crm/dentists/austin'
const origin = await start('bench/origin-server.ts', { DATA_DIR: 'memory://', REDIS_URL: 'off', LOG_LEVEL: 'warn' }, '/tmp/prof/o')
const first = await fetch(origin.address + PAGE)
const body = Buffer.from(await first.arrayBuffer())
const headers = Object.fromEntries([...first.headers].filter(([n]) => !['date', 'connection', 'keep-alive', 'content-length', 'transfer-encoding'].includes(n)))
const bare = await start('bench/bare-server.ts', { BARE_BODY_B64: body.toString('base64'), BARE_HEADERS_JSON: JSON.stringify(headers) }, '/tmp/prof/b')
for (const s of [origin, bare]) await autocannon({ url: s.address + PAGE, connections: 50, amount: 100000 })
for (const s of [origin, bare]) { s.child.disconnect(); await new Promise((r) => s.child.once('exit', r)) }
