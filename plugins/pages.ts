// The page service (render + L1) and the segment directory it keys on.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { ResponseCache } from '../src/cache/response-cache.ts'
import { PageService } from '../src/pages/page-service.ts'
import { listSegments } from '../src/pages/page-repository.ts'
import { buildSegmentDirectory, type SegmentDirectory } from '../src/segments/segment-resolution.ts'

declare module 'fastify' {
  interface FastifyInstance {
    pages: PageService
    responseCache: ResponseCache
    segments(): SegmentDirectory
  }
}

const SEGMENT_REFRESH_MS = 30_000

async function pagesPlugin(app: FastifyInstance): Promise<void> {
  const { config } = app
  const cache = new ResponseCache(config.l1MaxBytes)
  app.decorate('responseCache', cache)
  app.decorate('pages', new PageService(app.database.db, cache, config))

  let directory = buildSegmentDirectory(await listSegments(app.database.db))
  app.decorate('segments', () => directory)
  // Segments change rarely; a periodic reload bounds how long a new one stays unknown.
  const timer = setInterval(() => {
    listSegments(app.database.db)
      .then((rows) => {
        directory = buildSegmentDirectory(rows)
      })
      .catch((err: unknown) => app.log.warn({ err }, 'segment reload failed; keeping the previous list'))
  }, SEGMENT_REFRESH_MS)
  timer.unref()
  app.addHook('onClose', async () => clearInterval(timer))
}

export default fp(pagesPlugin, { name: 'pages', dependencies: ['config', 'database'] })
