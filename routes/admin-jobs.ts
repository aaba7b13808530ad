// Admin work that can outlive a request is a job, not a held socket: POST /admin/warm answers 202 with
// the job at once (Location: /admin/jobs/<id>) and the warm-up runs in the background; GET
// /admin/jobs/:id reports its progress and, once done, its report. At most one warm-up runs per
// instance (a second POST is a 409 naming the running job). Closing the app stops a running warm-up
// between pages and marks it failed (cancelled), so a shutdown never waits for it.
// Admin only, like routes/admin.ts: without ADMIN_TOKEN the routes do not exist.

import { type Static, Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { warmConcurrency, warmUp, type WarmProgress, type WarmReport } from '../src/cache/warm-up.ts'
import { DomainError } from '../src/errors.ts'
import { JobRegistry, type JobSnapshot } from '../src/jobs/job-registry.ts'

const WARM_UP = 'warm-up'

const jobPath = (id: string): string => `/admin/jobs/${id}`

const WarmReportSchema = Type.Object({
  pages: Type.Integer(),
  segments: Type.Integer(),
  attempted: Type.Integer({ description: 'entries tried: one per page that is the same for every segment, one per segment for a page that is not' }),
  warmed: Type.Integer(),
  skipped: Type.Integer({ description: 'already fresh in L2 (or rendered by live traffic meanwhile)' }),
  failed: Type.Integer(),
  successRate: Type.Number({ description: '(warmed + skipped) / attempted' }),
  durationMs: Type.Integer(),
})

const WarmJob = Type.Object({
  id: Type.String(),
  kind: Type.Literal(WARM_UP),
  state: Type.Union([Type.Literal('running'), Type.Literal('done'), Type.Literal('failed')]),
  params: Type.Object({
    top: Type.Integer(),
    concurrency: Type.Integer({ description: 'pages warmed at once: the requested concurrency, at most the database pool size' }),
    requestedConcurrency: Type.Integer(),
  }),
  progress: Type.Object({
    pages: Type.Union([Type.Integer(), Type.Null()], { description: 'pages to warm; null until the top pages are read' }),
    pagesDone: Type.Integer(),
    attempted: Type.Integer(),
    warmed: Type.Integer(),
    skipped: Type.Integer(),
    failed: Type.Integer(),
  }),
  result: Type.Union([WarmReportSchema, Type.Null()], { description: 'the report, once done' }),
  error: Type.Union([Type.String(), Type.Null()], { description: 'why it failed (or that it was cancelled by a shutdown)' }),
  startedAt: Type.String({ format: 'date-time' }),
  finishedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
})

/** Warm-ups are the only jobs there are: a job snapshot is a warm-up job. */
const asWarmJob = (job: JobSnapshot): Static<typeof WarmJob> => job as Static<typeof WarmJob>

const adminJobRoutes: FastifyPluginAsyncTypebox = async (app) => {
  if (!app.adminAuth.protect(app)) return
  const ADMIN_SECURITY = app.adminAuth.security

  const jobs = new JobRegistry({ log: app.log })
  // Registered after the database and the caches, so this runs before they close (onClose is LIFO).
  app.addHook('onClose', async () => jobs.close())

  const initialProgress: WarmProgress = { pages: null, pagesDone: 0, attempted: 0, warmed: 0, skipped: 0, failed: 0 }

  app.post(
    '/admin/warm',
    {
      schema: {
        tags: ['admin'],
        summary: 'Start a warm-up job: render the top pages by crawl weight into the shared cache',
        description: 'Answers 202 at once with the job; follow it at Location (GET /admin/jobs/{id}). One warm-up at a time per instance: a second is a 409 naming the running one.',
        security: ADMIN_SECURITY,
        body: Type.Object({ top: Type.Integer({ minimum: 1, maximum: 100_000 }), concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })) }, { additionalProperties: false }),
        response: {
          202: Type.Object({ job: WarmJob, location: Type.String({ description: 'where to follow the job; also the Location header' }) }),
          409: Type.Object({
            statusCode: Type.Integer(),
            error: Type.String(),
            message: Type.String(),
            job: Type.Optional(WarmJob),
            location: Type.Optional(Type.String({ description: 'the running warm-up' })),
          }),
        },
      },
    },
    async (request, reply) => {
      if (app.redis === null) throw new DomainError('CONFLICT', 'warm-up fills the shared Redis tier, and REDIS_URL is off')
      const requested = request.body.concurrency ?? 8
      const concurrency = warmConcurrency(requested, app.database.pool.options.max ?? 1)
      const { top } = request.body
      const outcome = jobs.start<WarmProgress, WarmReport>(WARM_UP, { top, concurrency, requestedConcurrency: requested }, initialProgress, async ({ signal, progress }) => {
        const report = await warmUp(app.database.db, app.pages, [...app.segments().slugs], top, concurrency, { signal, onProgress: progress })
        app.metrics.warmUp(report)
        return report
      })
      if (!outcome.started) {
        const location = jobPath(outcome.running.id)
        return reply.code(409).send({ statusCode: 409, error: 'CONFLICT', message: `a warm-up is already running on this instance: ${location}`, job: asWarmJob(outcome.running), location })
      }
      const location = jobPath(outcome.job.id)
      return reply.code(202).header('location', location).send({ job: asWarmJob(outcome.job), location })
    },
  )

  app.get(
    '/admin/jobs/:id',
    {
      schema: {
        tags: ['admin'],
        summary: 'A background job: its state, progress and, once done, its result',
        description: 'Jobs live in the instance that runs them, in memory: finished ones are kept for an hour (the last 50), then forgotten (404).',
        security: ADMIN_SECURITY,
        params: Type.Object({ id: Type.String() }),
        response: { 200: WarmJob },
      },
    },
    async (request) => {
      const job = jobs.get(request.params.id)
      if (job === undefined) throw new DomainError('NOT_FOUND', 'no such job on this instance (jobs are kept in memory by the instance that runs them, for an hour after they finish)')
      return asWarmJob(job)
    },
  )
}

export default adminJobRoutes
