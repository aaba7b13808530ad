// The server entry end to end: starts on a fresh data directory, serves the demo site over HTTP,
// shuts down on SIGTERM, and starts again on the same data without reloading the demo.

import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from '../support/net.ts'
import { until } from '../support/until.ts'

const serverEntry = fileURLToPath(new URL('../../server.ts', import.meta.url))
const dataDir = mkdtempSync(path.join(tmpdir(), 'vo-server-test-'))
t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))

async function start(port: number): Promise<{ child: ChildProcess; logs: () => string }> {
  const child = spawn(process.execPath, [...process.execArgv, serverEntry], {
    env: { ...process.env, PORT: String(port), DATA_DIR: dataDir, REDIS_URL: 'off', LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout?.on('data', (chunk) => (output += chunk))
  child.stderr?.on('data', (chunk) => (output += chunk))
  try {
    await until(
      `the server on port ${port} to answer /health/ready with 200`,
      async () => {
        if (child.exitCode !== null) throw new Error(`server exited early with ${child.exitCode}`)
        try {
          const res = await fetch(`http://127.0.0.1:${port}/health/ready`, { signal: AbortSignal.timeout(5_000) })
          await res.arrayBuffer()
          return res.status === 200
        } catch {
          return false // not listening yet
        }
      },
      { timeoutMs: 60_000, intervalMs: 200 },
    )
  } catch (err) {
    child.kill('SIGKILL')
    throw new Error(`${(err as Error).message}: ${output}`)
  }
  return { child, logs: () => output }
}

async function stop(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  child.kill('SIGTERM')
  return exited
}

t.test('first start loads the demo site, serves it, and stops cleanly on SIGTERM', async (t) => {
  const port = await freePort()
  const { child, logs } = await start(port)
  const res = await fetch(`http://127.0.0.1:${port}/crm`, { headers: { 'x-segment': 'smb' } })
  t.equal(res.status, 200)
  t.match(res.headers.get('cache-control'), /^public, max-age=60, s-maxage=\d+, stale-while-revalidate=600, stale-if-error=86400$/)
  t.match(await res.text(), /data-segment="smb"/)
  t.equal(await stop(child), 0, 'exit code 0 after SIGTERM')
  const lines = logs().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string })
  t.ok(lines.some((l) => l.msg === 'demo site loaded into the empty database'), 'the demo loaded on the first start')
  t.ok(lines.some((l) => l.msg === 'closing'), 'graceful close logged')
})

t.test('a restart on the same data keeps the data and does not reload the demo', async (t) => {
  const port = await freePort()
  const { child, logs } = await start(port)
  const res = await fetch(`http://127.0.0.1:${port}/payroll`)
  t.equal(res.status, 200)
  t.equal(await stop(child), 0)
  t.notMatch(logs(), /demo site loaded/)
})
