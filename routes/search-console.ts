// Admin import of Search Console data: rows as searchanalytics.query returns them, with their date
// range. After the commit the changed pages are evicted from L1/L2 so the new weight (hence the new
// s-maxage) takes effect on their next render; softPurge also queues a soft CDN purge.

import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { applySearchConsoleImport, searchAnalyticsImport } from '../src/search-console/search-console-import.ts'
import { chunks } from '../src/chunks.ts'

/** Search Analytics returns at most 25,000 rows a request and ~50,000 a day per search type. */
export const MAX_IMPORT_ROWS = 250_000
const IMPORT_BODY_LIMIT = 128 * 1024 * 1024
const EVICT_BATCH = 1_000

const searchConsoleRoutes: FastifyPluginAsyncTypebox = async (app) => {
  if (!app.adminAuth.protect(app)) return
  const ADMIN_SECURITY = app.adminAuth.security

  app.post(
    '/admin/search-console',
    {
      bodyLimit: IMPORT_BODY_LIMIT,
      schema: {
        tags: ['admin'],
        summary: 'Import Search Console page rows; crawl weights, history, cache eviction',
        security: ADMIN_SECURITY,
        body: Type.Object(
          {
            startDate: Type.String({ description: 'first day of the data, YYYY-MM-DD' }),
            endDate: Type.String({ description: 'last day of the data, YYYY-MM-DD' }),
            rows: Type.Array(Type.Unknown(), { maxItems: MAX_IMPORT_ROWS, description: 'searchanalytics.query rows with dimensions ["page"]: {keys: [url], clicks, impressions, ctr, position}' }),
            responseAggregationType: Type.Optional(Type.String()),
            source: Type.Optional(Type.Union([Type.Literal('api'), Type.Literal('json'), Type.Literal('csv'), Type.Literal('live')], { description: 'where the rows came from (the CLI says csv, json or live)' })),
            softPurge: Type.Optional(Type.Boolean({ description: 'also queue a soft CDN purge of the changed pages and the sitemaps' })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({
            importId: Type.Integer(),
            received: Type.Integer({ description: 'rows in the request' }),
            matched: Type.Integer({ description: 'pages the rows matched by canonical path' }),
            unknown: Type.Integer({ description: 'rows whose URL matched no page' }),
            unknownSample: Type.Array(Type.String()),
            changed: Type.Integer({ description: 'imported pages whose weight changed' }),
            decayed: Type.Integer({ description: 'pages missing from the import whose weight decayed' }),
            evicted: Type.Integer({ description: 'cached responses dropped from this instance' }),
            queued: Type.Integer({ description: 'CDN purges written to the outbox' }),
          }),
        },
      },
    },
    async (request) => {
      const { body } = request
      const input = searchAnalyticsImport(body.source ?? 'api', body.startDate, body.endDate, body.rows)
      const { changedPaths, ...result } = await applySearchConsoleImport(app.database.db, input, { ...app.config, softPurge: body.softPurge === true })
      if (changedPaths.length > 0) await app.database.waitForReplicas()
      let evicted = 0
      for (const paths of chunks(changedPaths, EVICT_BATCH)) evicted += await app.pages.invalidatePaths(paths)
      if (result.queued > 0) app.kickPurges()
      request.log.info({ ...result, unknownSample: undefined, evicted }, 'Search Console import applied')
      return { ...result, evicted }
    },
  )
}

export default searchConsoleRoutes
