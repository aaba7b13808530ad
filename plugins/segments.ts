// The segment directory every page request resolves its segment against: the segments, the default
// and the utm rules, loaded from the database at start, every 30 s, and after an admin change, here
// and (over the invalidation bus) on every other instance.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { listSegments } from '../src/pages/page-repository.ts'
import { buildSegmentDirectory, type SegmentDirectory } from '../src/segments/segment-resolution.ts'

declare module 'fastify' {
  interface FastifyInstance {
    segments(): SegmentDirectory
    /** Reloads the segments here and tells every other instance to (after an admin change). */
    reloadSegments(): Promise<void>
  }
}

/** Segments change rarely; a periodic reload bounds how long a new one stays unknown on other instances. */
const SEGMENT_REFRESH_MS = 30_000

async function segmentsPlugin(app: FastifyInstance): Promise<void> {
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
  app.decorate('reloadSegments', async () => {
    await reload()
    app.invalidationBus.publish?.({ keys: [], tags: [], segments: true })
  })
  app.invalidationBus.onMessage((message) => {
    if (message.segments === true) void reload()
  })
  const timer = setInterval(() => void reload(), SEGMENT_REFRESH_MS)
  timer.unref()
  app.addHook('onClose', async () => clearInterval(timer))
}

export default fp(segmentsPlugin, { name: 'segments', dependencies: ['database', 'invalidation'] })
