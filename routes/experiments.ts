// Experiments: the report (GET /admin/experiments), the operator's pin, pause and resume
// (POST /admin/experiments), and the first-party beacon script pages under experiment load.

import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { DomainError, validationError } from '../src/errors.ts'
import { isCanonicalPagePath } from '../src/http/url-normalize.ts'
import { listExperiments, readExperimentCounts, setExperimentStatus } from '../src/experiments/experiment-repository.ts'
import { bucketTag } from '../src/experiments/experiment-registry.ts'
import { experimentReports } from '../src/experiments/experiment-report.ts'
import { BEACON_SCRIPT } from '../src/experiments/beacon.ts'
import { BEACON_PATH } from '../src/render/page-templates.ts'
import { enqueueTagPurge } from '../src/purge/purge-outbox.ts'

const Rate = Type.Number({ minimum: 0, maximum: 1 })
const Report = Type.Object({
  page: Type.String(),
  segment: Type.String(),
  status: Type.Union([Type.Literal('running'), Type.Literal('paused'), Type.Literal('pinned')]),
  pinnedVariant: Type.Union([Type.Integer(), Type.Null()]),
  bestVariant: Type.Integer({ description: 'what a visitor without a bucket (a crawler) is served' }),
  since: Type.String({ format: 'date-time' }),
  reallocatedAt: Type.String({ format: 'date-time' }),
  variants: Type.Array(
    Type.Object({
      variant: Type.Integer(),
      views: Type.Integer(),
      conversions: Type.Integer(),
      rate: Rate,
      interval95: Type.Tuple([Rate, Rate]),
      probabilityBest: Rate,
      share: Type.Number({ minimum: 0, maximum: 1, description: 'share of buckets that see this variant' }),
    }),
  ),
})

const experimentRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config } = app

  // The beacon: first-party, static, the same for every page; cached a day by browsers and the CDN.
  app.get(BEACON_PATH, { schema: { hide: true } }, async (_request, reply) =>
    reply.header('content-type', 'text/javascript; charset=utf-8').header('cache-control', 'public, max-age=86400').header('x-content-type-options', 'nosniff').send(BEACON_SCRIPT),
  )

  await app.register(adminExperimentRoutes)
}

/** The report and the operator's actions: behind ADMIN_TOKEN, absent (404) without it. */
const adminExperimentRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config } = app
  if (!app.adminAuth.protect(app)) return
  const security = app.adminAuth.security

  app.get(
    '/admin/experiments',
    {
      schema: {
        tags: ['admin'],
        summary: 'Experiments: views, conversions, rate with a 95% interval, probability of being best and bucket share per variant',
        security,
        querystring: Type.Object({ page: Type.Optional(Type.String({ description: 'a landing page path, such as /crm' })) }, { additionalProperties: false }),
        response: { 200: Type.Object({ experiments: Type.Array(Report), buckets: Type.Integer(), reallocateSeconds: Type.Integer(), minShare: Type.Number() }) },
      },
    },
    async (request, reply) => {
      const page = request.query.page
      if (page !== undefined && !isCanonicalPagePath(page)) throw validationError('query', [{ record: -1, field: 'page', message: `${JSON.stringify(page)} is not a canonical page path, such as /crm` }])
      const [rows, counts] = await Promise.all([listExperiments(app.database.db, page === undefined ? {} : { path: page }), readExperimentCounts(app.database.db)])
      return reply.header('cache-control', 'no-store').send({ experiments: experimentReports(rows, counts), buckets: config.experimentBuckets, reallocateSeconds: config.experimentReallocateSeconds, minShare: config.experimentMinShare })
    },
  )

  app.post(
    '/admin/experiments',
    {
      schema: {
        tags: ['admin'],
        summary: 'Pin a winner (every bucket sees it), pause the split as it is, or resume learning',
        security,
        body: Type.Object(
          {
            page: Type.String({ description: 'the landing page path' }),
            segment: Type.String(),
            action: Type.Union([Type.Literal('pin'), Type.Literal('pause'), Type.Literal('resume')]),
            variant: Type.Optional(Type.Integer({ minimum: 1, description: 'with pin: the variant every bucket sees' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: Report },
      },
    },
    async (request, reply) => {
      const { page, segment, action, variant } = request.body
      const problems = []
      if (!isCanonicalPagePath(page)) problems.push({ record: -1, field: 'page', message: `${JSON.stringify(page)} is not a canonical page path, such as /crm` })
      if (action === 'pin' && variant === undefined) problems.push({ record: -1, field: 'variant', message: 'pin needs the variant to show every bucket' })
      if (action !== 'pin' && variant !== undefined) problems.push({ record: -1, field: 'variant', message: `${action} takes no variant (only pin does)` })
      if (problems.length > 0) throw validationError('experiment', problems)
      const [row] = await listExperiments(app.database.db, { path: page }).then((rows) => rows.filter((r) => r.segment === segment))
      if (row === undefined) throw new DomainError('NOT_FOUND', `no experiment on ${page} for segment ${segment}: a landing page competes once a segment has two or more variants in scope (GET /admin/experiments lists them)`)
      if (action === 'pin' && !row.variants.includes(variant!)) {
        throw validationError('experiment', [{ record: -1, field: 'variant', message: `variant ${variant} is not competing on ${page} for ${segment}; competing: ${row.variants.join(', ')}` }])
      }
      const status = action === 'pin' ? 'pinned' : action === 'pause' ? 'paused' : 'running'
      await app.database.db.transaction().execute(async (trx) => {
        await setExperimentStatus(trx, row.pageId, segment, status, action === 'pin' ? variant : undefined)
        // A pin (or leaving one) changes what buckets see: every bucket's CDN object of the pair goes.
        if (action === 'pin' || row.status === 'pinned') {
          const tags = [...Array.from({ length: config.experimentBuckets }, (_, b) => bucketTag(row.pageId, segment, b)), bucketTag(row.pageId, segment, undefined)]
          await enqueueTagPurge(trx, config.purgeTargets, tags, false)
        }
      })
      await app.experiments.reload()
      app.kickPurges()
      const [updated] = (await listExperiments(app.database.db, { path: page })).filter((r) => r.segment === segment)
      const counts = await readExperimentCounts(app.database.db)
      return reply.header('cache-control', 'no-store').send(experimentReports([updated!], counts)[0]!)
    },
  )
}

export default experimentRoutes
