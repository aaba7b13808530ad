import autocannon from 'autocannon'
import { fork } from 'node:child_process'
const which = process.argv[2] ?? 'origin'
const entry = '/work/main/bench/origin-server.ts'
const env: Record<string,string> = { ...process.env as Record<string,string>, DATA_DIR: 'memory://', REDIS_URL: 'off', LOG_LEVEL: 'warn' }
if (which === 'bare') {
  const res = await fetch('http://127.0.0.1:' + (process.env.ORIGIN_PORT ?? '') )
}
const child = fork(entry, [], { env, execArgv: ['--cpu-prof', '--cpu-prof-dir=/tmp/prof/' + which], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
const msg: any = await new Promise((r) => child.once('message', r))
const url = msg.address + '/crm/dentists/austin'
await fetch(url)
const r = await autocannon({ url, connections: 50, amount: 100000 })
console.log(which, 'rps', r.requests.average)
child.disconnect()
await new Promise((r) => child.once('exit', r))
