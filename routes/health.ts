// Liveness and readiness for orchestrators and the SRE: JSON, never cached.

import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { sql } from 'kysely'
import { pendingMigrations } from '../src/db/database.ts'
import { withTimeout } from '../src/timeout.ts'

const CHECK_TIMEOUT_MS = 1_000
const MIGRATIONS_RECHECK_MS = 60_000

/** A check that does not answer within CHECK_TIMEOUT_MS fails, naming what did not answer. */
const checked = <T>(work: Promise<T>, what: string): Promise<T> => withTimeout(work, CHECK_TIMEOUT_MS, () => new Error(`${what} did not answer within ${CHECK_TIMEOUT_MS} ms`))

const Check = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('fail'), Type.Literal('degraded'), Type.Literal('off')]),
  detail: Type.Optional(Type.String()),
})

/** One read replica (DATABASE_READ_URL): ok (serving reads), lagging or down (skipped: the primary serves its reads). */
const ReplicaCheck = Type.Object({
  replica: Type.String({ description: "position in DATABASE_READ_URL, from 0 (the metrics' replica label)" }),
  target: Type.String({ description: 'host:port/database' }),
  status: Type.Union([Type.Literal('ok'), Type.Literal('lagging'), Type.Literal('down')]),
  lagSeconds: Type.Union([Type.Number(), Type.Null()], { description: 'replay lag at the last probe; null when unknown' }),
  detail: Type.Optional(Type.String()),
})

/**
 * `events` appears only when the stream has a Redis of its own (EVENTS_REDIS_URL); `replicas` only with
 * read replicas (DATABASE_READ_URL), from their last probe (every DB_REPLICA_CHECK_INTERVAL_MS).
 */
const Checks = Type.Object({ database: Check, migrations: Check, redis: Check, events: Type.Optional(Check), replicas: Type.Optional(Type.Array(ReplicaCheck)) })

const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const ping = (client: NonNullable<typeof app.redis>, what: string, degraded: string) =>
    checked(client.ping(), what).then(
      () => ({ status: 'ok' as const }),
      (err: Error) => ({ status: 'degraded' as const, detail: `${err.message}; ${degraded}` }),
    )
  const separateEvents = app.eventsRedis !== null && app.eventsRedis !== app.redis ? app.eventsRedis : null

  // One database probe in flight at a time: a probe that comes while the last one still waits for a
  // connection joins it (each with its own deadline) instead of queueing more queries behind the work
  // it measures. Probes every few seconds from several balancers would otherwise pile up on a busy pool.
  // Migrations do not go back to pending while the process runs: once none are, the check (several
  // round trips) is repeated at most once a minute, and a probe costs one `select 1`.
  let probing: { select: Promise<unknown>; pending: Promise<string[]> } | undefined
  let migrationsCheckedAt = Number.NEGATIVE_INFINITY
  const pending = (db: typeof app.database.db): Promise<string[]> => {
    if (Date.now() - migrationsCheckedAt < MIGRATIONS_RECHECK_MS) return Promise.resolve([])
    return pendingMigrations(db).then((names) => {
      if (names.length === 0) migrationsCheckedAt = Date.now()
      return names
    })
  }
  const databaseProbe = () => {
    if (probing === undefined) {
      const { db } = app.database
      const current = { select: sql`select 1`.execute(db), pending: pending(db) }
      probing = current
      void Promise.allSettled([current.select, current.pending]).then(() => {
        if (probing === current) probing = undefined
      })
    }
    return probing
  }

  app.get(
    '/health/live',
    {
      logLevel: 'warn', // probes every few seconds: no request line each time
      config: { pressureHandler: () => undefined }, // an overloaded origin is still alive
      schema: { tags: ['health'], summary: 'Liveness: the process answers', response: { 200: Type.Object({ status: Type.Literal('ok') }) } },
    },
    async (_request, reply) => {
      reply.header('cache-control', 'no-store')
      return { status: 'ok' as const }
    },
  )

  app.get(
    '/health/ready',
    {
      logLevel: 'warn',
      schema: {
        tags: ['health'],
        summary: 'Readiness: database, migrations and Redis (and the events Redis when it is separate, and the read replicas)',
        response: {
          '2xx': Type.Object({ status: Type.Union([Type.Literal('ok'), Type.Literal('degraded')]), checks: Checks }),
          503: Type.Object({ status: Type.Literal('fail'), checks: Checks }),
        },
      },
    },
    async (_request, reply) => {
      reply.header('cache-control', 'no-store')
      const probe = databaseProbe()
      const [database, migrations, redis, events] = await Promise.all([
        checked(probe.select, 'PostgreSQL').then(
          () => ({ status: 'ok' as const }),
          (err: Error) => ({ status: 'fail' as const, detail: err.message }),
        ),
        checked(probe.pending, 'PostgreSQL').then(
          (pending) => (pending.length === 0 ? { status: 'ok' as const } : { status: 'fail' as const, detail: `pending: ${pending.join(', ')}; run npm run migrate` }),
          (err: Error) => ({ status: 'fail' as const, detail: err.message }),
        ),
        app.redis === null
          ? Promise.resolve({ status: 'off' as const, detail: 'REDIS_URL=off' })
          : ping(app.redis, 'Redis', 'serving from the in-process cache'),
        separateEvents === null ? Promise.resolve(undefined) : ping(separateEvents, 'the events Redis', 'POST /events answers 503'),
      ])
      const replicas = app.database.replicas?.reports()
      const checks = { database, migrations, redis, ...(events === undefined ? {} : { events }), ...(replicas === undefined ? {} : { replicas }) }
      if (database.status === 'fail' || migrations.status === 'fail') {
        return reply.code(503).send({ status: 'fail' as const, checks })
      }
      // A replica down or lagging costs the primary its reads, never the origin its readiness.
      const degraded = redis.status === 'degraded' || events?.status === 'degraded' || (replicas ?? []).some((r) => r.status !== 'ok')
      return { status: degraded ? ('degraded' as const) : ('ok' as const), checks }
    },
  )
}

export default healthRoutes
