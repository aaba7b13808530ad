// The durable outbox of CDN purges: written in the same request that evicts the origin's caches,
// delivered by a worker that retries with exponential backoff, so a CDN API outage loses nothing.

import { type Kysely, sql } from 'kysely'
import type { Database, PurgeTarget } from '../db/schema.ts'
import type { CdnAdapter, PurgeRequest } from './cdn-adapters.ts'

const MAX_ATTEMPTS = 20
const MAX_BACKOFF_MS = 10 * 60_000

interface Logger {
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
}

export async function enqueuePurge(db: Kysely<Database>, targets: readonly PurgeTarget[], request: PurgeRequest): Promise<number> {
  if (targets.length === 0) return 0
  await db
    .insertInto('purge_outbox')
    .values(targets.map((target) => ({ target, paths: request.paths, tags: request.tags, soft: request.soft, last_error: null, done_at: null })))
    .execute()
  return targets.length
}

/**
 * Tags per outbox row: Varnish gets them in one request header (8 KB by default), Fastly and Cloudflare
 * adapters split further as their APIs require.
 */
export const TAGS_PER_PURGE = 200

/** A purge of many tags, split into outbox rows of TAGS_PER_PURGE; returns the rows written. */
export async function enqueueTagPurge(db: Kysely<Database>, targets: readonly PurgeTarget[], tags: readonly string[], soft: boolean): Promise<number> {
  let queued = 0
  for (let i = 0; i < tags.length; i += TAGS_PER_PURGE) queued += await enqueuePurge(db, targets, { paths: [], tags: tags.slice(i, i + TAGS_PER_PURGE), soft })
  return queued
}

export function backoffMs(attempts: number): number {
  return Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.max(0, attempts - 1))
}

/** Delivers due purges once; returns how many were delivered. Called on an interval by the worker. */
export async function deliverDuePurges(db: Kysely<Database>, adapters: readonly CdnAdapter[], log: Logger, limit = 50): Promise<number> {
  const byTarget = new Map(adapters.map((a) => [a.target, a]))
  // Claim by lease: due rows get a later next_attempt_at in the same statement that reads them, so
  // instances sharing the outbox do not deliver one purge at the same time (SKIP LOCKED on PostgreSQL).
  const due = await db
    .updateTable('purge_outbox')
    .set({ next_attempt_at: sql`now() + interval '60 seconds'` })
    .where('id', 'in', (eb) =>
      eb.selectFrom('purge_outbox').select('id').where('status', '=', 'pending').where('next_attempt_at', '<=', sql<Date>`now()`).orderBy('id').limit(limit).forUpdate().skipLocked(),
    )
    .returningAll()
    .execute()
  due.sort((a, b) => Number(a.id) - Number(b.id))
  let delivered = 0
  for (const row of due) {
    const adapter = byTarget.get(row.target)
    if (adapter === undefined) continue // a target switched off since: left pending for an instance that has it
    try {
      await adapter.purge({ paths: row.paths, tags: row.tags, soft: row.soft })
      await db.updateTable('purge_outbox').set({ status: 'done', done_at: sql`now()`, attempts: row.attempts + 1, last_error: null }).where('id', '=', row.id).execute()
      delivered++
    } catch (err) {
      const attempts = row.attempts + 1
      const message = err instanceof Error ? err.message : String(err)
      const failed = attempts >= MAX_ATTEMPTS
      await db
        .updateTable('purge_outbox')
        .set({ attempts, last_error: message.slice(0, 1000), status: failed ? 'failed' : 'pending', next_attempt_at: new Date(Date.now() + backoffMs(attempts)) })
        .where('id', '=', row.id)
        .execute()
      if (failed) log.error({ id: row.id, target: row.target, attempts, err }, 'CDN purge gave up after repeated failures; it stays in purge_outbox with status failed')
      else log.warn({ id: row.id, target: row.target, attempts, err }, 'CDN purge failed; will retry')
    }
  }
  return delivered
}

export async function outboxDepth(db: Kysely<Database>): Promise<number> {
  const row = await db.selectFrom('purge_outbox').select((eb) => eb.fn.countAll<string>().as('n')).where('status', '=', 'pending').executeTakeFirstOrThrow()
  return Number(row.n)
}
