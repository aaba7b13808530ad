// Long admin work is a job, not a held socket: POST /admin/warm answers 202 with a job at once, GET
// /admin/jobs/:id shows its progress and its report, one warm-up runs at a time, readiness is not
// failed by it, and closing the app stops it between pages.

import t from 'tap'
import { buildApp, loggerOptions } from '../../../app.ts'
import { buildTestApp, testConfig } from '../../helper.ts'
import { awaitJob, type JobView } from '../../support/admin-jobs.ts'
import { captureLogLines } from '../../support/log-lines.ts'
import { deleteKeysWithPrefix } from '../../support/redis-keys.ts'
import { until } from '../../support/until.ts'

const TOKEN = 'jobs-test-token-0123456789'
const auth = { authorization: `Bearer ${TOKEN}` }
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

t.test('a warm-up is a job: 202 at once, progress while it runs, a second is a 409 naming it, readiness stays 200, the report at the end', async (t) => {
  const app = await buildTestApp(t, { ADMIN_TOKEN: TOKEN, REDIS_KEY_PREFIX: `vo-jobs-${process.pid}:` })
  const top = 300 // of the demo's 540 pages: a few seconds of work, one page at a time (DB_POOL_MAX at a time on a real server)
  // The concurrency a warm-up gets: what it asks for, at most the pool (1 on the embedded database).
  const clamped = (requested: number) => Math.min(requested, app.database.pool.options.max ?? 1)

  // Ten warm-ups asked for at once, each at the highest concurrency: before jobs, ten warm-ups ran side
  // by side with hundreds of queries queued on the database pool, and readiness failed for their length.
  const posts = Promise.all(Array.from({ length: 10 }, () => app.inject({ method: 'POST', url: '/admin/warm', headers: auth, payload: { top, concurrency: 64 } })))
  let answers: Awaited<typeof posts> | undefined
  void posts.then((all) => (answers = all))

  const probes: Array<{ statusCode: number; body: string; ms: number }> = []
  const snapshots: JobView[] = []
  const deadline = Date.now() + 150_000
  for (;;) {
    const probeStarted = Date.now()
    const ready = await app.inject({ url: '/health/ready' })
    probes.push({ statusCode: ready.statusCode, body: ready.body, ms: Date.now() - probeStarted })
    if (answers !== undefined) {
      const location = answers.find((res) => res.statusCode === 202)?.headers.location
      if (typeof location !== 'string') break
      const job = await app.inject({ url: location, headers: auth })
      snapshots.push(job.json<JobView>())
      if (snapshots.at(-1)!.state !== 'running') break
    }
    if (Date.now() > deadline) break
    await sleep(50)
  }

  t.ok(probes.length >= 3, `${probes.length} readiness probes while the warm-up ran`)
  const failed = probes.filter((probe) => probe.statusCode !== 200)
  t.same(failed.slice(0, 3), [], `readiness stayed 200 throughout (${failed.length} of ${probes.length} probes were not)`)
  t.comment(`readiness answered in at most ${Math.max(...probes.map((probe) => probe.ms))} ms`)

  const all = answers ?? []
  t.same(all.map((res) => res.statusCode).sort(), [202, 409, 409, 409, 409, 409, 409, 409, 409, 409], 'one warm-up accepted, nine refused')
  const accepted = all.find((res) => res.statusCode === 202)
  if (accepted === undefined) return
  const started = accepted.json<{ job: JobView; location: string }>()
  t.match(started.job, { id: /^[A-Za-z0-9_-]{22}$/, kind: 'warm-up', state: 'running', params: { top, concurrency: clamped(64), requestedConcurrency: 64 }, result: null, error: null, finishedAt: null })
  t.equal(accepted.headers.location, `/admin/jobs/${started.job.id}`)
  t.equal(started.location, accepted.headers.location)
  t.equal(accepted.headers['cache-control'], 'no-store')
  for (const refused of all.filter((res) => res.statusCode === 409)) {
    const body = refused.json()
    t.equal(body.job?.id, started.job.id, 'the 409 names the running warm-up')
    t.equal(body.location, `/admin/jobs/${started.job.id}`)
    t.match(body.message, /already running/)
  }

  const running = snapshots.filter((job) => job.state === 'running')
  t.ok(running.length >= 3, `the job was seen running ${running.length} times`)
  t.ok(
    running.some((job) => job.progress.pages === top && job.progress.pagesDone > 0 && job.progress.pagesDone < top),
    `progress shows while it runs: ${JSON.stringify(running.map((job) => job.progress.pagesDone))}`,
  )
  const done = running.map((job) => job.progress.pagesDone)
  t.same(done, [...done].sort((a, b) => a - b), 'progress only goes forward')


  const final = snapshots.at(-1)!
  t.equal(final.state, 'done', final.error ?? '')
  t.match(final.result, { pages: top, segments: 4, failed: 0, successRate: 1 })
  t.equal(final.result!.warmed + final.result!.skipped, final.result!.attempted)
  t.match(final.progress, { pages: top, pagesDone: top, attempted: final.result!.attempted })
  t.ok(Date.parse(final.finishedAt!) >= Date.parse(final.startedAt))

  // Finished: a new warm-up may start (and finds everything fresh).
  const next = await app.inject({ method: 'POST', url: '/admin/warm', headers: auth, payload: { top: 20 } })
  t.equal(next.statusCode, 202, next.body)
  const second = await awaitJob(app, next.headers.location as string, auth)
  t.not(second.id, started.job.id)
  t.match(second, { state: 'done', params: { top: 20, concurrency: clamped(8), requestedConcurrency: 8 }, result: { pages: 20, warmed: 0, failed: 0 } })
  t.equal((await app.inject({ url: `/admin/jobs/${started.job.id}`, headers: auth })).json().state, 'done', 'the first job is still there to read')
})

t.test('jobs are admin-only, no-store, and an unknown id is a 404', async (t) => {
  const app = await buildTestApp(t, { ADMIN_TOKEN: TOKEN, REDIS_KEY_PREFIX: `vo-jobs-auth-${process.pid}:` })
  const start = await app.inject({ method: 'POST', url: '/admin/warm', headers: auth, payload: { top: 3 } })
  t.equal(start.statusCode, 202)
  const location = start.headers.location as string
  t.equal((await app.inject({ method: 'POST', url: '/admin/warm', payload: { top: 3 } })).statusCode, 401)
  t.equal((await app.inject({ url: location })).statusCode, 401, 'a job id alone does not open it')
  t.equal((await app.inject({ url: location, headers: { authorization: 'Bearer wrong-token-0123456789' } })).statusCode, 401)
  const job = await awaitJob(app, location, auth)
  t.equal(job.state, 'done')
  const read = await app.inject({ url: location, headers: auth })
  t.equal(read.headers['cache-control'], 'no-store')
  const unknown = await app.inject({ url: '/admin/jobs/no-such-job', headers: auth })
  t.equal(unknown.statusCode, 404)
  t.equal(unknown.headers['cache-control'], 'no-store')
  t.match(unknown.json(), { statusCode: 404, error: 'NOT_FOUND', message: /no such job/ })
  t.equal((await app.inject({ method: 'POST', url: '/admin/warm', headers: auth, payload: { top: 0 } })).statusCode, 400)
})

t.test('closing the app stops a running warm-up between pages: logged as started and cancelled, close does not wait for it', async (t) => {
  const { lines, stream } = captureLogLines()
  const config = testConfig({ ADMIN_TOKEN: TOKEN, REDIS_KEY_PREFIX: `vo-jobs-close-${process.pid}:`, LOG_LEVEL: 'info' })
  const app = await buildApp(config, { logger: { ...(loggerOptions(config, false) as object), stream } })
  let closed = false
  t.teardown(async () => {
    if (!closed) await app.close()
    await deleteKeysWithPrefix(config.redisUrl!, config.redisKeyPrefix)
  })
  await app.ready()
  const start = await app.inject({ method: 'POST', url: '/admin/warm', headers: auth, payload: { top: 540 } })
  t.equal(start.statusCode, 202)
  const location = start.headers.location as string
  const id = start.json().job.id as string
  let progress: JobView['progress'] | undefined
  await until('the warm-up to have done a few pages', async () => ((progress = (await app.inject({ url: location, headers: auth })).json<JobView>().progress).pagesDone >= 5), { timeoutMs: 60_000, intervalMs: 20 })
  t.ok(progress!.pagesDone < 540, 'still running when the app closes')

  await app.close()
  closed = true
  const byJob = lines.filter((line) => line.job === id)
  t.match(byJob.map((line) => line.msg), ['job started', 'job cancelled'], 'the job logged its start and its end')
  const cancelled = byJob.find((line) => line.msg === 'job cancelled') as { level: number; reason: string; progress: { pagesDone: number; pages: number } }
  t.match(cancelled, { level: 40, kind: 'warm-up', reason: /cancelled: the origin is shutting down/ })
  t.ok(cancelled.progress.pagesDone < cancelled.progress.pages, `stopped between pages: ${cancelled.progress.pagesDone} of ${cancelled.progress.pages} done`)
  t.notOk(lines.some((line) => line.msg === 'job finished'))
})
