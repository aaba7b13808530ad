// The server's log lines are buffered and written asynchronously (LOG_BUFFER_BYTES): none may be lost
// on the way out, whether the server stops on SIGTERM or cannot listen at all.

import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { freePort } from '../support/net.ts'
import { until } from '../support/until.ts'

const serverEntry = fileURLToPath(new URL('../../server.ts', import.meta.url))
const PAGE = '/crm/dentists/austin'

interface Child {
  child: ChildProcess
  stdout: () => string
  exited: Promise<number | null>
}

function spawnServer(port: number, env: Record<string, string> = {}): Child {
  // stdout is a pipe, so the logs are JSON lines through the asynchronous destination (LOG_BUFFER_BYTES's default).
  const child = spawn(process.execPath, [...process.execArgv, serverEntry], {
    env: { ...process.env, PORT: String(port), DATA_DIR: 'memory://', REDIS_URL: 'off', LOG_LEVEL: 'info', LOG_PRETTY: 'auto', TRUST_PROXY: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  child.stdout!.on('data', (chunk) => (stdout += chunk))
  child.stderr!.on('data', (chunk) => process.stderr.write(chunk))
  // 'close', not 'exit': by then every byte the child wrote to stdout has been read.
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)))
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  return { child, stdout: () => stdout, exited }
}

const jsonLines = (text: string): Array<Record<string, unknown>> =>
  text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)

t.test('every request line reaches stdout when the server stops on SIGTERM', async (t) => {
  const port = await freePort()
  // A buffer larger than every line this test logs: only the periodic flush and the close write them.
  const { child, stdout, exited } = spawnServer(port, { LOG_BUFFER_BYTES: '65536' })
  await until(
    `the server on port ${port} to answer /health/ready`,
    async () => {
      if (child.exitCode !== null) throw new Error(`server exited early with ${child.exitCode}: ${stdout()}`)
      try {
        const res = await fetch(`http://127.0.0.1:${port}/health/ready`, { signal: AbortSignal.timeout(5_000) })
        await res.arrayBuffer()
        return res.status === 200
      } catch {
        return false
      }
    },
    { timeoutMs: 60_000, intervalMs: 200 },
  )

  // Misses, hits (answered by the fast path) and 404s, each with its own request id (a trusted proxy's).
  const sent: string[] = []
  const request = async (path: string) => {
    const id = `sigterm-${sent.length}`
    sent.push(id)
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { 'x-request-id': id } })
    await res.arrayBuffer()
    return res
  }
  const logged = (text: string) => new Set(jsonLines(text).filter((l) => l.msg === 'request').map((l) => l.reqId))
  // However quiet the server, a line is written within about a second (the periodic flush).
  await request(PAGE)
  await until('the first request line on stdout', () => logged(stdout()).has(sent[0]), { timeoutMs: 10_000 })

  for (let i = 0; i < 40; i++) await request(i % 8 === 0 ? `/crm/no-such-page-${i}` : PAGE)
  t.equal((await request(PAGE)).headers.get('x-cache'), 'HIT-L1')
  const before = logged(stdout())
  t.comment(`${sent.filter((id) => before.has(id)).length} of ${sent.length} request lines on stdout before SIGTERM`)

  child.kill('SIGTERM')
  t.equal(await exited, 0, 'exit code 0 after SIGTERM')
  const lines = jsonLines(stdout())
  const after = logged(stdout())
  t.same(sent.filter((id) => !after.has(id)), [], 'no request line lost')
  t.equal(lines.filter((l) => l.msg === 'request').length, sent.length, 'and each written once')
  t.ok(lines.some((l) => l.msg === 'closing'), 'the closing line too')
  t.match(stdout(), /\n$/, 'the last line is complete')
})

t.test('the fatal line reaches stdout when the server cannot listen', async (t) => {
  const port = await freePort()
  const taken = net.createServer()
  await new Promise<void>((resolve) => taken.listen(port, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => taken.close(resolve)))
  const { stdout, exited } = spawnServer(port)
  t.equal(await exited, 1, 'exit code 1')
  const fatal = jsonLines(stdout()).filter((l) => l.msg === 'could not listen')
  t.match(fatal, [{ level: 60, err: { code: 'EADDRINUSE' } }], 'the fatal line with its error')
})
