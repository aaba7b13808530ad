// Engagement aggregates from the events stream: one row per page, day, segment, event type and variant,
// history kept. Stream message ids already counted are recorded so a re-delivered message (XACK lost
// after the commit, or claimed from a consumer that died after committing) is not counted twice.
// Frozen once landed.

import { type Kysely, sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('engagement_daily')
    .addColumn('page_id', 'bigint', (c) => c.notNull().references('pages.id').onDelete('cascade'))
    .addColumn('day', 'date', (c) => c.notNull())
    .addColumn('segment', 'text', (c) => c.notNull())
    .addColumn('event_type', 'text', (c) => c.notNull().check(sql`event_type ~ '^[a-z][a-z_]{0,31}$'`))
    // 0 = no variant: a primary key column cannot be null, and "no variant" is a bucket of its own.
    .addColumn('variant_id', 'bigint', (c) => c.notNull().defaultTo(0).check(sql`variant_id >= 0`))
    .addColumn('event_count', 'bigint', (c) => c.notNull().check(sql`event_count >= 0`))
    // Events that carried a value (scroll depth, conversion amount): value_sum / value_count is the mean.
    .addColumn('value_count', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('value_sum', 'numeric', (c) => c.notNull().defaultTo(0))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('engagement_daily_pkey', ['page_id', 'day', 'segment', 'event_type', 'variant_id'])
    .execute()
  await db.schema.createIndex('engagement_daily_day').on('engagement_daily').column('day').execute()

  await db.schema
    .createTable('engagement_stream_receipts')
    .addColumn('stream', 'text', (c) => c.notNull())
    .addColumn('message_id', 'text', (c) => c.notNull())
    .addColumn('processed_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('engagement_stream_receipts_pkey', ['stream', 'message_id'])
    .execute()
  await db.schema.createIndex('engagement_stream_receipts_processed_at').on('engagement_stream_receipts').column('processed_at').execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('engagement_stream_receipts').execute()
  await db.schema.dropTable('engagement_daily').execute()
}
