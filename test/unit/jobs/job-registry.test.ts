import t from 'tap'
import { JobCancelled, JobRegistry } from '../../../src/jobs/job-registry.ts'
import { until } from '../../support/until.ts'

/** A logger that keeps [level, msg, fields]. */
function recordingLog() {
  const lines: Array<[string, string, Record<string, unknown>]> = []
  const at = (level: string) => (obj: object, msg: string) => void lines.push([level, msg, obj as Record<string, unknown>])
  return { lines, log: { info: at('info'), warn: at('warn'), error: at('error') } }
}

/** A promise and the functions that settle it. */
function deferred<T = void>() {
  let resolve!: (value: T) => void
  let reject!: (err: unknown) => void
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)))
  return { promise, resolve, reject }
}

const settle = () => new Promise((resolve) => setImmediate(resolve))

t.test('one job of a kind at a time; progress, result and error as they happen; start and end logged', async (t) => {
  const { lines, log } = recordingLog()
  const jobs = new JobRegistry({ log })
  const gate = deferred<number>()
  let report!: (progress: { done: number }) => void
  const first = jobs.start('warm-up', { top: 3 }, { done: 0 }, async ({ progress }) => {
    report = progress
    return gate.promise
  })
  t.ok(first.started)
  if (!first.started) return
  t.match(first.job, { kind: 'warm-up', state: 'running', params: { top: 3 }, progress: { done: 0 }, result: null, error: null, finishedAt: null })
  t.match(first.job.id, /^[A-Za-z0-9_-]{22}$/, '128 random bits, URL-safe')

  const second = jobs.start('warm-up', {}, null, async () => 1)
  t.same(second.started ? 'started' : second.running.id, first.job.id, 'a second of the kind is refused, naming the running one')
  const other = jobs.start('reindex', {}, null, async () => 'other kind')
  t.ok(other.started, 'another kind may run alongside')

  await settle()
  report({ done: 2 })
  t.same(jobs.get(first.job.id)?.progress, { done: 2 })
  gate.resolve(42)
  await settle()
  t.match(jobs.get(first.job.id), { state: 'done', result: 42, error: null, finishedAt: String })
  t.equal(jobs.running('warm-up'), undefined)

  const failing = jobs.start('warm-up', {}, null, async () => {
    throw new Error('boom')
  })
  t.ok(failing.started, 'a new one may start once the first is done')
  await settle()
  if (failing.started) t.match(jobs.get(failing.job.id), { state: 'failed', error: 'boom', result: null })
  t.equal(jobs.get('no-such-job'), undefined)

  t.same(
    lines.map(([level, msg]) => [level, msg]),
    [
      ['info', 'job started'],
      ['info', 'job started'],
      ['info', 'job finished'],
      ['info', 'job finished'],
      ['info', 'job started'],
      ['error', 'job failed'],
    ],
  )
  t.match(lines[3]![2], { job: first.job.id, kind: 'warm-up', result: 42 })
})

t.test('finished jobs are kept for a while, and only so many', async (t) => {
  const { log } = recordingLog()
  const byCount = new JobRegistry({ log, keepFinished: 2 })
  const ids: string[] = []
  for (let i = 0; i < 3; i++) {
    const run = byCount.start('k', {}, null, async () => i)
    if (run.started) ids.push(run.job.id)
    await settle()
  }
  t.same(
    ids.map((id) => byCount.get(id)?.result),
    [undefined, 1, 2],
    'the oldest finished job is forgotten first',
  )

  const byAge = new JobRegistry({ log, keepFinishedMs: 20 })
  const run = byAge.start('k', {}, null, async () => 'x')
  if (!run.started) return t.fail('not started')
  await settle()
  t.equal(byAge.get(run.job.id)?.state, 'done')
  await until('the finished job to be forgotten', () => byAge.get(run.job.id) === undefined, { timeoutMs: 2_000, intervalMs: 10 })
  t.pass('forgotten after its keep time')
})

t.test('close aborts running jobs and waits for them, at most closeTimeoutMs; then no job starts', async (t) => {
  const { lines, log } = recordingLog()
  const jobs = new JobRegistry({ log, closeTimeoutMs: 50 })
  const stops = jobs.start('polite', {}, null, ({ signal }) => new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason))))
  const stubborn = deferred<string>()
  const ignores = jobs.start('stubborn', {}, null, () => stubborn.promise)
  if (!stops.started || !ignores.started) return t.fail('not started')
  await jobs.close()
  t.match(jobs.get(stops.job.id), { state: 'failed', error: 'cancelled: the origin is shutting down' })
  t.match(jobs.get(ignores.job.id), { state: 'failed', error: /still stopping after 50 ms/ })
  stubborn.resolve('late')
  await settle()
  t.match(jobs.get(ignores.job.id), { state: 'failed', result: null }, 'a late end does not undo the verdict')
  t.ok(lines.some(([level, msg, fields]) => level === 'warn' && msg === 'job cancelled' && fields.job === stops.job.id))
  t.ok(lines.some(([level, msg, fields]) => level === 'warn' && msg === 'job did not stop in time; closing without it' && fields.job === ignores.job.id))
  t.throws(() => jobs.start('polite', {}, null, async () => 1), JobCancelled)
})
