import t from 'tap'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import pino from 'pino'
import { flushLogs, flushLogsSync, logDestination } from '../../src/log-destination.ts'

const dir = mkdtempSync(path.join(tmpdir(), 'vo-log-destination-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

/** An asynchronous buffer like logDestination()'s, on a file instead of stdout. */
function bufferedFile(name: string): { file: string; destination: ReturnType<typeof pino.destination> } {
  const file = path.join(dir, name)
  return { file, destination: pino.destination({ dest: file, sync: false, minLength: 4096 }) }
}

t.test('LOG_BUFFER_BYTES: stdout buffered asynchronously, or pino’s synchronous default for 0', async (t) => {
  t.equal(logDestination(0), undefined)
  t.match(logDestination(4096), { fd: 1, sync: false, minLength: 4096 })
  t.match(logDestination(65536), { minLength: 65536 }, 'sonic-boom accepts the largest buffer (its largest write is raised to fit)')
})

t.test('flushLogs drains a buffer that has not reached its threshold', async (t) => {
  const { file, destination } = bufferedFile('drain.log')
  await new Promise((resolve) => destination.once('ready', resolve))
  const log = pino({}, destination)
  for (let i = 0; i < 5; i++) log.info({ i }, 'buffered')
  t.equal(readFileSync(file, 'utf8'), '', 'under 4 KiB: still in the buffer')
  await flushLogs(log)
  t.equal(readFileSync(file, 'utf8').trim().split('\n').length, 5, 'every line written')
  destination.end()
})

t.test('flushLogsSync writes at once, and never throws', async (t) => {
  const { file, destination } = bufferedFile('sync.log')
  const log = pino({}, destination)
  // Opening a file is asynchronous: before it is open, sonic-boom refuses a synchronous flush.
  t.doesNotThrow(() => flushLogsSync(log), 'not ready yet: nothing thrown')
  await new Promise((resolve) => destination.once('ready', resolve))
  log.info('last words')
  flushLogsSync(log)
  t.match(readFileSync(file, 'utf8'), /"msg":"last words"/)
  destination.destroy()
  t.doesNotThrow(() => flushLogsSync(log), 'destroyed: nothing thrown')
  await t.resolves(flushLogs(log), 'nor does the asynchronous drain fail')
})

t.test('a logger that does not buffer: both are no-ops', async (t) => {
  const lines: string[] = []
  const log = pino({}, new Writable({ write: (chunk: Buffer, _e, done) => (lines.push(chunk.toString()), done()) }))
  log.info('one')
  flushLogsSync(log)
  await flushLogs(log)
  t.equal(lines.length, 1)
  flushLogsSync(undefined)
  await flushLogs(undefined)
  await flushLogs({ info() {} })
})
