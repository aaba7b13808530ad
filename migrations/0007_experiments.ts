// Experiments: every landing page with two or more variants in scope for a segment runs one. The CDN
// gives each visitor a sticky bucket (0..EXPERIMENT_BUCKETS-1); `allocation[b]` is the variant bucket b
// sees, moved by a bandit towards the variant that converts (src/experiments/). Counts per variant are
// what the bandit reads: views and conversions from visitors with a bucket, never from crawlers. Frozen once landed.

import { type Kysely, sql } from 'kysely'

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('experiments')
    .addColumn('page_id', 'bigint', (c) => c.notNull().references('pages.id').onDelete('cascade'))
    .addColumn('segment', 'text', (c) => c.notNull())
    // running: the bandit moves buckets; paused: the split stays as it is; pinned: every bucket sees pinned_variant_id.
    .addColumn('status', 'text', (c) => c.notNull().defaultTo('running').check(sql`status IN ('running', 'paused', 'pinned')`))
    .addColumn('pinned_variant_id', 'bigint')
    // The variants competing, and the variant each bucket sees (one entry per bucket).
    .addColumn('variants', sql`bigint[]`, (c) => c.notNull())
    .addColumn('allocation', sql`bigint[]`, (c) => c.notNull())
    // variant id -> probability of being best, as of the last reallocation.
    .addColumn('p_best', 'jsonb', (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn('started_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn('reallocated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('experiments_pkey', ['page_id', 'segment'])
    .addCheckConstraint('experiments_pinned_variant', sql`(status = 'pinned') = (pinned_variant_id IS NOT NULL)`)
    .execute()

  await db.schema
    .createTable('experiment_counts')
    .addColumn('page_id', 'bigint', (c) => c.notNull())
    .addColumn('segment', 'text', (c) => c.notNull())
    .addColumn('variant_id', 'bigint', (c) => c.notNull())
    .addColumn('views', 'bigint', (c) => c.notNull().defaultTo(0).check(sql`views >= 0`))
    .addColumn('conversions', 'bigint', (c) => c.notNull().defaultTo(0).check(sql`conversions >= 0`))
    .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint('experiment_counts_pkey', ['page_id', 'segment', 'variant_id'])
    .addForeignKeyConstraint('experiment_counts_experiment', ['page_id', 'segment'], 'experiments', ['page_id', 'segment'], (c) => c.onDelete('cascade'))
    .execute()
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('experiment_counts').execute()
  await db.schema.dropTable('experiments').execute()
}
