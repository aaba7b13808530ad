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
    reloadSegments(): Promise<void>
  }
}

const SEGMENT_REFRESH_MS = 30_000

async function pagesPlugin(app: FastifyInstance): Promise<void> {
  const { config } = app
  const cache = new ResponseCache(config.l1MaxBytes)
  app.decorate('responseCache', cache)
  app.decorate('pages', new PageService(app.database.db, cache, config, app.log))

  // Until the segments load (the schema may not be migrated yet), every request is the default segment.
  let directory = buildSegmentDirectory([])
  const reload = async (): Promise<void> => {
    try {
      directory = buildSegmentDirectory(await listSegments(app.database.db))
    } catch (err) {
      app.log.warn({ err }, 'segment list could not be loaded; keeping the previous list')
    }
  }
  await reload()
  app.decorate('segments', () => directory)
  app.decorate('reloadSegments', reload)
  // Segments change rarely; a periodic reload bounds how long a new one stays unknown.
  const timer = setInterval(() => void reload(), SEGMENT_REFRESH_MS)
  timer.unref()
  app.addHook('onClose', async () => clearInterval(timer))
}

export default fp(pagesPlugin, { name: 'pages', dependencies: ['config', 'database'] })
