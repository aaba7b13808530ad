import t from 'tap'
import { buildApp, loggerOptions, serverLogger } from '../../../app.ts'
import { BufferedLogDestination } from '../../../src/log-destination.ts'
import { testConfig } from '../../helper.ts'
import { captureLogLines } from '../../support/log-lines.ts'

t.test('one JSON line per request: request id, route, status, cache result, duration; no secrets', async (t) => {
  const { lines, stream } = captureLogLines()
  const token = 'log-test-admin-token-0123456789'
  // Redis off: a Redis timeout warning on a loaded machine would be a second line. Requests come from
  // 127.0.0.1 (inject), here the trusted proxy whose X-Request-Id is used.
  const config = testConfig({ ADMIN_TOKEN: token, LOG_LEVEL: 'info', REDIS_URL: 'off', TRUST_PROXY: '127.0.0.1' })
  const options = loggerOptions(config, false) as Record<string, unknown>
  const app = await buildApp(config, { logger: { ...options, stream } })
  t.teardown(async () => {
    await app.close()
  })
  await app.ready()

  lines.length = 0
  await app.inject({ url: '/crm/dentists/austin', headers: { 'x-request-id': 'cdn-req-42', cookie: 'session=secret-cookie' } })
  const requestLines = lines.filter((l) => l.msg === 'request')
  t.equal(requestLines.length, 1, 'exactly one line for the request')
  t.equal(lines.length, 1, 'and nothing else for a plain page request')
  t.match(requestLines[0], { level: 30, reqId: 'cdn-req-42', method: 'GET', url: '/crm/dentists/austin', route: '/*', status: 200, cache: 'MISS', segment: 'general' })
  t.type(requestLines[0]!.durationMs, 'number')

  lines.length = 0
  await app.inject({ url: '/crm/dentists/austin' })
  t.match(lines, [{ msg: 'request', cache: 'HIT-L1', status: 200 }])
  t.match(lines[0]!.reqId, /^[0-9a-z]+-[0-9a-z]+-[0-9a-z]+$/, 'a generated id (process prefix and counter) when the CDN sends none')
  await app.inject({ url: '/crm/dentists/austin' })
  t.not(lines[1]!.reqId, lines[0]!.reqId, 'each request its own id')

  lines.length = 0
  await app.inject({ method: 'POST', url: '/admin/purge', headers: { authorization: `Bearer ${token}` }, payload: { paths: ['/crm'] } })
  await app.inject({ method: 'POST', url: '/admin/purge', headers: { authorization: 'Bearer not-the-token-at-all' }, payload: { paths: ['/crm'] } })
  const all = JSON.stringify(lines)
  t.notOk(all.includes(token), 'the admin token never reaches the logs')
  t.notOk(all.includes('not-the-token'), 'nor a wrong one')
  t.match(lines.filter((l) => l.msg === 'request'), [{ route: '/admin/purge', status: 202, cache: 'none' }, { route: '/admin/purge', status: 401 }])

  lines.length = 0
  await app.inject({ url: '/health/live' })
  await app.inject({ url: '/metrics' })
  t.same(lines, [], 'probes and scrapes do not log a line each')

  // Whatever a handler logs, the redaction paths hide credentials.
  app.log.info({ headers: { authorization: `Bearer ${token}` }, config: { adminToken: token, openaiApiKey: 'sk-secret' } }, 'diagnostic')
  t.notOk(JSON.stringify(lines).includes(token))
  t.notOk(JSON.stringify(lines).includes('sk-secret'))
  t.match(lines.at(-1), { headers: { authorization: '[redacted]' }, config: { adminToken: '[redacted]', openaiApiKey: '[redacted]' } })
})

t.test('pretty logs only for a terminal, unless LOG_PRETTY says otherwise', async (t) => {
  const transport = (env: Record<string, string>, tty: boolean) => (loggerOptions(testConfig(env), tty) as { transport?: { target: string } }).transport?.target
  t.equal(transport({}, true), 'pino-pretty')
  t.equal(transport({}, false), undefined, 'JSON lines when piped to a log shipper')
  t.equal(transport({ LOG_PRETTY: 'false' }, true), undefined)
  t.equal(transport({ LOG_PRETTY: 'true' }, false), 'pino-pretty')
})

t.test("the server's JSON logger writes through an asynchronous buffer (LOG_BUFFER_BYTES); pretty logs and 0 do not", async (t) => {
  const stream = (env: Record<string, string>, tty: boolean) => {
    const destination = (serverLogger(testConfig(env), tty) as { stream?: BufferedLogDestination }).stream
    t.teardown(() => destination?.destroy())
    return destination
  }
  const stdout = stream({}, false)
  t.ok(stdout instanceof BufferedLogDestination)
  t.match(stdout, { minLength: 4096, fd: 1 }, 'stdout, buffered up to 4 KiB')
  t.match(stream({ LOG_BUFFER_BYTES: '65536' }, false), { minLength: 65536 }, 'the largest buffer is accepted')
  t.equal(stream({ LOG_BUFFER_BYTES: '0' }, false), undefined, "0: pino's own synchronous stdout")
  t.equal(stream({}, true), undefined, "pretty logs go through pino-pretty's transport")
  t.match(serverLogger(testConfig({ LOG_LEVEL: 'warn' }), false), { level: 'warn', redact: { censor: '[redacted]' } }, 'the level and redaction are kept')
})
