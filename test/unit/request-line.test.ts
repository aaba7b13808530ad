// The request line written by hand (plugins/request-telemetry.ts writeRequestLine) is byte for byte
// what pino writes for the same fields, bindings and time.

import t from 'tap'
import pino from 'pino'
import { Writable } from 'node:stream'
import type { FastifyBaseLogger } from 'fastify'
import { loggerOptions } from '../../app.ts'
import { writeRequestLine, type RequestRecord } from '../../plugins/request-telemetry.ts'
import { testConfig } from '../helper.ts'

function capture(): { raw: string[]; stream: Writable } {
  const raw: string[] = []
  return { raw, stream: new Writable({ write: (chunk: Buffer, _e, done) => (raw.push(chunk.toString('utf8')), done()) }) }
}

t.test('byte for byte the line pino writes', async (t) => {
  const options = loggerOptions(testConfig({ LOG_LEVEL: 'info' }), false) as pino.LoggerOptions
  const records: Array<[RequestRecord, string | undefined, number | undefined]> = [
    [{ method: 'GET', url: '/crm/dentists/austin', route: '/*', status: 200, cache: 'HIT-L1', segment: 'general', durationMs: 0.1234 }, 'abc-1', undefined],
    [{ method: 'HEAD', url: '/a "quoted" \\ path\u2028', route: '/*', status: 304, cache: 'HIT-L2', segment: undefined, durationMs: 12 }, undefined, 10],
    [{ method: 'GET', url: '/x', route: '/*', status: 404, cache: 'MISS', segment: 'smb', durationMs: 0 }, 'cdn:7.x', undefined],
  ]
  for (const [record, reqId, sampleRate] of records) {
    const viaPino = capture()
    const direct = capture()
    // One fixed time, so the two lines can be compared whole.
    const a = pino({ ...options, timestamp: () => ',"time":1764748800000' }, viaPino.stream)
    const b = pino({ ...options, timestamp: () => ',"time":1764748800000' }, direct.stream)
    const durationMs = Math.round(record.durationMs * 100) / 100
    const line: Record<string, unknown> = reqId === undefined ? { ...record, durationMs } : { reqId, ...record, durationMs }
    if (sampleRate !== undefined) line.sampleRate = sampleRate
    a.info(line, 'request')
    t.ok(writeRequestLine(b as unknown as FastifyBaseLogger, record, durationMs, reqId, sampleRate), 'a plain pino logger: written directly')
    t.same(direct.raw, viaPino.raw, `${record.method} ${record.status}: the same bytes`)
    // A child logger's bindings (Fastify's request logger carries reqId) come through the same way.
    const childPino = capture()
    const childDirect = capture()
    pino({ ...options, timestamp: () => ',"time":1' }, childPino.stream).child({ reqId: 'req-9' }).info({ ...record, durationMs }, 'request')
    writeRequestLine(pino({ ...options, timestamp: () => ',"time":1' }, childDirect.stream).child({ reqId: 'req-9' }) as unknown as FastifyBaseLogger, record, durationMs, undefined, undefined)
    t.same(childDirect.raw, childPino.raw)
  }
  const withFormatter = pino({ ...options, formatters: { log: (o) => ({ ...o, extra: 1 }) } }, capture().stream)
  t.notOk(writeRequestLine(withFormatter as unknown as FastifyBaseLogger, records[0]![0], 1, undefined, undefined), 'a log formatter: left to pino')
})
