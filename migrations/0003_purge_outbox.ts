// Purges bound for a CDN wait here until the CDN has accepted them: an API outage delays a purge,
// it never loses one. Frozen once landed.

import { type Kysely, sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('purge_outbox')
    .addColumn('id', 'bigserial', (c) => c.primaryKey())
    .addColumn('target', 'text', (c) => c.notNull().check(sql`target in ('varnish', 'fastly', 'cloudflare')`))
    .addColumn('paths', sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'::text[]`))
    .addColumn('tags', sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'::text[]`))
    .addColumn('soft', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('pending').check(sql`status in ('pending', 'done', 'failed')`))
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('next_attempt_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('last_error', 'text')
    .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('done_at', 'timestamptz')
    .execute()
  await sql`CREATE INDEX purge_outbox_due ON purge_outbox (next_attempt_at) WHERE status = 'pending'`.execute(db)
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('purge_outbox').execute()
}
