// The database: the configured PostgreSQL or the embedded one; migrations and the demo seed on start.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { type DatabaseHandle, migrateToLatest, openDatabase } from '../src/db/database.ts'
import { seedDemoSite } from '../src/demo/demo-site.ts'

declare module 'fastify' {
  interface FastifyInstance {
    database: DatabaseHandle
  }
}

async function databasePlugin(app: FastifyInstance): Promise<void> {
  const { config } = app
  const handle = await openDatabase(config, app.log)
  app.decorate('database', handle)
  app.addHook('onClose', async () => {
    await handle.close()
  })
  app.metrics.registerCollector({
    name: 'variant_origin_db_pool_connections',
    help: 'PostgreSQL pool connections: total open, idle, and callers waiting for one.',
    type: 'gauge',
    labelNames: ['state'],
    read: () => [
      { labels: { state: 'total' }, value: handle.pool.totalCount },
      { labels: { state: 'idle' }, value: handle.pool.idleCount },
      { labels: { state: 'waiting' }, value: handle.pool.waitingCount },
    ],
  })
  app.log.info({ embedded: handle.embedded, dataDir: handle.embedded ? config.dataDir : undefined }, handle.embedded ? 'using the embedded PostgreSQL (PGlite + pgvector)' : 'using PostgreSQL from DATABASE_URL')

  try {
    if (config.migrateOnStart) {
      const result = await migrateToLatest(handle.db)
      const applied = (result.results ?? []).map((r) => r.migrationName)
      if (applied.length > 0) app.log.info({ applied }, 'migrations applied')
    }
    if (config.seedDemo) {
      const seed = await seedDemoSite(handle.db, config.publicBaseUrl)
      if (seed.seeded) app.log.info(seed, 'demo site loaded into the empty database')
    }
  } catch (err) {
    // A failed boot never runs onClose: release the pool and the embedded server here.
    await handle.close()
    throw err
  }
}

export default fp(databasePlugin, { name: 'database', dependencies: ['config', 'metrics'] })
