// Slow clients (issue 12 item 8): a client sending its headers a byte at a time (slowloris) is cut
// HEADERS_TIMEOUT_MS after it connected, within one CONNECTIONS_CHECK_INTERVAL_MS (Node's default
// interval, 30 s, let such sockets live 40 s and more); a body that is slow but whose headers arrived is
// not cut by that timeout, only by REQUEST_TIMEOUT_MS. Real sockets; short timeouts keep the test short.

import net from 'node:net'
import t from 'tap'
import { buildTestApp } from '../helper.ts'
import { loadConfig } from '../../src/config.ts'

const token = 'slow-clients-admin-token-0123456789'
const app = await buildTestApp(t, { REDIS_URL: 'off', ADMIN_TOKEN: token, HEADERS_TIMEOUT_MS: '1000', REQUEST_TIMEOUT_MS: '5000', CONNECTIONS_CHECK_INTERVAL_MS: '200' })
const base = new URL(await app.listen({ port: 0, host: '127.0.0.1' }))

/**
 * Connects, writes `head` at once, then `trickle` one byte every `everyMs`, and reports what came back
 * and when the server closed the connection (ms after connecting).
 */
function trickle(head: string, slow: string, everyMs: number): Promise<{ response: string; closedAfterMs: number; bytesSent: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    const socket = net.connect(Number(base.port), base.hostname)
    let response = ''
    let sent = 0
    let timer: NodeJS.Timeout | undefined
    socket.on('connect', () => {
      socket.write(head)
      timer = setInterval(() => {
        if (sent >= slow.length || socket.destroyed) return clearInterval(timer)
        socket.write(slow[sent++]!)
      }, everyMs)
    })
    socket.on('data', (chunk) => (response += chunk.toString('latin1')))
    socket.on('error', () => undefined) // a reset after the server gave up: the close below reports it
    socket.on('close', () => {
      clearInterval(timer)
      resolve({ response, closedAfterMs: Date.now() - started, bytesSent: sent })
    })
    setTimeout(() => {
      socket.destroy()
      reject(new Error(`the connection was still open after 20 s (${sent} bytes trickled)`))
    }, 20_000).unref()
  })
}

t.test('the defaults close a slowloris connection within ~15 s', async (t) => {
  const { headersTimeoutMs, connectionsCheckIntervalMs, requestTimeoutMs } = loadConfig({})
  t.ok(headersTimeoutMs + connectionsCheckIntervalMs <= 15_000, `headers timeout ${headersTimeoutMs} ms + check interval ${connectionsCheckIntervalMs} ms`)
  t.ok(requestTimeoutMs >= 60_000, `a body may take ${requestTimeoutMs} ms (admin batches of up to 64 MiB)`)
  t.equal(app.server.headersTimeout, 1000, 'the configured values reach the server')
  t.equal(app.server.requestTimeout, 5000)
})

t.test('headers a byte at a time are cut after the headers timeout; a slow body is not', async (t) => {
  const body = JSON.stringify({ paths: ['/crm'] })
  const postHead = (length: number) =>
    `POST /admin/purge HTTP/1.1\r\nHost: ${base.host}\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\nConnection: close\r\n\r\n`
  const [loris1, loris2, loris3, slowBody, tooSlowBody] = await Promise.all([
    // A request line that never ends, and headers that never end (two ways of holding a socket).
    trickle('', `GET /crm/dentists/austin HTTP/1.1\r\nHost: ${base.host}\r\n${'X-Slow: a\r\n'.repeat(10)}`, 100),
    trickle(`GET / HTTP/1.1\r\nHost: ${base.host}\r\n`, 'X-Loris: ' + 'a'.repeat(100), 100),
    trickle(`GET / HTTP/1.1\r\nHost: ${base.host}\r\nX-Loris: `, 'b'.repeat(100), 250),
    // The admin API's upload: headers at once, then the body over ~2.6 s (past the 1 s headers timeout).
    trickle(postHead(body.length), body, Math.ceil(2_600 / body.length)),
    // A body still arriving after the 5 s request timeout is cut by that.
    trickle(postHead(body.length + 100), body + ' '.repeat(100), 100),
  ])
  for (const [name, loris] of [['request line', loris1], ['headers', loris2], ['header value', loris3]] as const) {
    t.ok(loris.closedAfterMs >= 900 && loris.closedAfterMs < 3_000, `${name}: closed after ${loris.closedAfterMs} ms (headers timeout 1 s, checked every 0.2 s)`)
    t.match(loris.response, /^HTTP\/1\.1 408 /, `${name}: 408`)
  }
  t.match(slowBody.response, /^HTTP\/1\.1 202 /, `the slow upload was served (${slowBody.bytesSent} bytes over ${slowBody.closedAfterMs} ms)`)
  t.ok(slowBody.closedAfterMs > 2_000, 'it took longer than the headers timeout')
  t.match(tooSlowBody.response, /^HTTP\/1\.1 408 /, 'past the request timeout: 408')
  t.ok(tooSlowBody.closedAfterMs >= 4_900 && tooSlowBody.closedAfterMs < 7_000, `cut after ${tooSlowBody.closedAfterMs} ms (request timeout 5 s)`)
  t.ok(tooSlowBody.bytesSent < body.length + 100, 'before its body was complete')
})
