// Admin API for content pipelines: ingest pages and variants. Bearer token, compared in constant
// time; without ADMIN_TOKEN the routes do not exist (404), so the API is never open by accident.
// Warm-up (a job: it outlives a request) is in routes/admin-jobs.ts.

import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { ingestPages, ingestSegments, ingestVariants } from '../src/ingest/ingest-service.ts'
import { isCanonicalPagePath } from '../src/http/url-normalize.ts'
import { enqueuePurge } from '../src/purge/purge-outbox.ts'
import { validationError } from '../src/errors.ts'
import { cacheTag } from '../src/http/cache-policy.ts'

export const MAX_RECORDS_PER_REQUEST = 10_000
const ADMIN_BODY_LIMIT = 64 * 1024 * 1024

const IngestSummary = Type.Object({
  received: Type.Integer(),
  inserted: Type.Integer(),
  updated: Type.Integer(),
  unchanged: Type.Integer(),
  embedded: Type.Integer(),
  invalidated: Type.Integer({ description: 'cached responses dropped from this instance' }),
  queued: Type.Integer({ description: 'CDN purges (soft, by tag) written to the outbox with the change' }),
})

const adminRoutes: FastifyPluginAsyncTypebox = async (app) => {
  if (!app.adminAuth.protect(app)) {
    app.log.info('ADMIN_TOKEN is not set: the admin API is off')
    return
  }
  const ADMIN_SECURITY = app.adminAuth.security

  app.post(
    '/admin/purge',
    {
      schema: {
        tags: ['admin'],
        summary: 'Purge paths or tags from every cache tier and the CDN',
        security: ADMIN_SECURITY,
        body: Type.Object(
          {
            paths: Type.Optional(Type.Array(Type.String(), { maxItems: 1000 })),
            tags: Type.Optional(Type.Array(Type.String(), { maxItems: 1000 })),
            soft: Type.Optional(Type.Boolean({ description: 'mark stale at the CDN instead of deleting (Fastly, Varnish xkey)' })),
          },
          { additionalProperties: false },
        ),
        response: { 202: Type.Object({ evicted: Type.Integer(), queued: Type.Integer({ description: 'CDN purges written to the outbox' }) }) },
      },
    },
    async (request, reply) => {
      const paths = request.body.paths ?? []
      const tags = request.body.tags ?? []
      const problems = [
        ...paths.flatMap((path, i) => (isCanonicalPagePath(path) ? [] : [{ record: i, field: 'paths', message: `${JSON.stringify(path)} is not a canonical page path` }])),
        ...tags.flatMap((tag, i) => (/^[a-z0-9][a-z0-9_-]{0,127}$/.test(tag) ? [] : [{ record: i, field: 'tags', message: `${JSON.stringify(tag)} is not a tag (lower-case letters, digits, - and _)` }])),
      ]
      if (paths.length + tags.length === 0) problems.push({ record: -1, field: 'paths', message: 'give at least one path or tag' })
      if (problems.length > 0) throw validationError('purge', problems)
      // A purge often follows a write made elsewhere (SQL, `npm run ingest` without --url): the replicas
      // replay it first, so the re-render after the eviction sees it.
      await app.database.waitForReplicas()
      const evicted = await app.pages.purge(paths, tags)
      const queued = await enqueuePurge(app.database.db, app.config.purgeTargets, { paths, tags, soft: request.body.soft ?? false })
      app.kickPurges()
      request.log.info({ paths: paths.length, tags, evicted, queued }, 'purge accepted')
      return reply.code(202).send({ evicted, queued })
    },
  )

  app.post(
    '/admin/segments',
    {
      schema: {
        tags: ['admin'],
        summary: 'Create or update audience segments',
        security: ADMIN_SECURITY,
        body: Type.Object({ segments: Type.Array(Type.Unknown(), { maxItems: 1000 }) }),
        response: {
          200: Type.Object({
            received: Type.Integer(),
            upserted: Type.Integer(),
            invalidated: Type.Integer({ description: 'cached responses dropped from this instance' }),
            queued: Type.Integer({ description: 'CDN purges (soft, by segment tag) written to the outbox with the change' }),
          }),
        },
      },
    },
    async (request) => {
      const { affectedSegments, ...result } = await ingestSegments(app.database.db, request.body.segments, app.config)
      if (affectedSegments.length > 0) await app.database.waitForReplicas()
      // Every instance reloads the segments; when the resolution rules changed, every per-segment
      // rendering goes from every tier (pages that are the same for every segment are not touched).
      await app.reloadSegments()
      const invalidated = await app.pages.purge([], affectedSegments.map((slug) => cacheTag('segment', slug)))
      if (result.queued > 0) app.kickPurges()
      request.log.info({ ...result, affectedSegments, invalidated }, 'segments ingested')
      return { ...result, invalidated }
    },
  )

  app.post(
    '/admin/pages',
    {
      bodyLimit: ADMIN_BODY_LIMIT,
      schema: {
        tags: ['admin'],
        summary: 'Ingest pages (validated as a batch, embedded, upserted)',
        security: ADMIN_SECURITY,
        body: Type.Object({ pages: Type.Array(Type.Unknown(), { maxItems: MAX_RECORDS_PER_REQUEST }) }),
        response: { 200: IngestSummary },
      },
    },
    async (request) => {
      const result = await ingestPages(app.database.db, app.embedder, request.body.pages, app.config.publicBaseUrl, app.config)
      // Read-your-writes: the read replicas replay the batch before its pages leave the caches.
      if (result.affectedPaths.length > 0) await app.database.waitForReplicas()
      const invalidated = result.affectedPaths.length === 0 ? 0 : await app.pages.invalidatePaths([...result.affectedPaths, '/'])
      if (result.queued > 0) app.kickPurges()
      request.log.info({ ...result, affectedPaths: result.affectedPaths.length, invalidated }, 'pages ingested')
      const { affectedPaths: _paths, ...summary } = result
      return { ...summary, invalidated }
    },
  )

  app.post(
    '/admin/variants',
    {
      bodyLimit: ADMIN_BODY_LIMIT,
      schema: {
        tags: ['admin'],
        summary: 'Ingest content variants (validated as a batch, embedded, upserted)',
        security: ADMIN_SECURITY,
        body: Type.Object({
          variants: Type.Array(Type.Unknown(), {
            maxItems: MAX_RECORDS_PER_REQUEST,
            description:
              'records {key, segment, page | vertical, headline, subhead, features, cta_label, cta_url, social_proof, metadata, text}: each belongs to one landing page (page: its path) or to one vertical (vertical: its slug), exactly one of the two',
          }),
        }),
        response: { 200: IngestSummary },
      },
    },
    async (request) => {
      const result = await ingestVariants(app.database.db, app.embedder, request.body.variants, app.config)
      if (result.affectedPaths.length > 0) await app.database.waitForReplicas()
      // Every segment of the pages in the changed variants' scopes: a page's first variant makes it
      // per-segment, so its one shared entry goes too.
      const invalidated = result.affectedPaths.length === 0 ? 0 : await app.pages.invalidatePaths(result.affectedPaths)
      if (result.queued > 0) app.kickPurges()
      request.log.info({ ...result, affectedPaths: result.affectedPaths.length, invalidated }, 'variants ingested')
      const { affectedPaths: _paths, ...summary } = result
      return { ...summary, invalidated }
    },
  )
}

export default adminRoutes
