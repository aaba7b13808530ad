import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import pino from 'pino'
import { BufferedLogDestination, flushLogs, flushLogsSync, logDestination } from '../../src/log-destination.ts'

const dir = mkdtempSync(path.join(tmpdir(), 'vo-log-destination-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

/** An asynchronous buffer like logDestination()'s, on a file instead of stdout. */
function bufferedFile(t: Test, name: string, minLength = 4096): { file: string; destination: BufferedLogDestination } {
  const file = path.join(dir, name)
  const fd = openSync(file, 'w')
  const destination = logDestination(minLength, fd)!
  t.teardown(() => {
    destination.destroy()
    closeSync(fd)
  })
  return { file, destination }
}

const lines = (file: string): string[] => readFileSync(file, 'utf8').split('\n').slice(0, -1)

t.test('LOG_BUFFER_BYTES: stdout buffered asynchronously, or pino’s synchronous default for 0', async (t) => {
  t.equal(logDestination(0), undefined)
  const stdout = logDestination(4096)!
  t.match(stdout, { fd: 1, minLength: 4096 })
  stdout.destroy()
})

t.test('flushLogs drains a buffer that has not reached its threshold', async (t) => {
  const { file, destination } = bufferedFile(t, 'drain.log')
  const log = pino({}, destination)
  for (let i = 0; i < 5; i++) log.info({ i }, 'buffered')
  t.equal(readFileSync(file, 'utf8'), '', 'under 4 KiB: still in the buffer')
  await flushLogs(log)
  t.equal(lines(file).length, 5, 'every line written')
})

t.test('past the threshold, lines are written without a flush, whole and in order, across many Buffers', async (t) => {
  const { file, destination } = bufferedFile(t, 'order.log')
  const log = pino({}, destination)
  // 30,000 lines of about 200 bytes: several 64 KiB Buffers, each written in slices as lines pile up.
  for (let i = 0; i < 30_000; i++) {
    log.info({ i, text: 'é'.repeat(i % 7), pad: 'x'.repeat(100) }, 'line')
    if (i % 1000 === 0) await new Promise((resolve) => setImmediate(resolve))
  }
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.ok(lines(file).length > 25_000, `written without a flush: ${lines(file).length} lines`)
  await flushLogs(log)
  const written = lines(file).map((line) => JSON.parse(line) as { i: number; text: string })
  t.equal(written.length, 30_000)
  t.ok(written.every((line, i) => line.i === i && line.text === 'é'.repeat(i % 7)), 'each line whole (UTF-8 intact), in order')
})

t.test('a quiet server still writes its lines within the flush interval', async (t) => {
  const file = path.join(dir, 'interval.log')
  const fd = openSync(file, 'w')
  const destination = new BufferedLogDestination({ fd, minLength: 4096, flushIntervalMs: 50 })
  t.teardown(() => (destination.destroy(), closeSync(fd)))
  destination.write('{"msg":"alone"}\n')
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.same(lines(file), ['{"msg":"alone"}'])
})

t.test('flushLogsSync writes at once, and never throws', async (t) => {
  const { file, destination } = bufferedFile(t, 'sync.log')
  const log = pino({}, destination)
  log.info('last words')
  flushLogsSync(log)
  t.match(readFileSync(file, 'utf8'), /"msg":"last words"/)
  destination.destroy()
  t.doesNotThrow(() => flushLogsSync(log), 'destroyed: nothing thrown')
  t.doesNotThrow(() => log.info('after the end'), 'a line after the end is ignored')
  await t.resolves(flushLogs(log), 'nor does the asynchronous drain fail')
})

t.test('a full non-blocking pipe (EAGAIN, short writes): the lines wait and all arrive, in order', async (t) => {
  const file = path.join(dir, 'pipe.log')
  // The reader starts late: 2 MB of lines overfill the 64 KiB pipe meanwhile.
  const reader = spawn('sh', ['-c', `sleep 0.5; cat > '${file}'`], { stdio: ['pipe', 'ignore', 'inherit'] })
  const fd = (reader.stdin as unknown as { _handle: { fd: number } })._handle.fd
  const destination = new BufferedLogDestination({ fd, minLength: 4096 })
  for (let i = 0; i < 10_000; i++) destination.write(`{"i":${i},"pad":"${'y'.repeat(180)}"}\n`)
  await new Promise<void>((resolve) => destination.flush(() => resolve()))
  destination.destroy()
  reader.stdin!.end()
  await new Promise((resolve) => reader.once('exit', resolve))
  const written = lines(file).map((line) => (JSON.parse(line) as { i: number }).i)
  t.equal(written.length, 10_000)
  t.ok(written.every((i, n) => i === n), 'in order')
})

t.test('a reader that is gone (EPIPE): logging stops, the process does not', async (t) => {
  const reader = spawn('true', [], { stdio: ['pipe', 'ignore', 'ignore'] })
  reader.stdin!.on('error', () => undefined)
  const fd = (reader.stdin as unknown as { _handle: { fd: number } })._handle.fd
  await new Promise((resolve) => reader.once('exit', resolve))
  const destination = new BufferedLogDestination({ fd, minLength: 16 })
  t.equal(destination.write('{"msg":"into the void"}\n'), true)
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(destination.write('{"msg":"after"}\n'), false, 'stopped after EPIPE')
  t.doesNotThrow(() => destination.flushSync())
})

t.test('a logger that does not buffer: both are no-ops', async (t) => {
  const written: string[] = []
  const log = pino({}, new Writable({ write: (chunk: Buffer, _e, done) => (written.push(chunk.toString()), done()) }))
  log.info('one')
  flushLogsSync(log)
  await flushLogs(log)
  t.equal(written.length, 1)
  flushLogsSync(undefined)
  await flushLogs(undefined)
  await flushLogs({ info() {} })
})
