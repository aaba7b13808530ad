// The database: the configured PostgreSQL or the embedded one (and the read replicas of DATABASE_READ_URL,
// with their gauges); migrations and the demo seed on start, on the primary.

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
  const { config, metrics } = app
  const handle = await openDatabase(config, app.log)
  app.decorate('database', handle)
  app.addHook('onClose', async () => {
    await handle.close()
  })
  metrics.registerCollector({
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
  // Where queries ran: the primary (writes, admin, and reads when no replica serves) or a read replica.
  metrics.registerCollector({
    name: 'variant_origin_db_queries_total',
    help: 'Database queries by where they ran: target="primary", or target="replica" with the replica\'s position in DATABASE_READ_URL.',
    type: 'counter',
    labelNames: ['target', 'replica'],
    read: () => [
      { labels: { target: 'primary' }, value: handle.primaryQueries() },
      ...(handle.replicas?.replicaQueries() ?? []).map(({ replica, queries }) => ({ labels: { target: 'replica', replica }, value: queries })),
    ],
  })
  const { replicas } = handle
  if (replicas !== undefined) {
    metrics.registerCollector({
      name: 'variant_origin_db_replica_up',
      help: 'Whether the read replica answered its last probe (1) or is down (0); its reads go to the primary meanwhile.',
      type: 'gauge',
      labelNames: ['replica'],
      read: () => replicas.reports().map((r) => ({ labels: { replica: r.replica }, value: r.status === 'down' ? 0 : 1 })),
    })
    metrics.registerCollector({
      name: 'variant_origin_db_replica_lag_seconds',
      help: 'Replay lag of the read replica at its last probe (NaN when unknown: down, or nothing replayed yet). Over DB_REPLICA_MAX_LAG_SECONDS its reads go to the primary.',
      type: 'gauge',
      labelNames: ['replica'],
      read: () => replicas.reports().map((r) => ({ labels: { replica: r.replica }, value: r.lagSeconds ?? Number.NaN })),
    })
    metrics.registerCollector({
      name: 'variant_origin_db_replica_fallbacks_total',
      help: 'Render-path reads sent to the primary: unavailable (no replica up, caught up and within the lag limit) or error (the replica failed under the query with a connection error; asked again on the primary).',
      type: 'counter',
      labelNames: ['reason'],
      read: () => Object.entries(replicas.fallbacks).map(([reason, value]) => ({ labels: { reason }, value })),
    })
  }
  app.log.info(
    { embedded: handle.embedded, dataDir: handle.embedded ? config.dataDir : undefined, replicas: replicas?.reports() },
    handle.embedded ? 'using the embedded PostgreSQL (PGlite + pgvector)' : replicas === undefined ? 'using PostgreSQL from DATABASE_URL' : 'using PostgreSQL from DATABASE_URL, and read replicas from DATABASE_READ_URL for the render path',
  )

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
