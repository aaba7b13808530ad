// CDN purges: the adapters the configuration names, and the worker that drains the outbox.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { createAdapters } from '../src/purge/cdn-adapters.ts'
import { deliverDuePurges, outboxDepth } from '../src/purge/purge-outbox.ts'

declare module 'fastify' {
  interface FastifyInstance {
    /** Delivers due purges now instead of at the next tick (after an enqueue). */
    kickPurges(): void
  }
}

const TICK_MS = 1_000

async function purgePlugin(app: FastifyInstance): Promise<void> {
  const adapters = createAdapters(app.config.purgeTargets, app.config)
  let running: Promise<void> | undefined
  const drain = (): void => {
    if (adapters.length === 0 || running !== undefined) return
    running = deliverDuePurges(app.database.db, adapters, app.log)
      .then(() => undefined)
      .catch((err: unknown) => app.log.warn({ err }, 'purge outbox could not be read; will retry'))
      .finally(() => {
        running = undefined
      })
  }
  app.decorate('kickPurges', drain)
  app.metrics.registerCollector({
    name: 'variant_origin_purge_outbox_depth',
    help: 'CDN purges written to the outbox and not yet delivered.',
    type: 'gauge',
    read: async () => [{ value: await outboxDepth(app.database.db) }],
  })
  if (adapters.length === 0) return
  const timer = setInterval(drain, TICK_MS)
  timer.unref()
  app.addHook('onClose', async () => {
    clearInterval(timer)
    await running
  })
}

export default fp(purgePlugin, { name: 'purge', dependencies: ['config', 'database', 'metrics'] })
