import autocannon from 'autocannon'
import { fork } from 'node:child_process'
import { readFileSync } from 'node:fs'
const cpu = (pid: number) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' '); return (Number(f[11]) + Number(f[12])) * 10 } // ms
const start = async (entry: string, env: Record<string, string>) => {
  const child = fork(entry, [], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  const msg: any = await new Promise((r) => child.once('message', r))
  return { child, address: msg.address as string }
}
const PAGE = '/crm/dentists/austin'
const origin = await start('bench/origin-server.ts', { DATA_DIR: 'memory://', REDIS_URL: 'off', LOG_LEVEL: 'warn' })
const first = await fetch(origin.address + PAGE)
const body = Buffer.from(await first.arrayBuffer())
const headers = Object.fromEntries([...first.headers].filter(([n]) => !['date', 'connection', 'keep-alive', 'content-length', 'transfer-encoding'].includes(n)))
const bare = await start('bench/bare-server.ts', { BARE_BODY_B64: body.toString('base64'), BARE_HEADERS_JSON: JSON.stringify(headers) })
const N = Number(process.env.N ?? 60000)
for (let round = 0; round < Number(process.env.R ?? 3); round++) {
  for (const [name, s] of [['origin', origin], ['bare', bare]] as const) {
    const before = cpu(s.child.pid!)
    const r = await autocannon({ url: s.address + PAGE, connections: 50, amount: N, headers: process.env.INM ? { 'if-none-match': headers.etag! } : {} })
    const used = cpu(s.child.pid!) - before
    console.log(`${name}: ${(used * 1000 / N).toFixed(1)} us cpu/req, ${r.requests.average.toFixed(0)} rps`)
  }
}
origin.child.disconnect(); bare.child.disconnect()
