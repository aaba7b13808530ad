// Row types for kysely. Migrations in migrations/ are the source of truth; these mirror them.

import type { ColumnType, Generated } from 'kysely'

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>

export type PageKind = 'landing' | 'seo'
export type PageStatus = 'draft' | 'published' | 'archived'

export interface PagesTable {
  id: Generated<number>
  path: string
  kind: PageKind
  title: string
  meta_description: Generated<string>
  canonical_url: string
  body_html: Generated<string>
  intent_text: Generated<string>
  /** pgvector text form `[x,y,...]`; read back as a string. */
  intent_embedding: string | null
  embedding_version: number | null
  /** sha256 of the text `intent_embedding` was computed from (with the version's model). */
  intent_hash: string | null
  vertical: Generated<string>
  template: Generated<string>
  status: Generated<PageStatus>
  crawl_weight: Generated<number>
  last_indexed_at: Date | null
  last_analyzed_at: Date | null
  created_at: Generated<Date>
  updated_at: Timestamp
}

export interface SegmentsTable {
  slug: string
  description: string
  utm_sources: string[]
  is_default: Generated<boolean>
  created_at: Generated<Date>
}

export interface ContentVariantsTable {
  id: Generated<number>
  variant_key: string
  segment: string
  /** The landing page the variant belongs to; exactly one of page_id and vertical is set. */
  page_id: number | null
  /** Copy shared by every landing page of a vertical. */
  vertical: string | null
  headline: string
  subhead: string
  features: ColumnType<string[], string, string>
  cta_label: string
  cta_url: string
  social_proof: string
  embedding: string
  vector_version: number
  metadata: ColumnType<Record<string, unknown>, string, string>
  content_hash: string
  embedding_text: Generated<string>
  updated_at: Timestamp
}

export interface EmbeddingVersionsTable {
  id: Generated<number>
  model: string
  dimensions: number
  active: Generated<boolean>
  created_at: Generated<Date>
}

export interface PageEmbeddingStagingTable {
  page_id: number
  version_id: number
  embedding: string
  intent_hash: string
}

export type PurgeTarget = 'varnish' | 'fastly' | 'cloudflare'

export interface PurgeOutboxTable {
  id: Generated<number>
  target: PurgeTarget
  paths: string[]
  tags: string[]
  soft: boolean
  status: Generated<'pending' | 'done' | 'failed'>
  attempts: Generated<number>
  next_attempt_at: Generated<Date>
  last_error: string | null
  created_at: Generated<Date>
  done_at: Date | null
}

export type SearchConsoleSource = 'api' | 'json' | 'csv' | 'live'

export interface SearchConsoleImportsTable {
  id: Generated<number>
  source: SearchConsoleSource
  start_date: ColumnType<Date, string, string>
  end_date: ColumnType<Date, string, string>
  rows_received: number
  pages_matched: Generated<number>
  urls_unknown: Generated<number>
  pages_changed: Generated<number>
  pages_decayed: Generated<number>
  created_at: Generated<Date>
}

export interface SearchConsoleRowsTable {
  import_id: number
  page_id: number
  in_import: boolean
  clicks: number
  impressions: number
  ctr: number | null
  position: number | null
  weight_before: number
  weight_after: number
}

export interface SitemapVersionTable {
  singleton: Generated<boolean>
  version: ColumnType<string, never, never>
  changed_at: ColumnType<Date, never, never>
}

export interface EngagementDailyTable {
  page_id: number
  /** UTC day of the client's timestamp, `YYYY-MM-DD`. */
  day: ColumnType<Date, string, string>
  segment: string
  event_type: string
  /** 0 = no variant. */
  variant_id: Generated<number>
  event_count: ColumnType<string, number | string, number | string>
  value_count: ColumnType<string, number | string | undefined, number | string>
  /** numeric: read back as a string so sums keep their precision. */
  value_sum: ColumnType<string, number | string | undefined, number | string>
  updated_at: Generated<Date>
}

export interface EngagementStreamReceiptsTable {
  stream: string
  message_id: string
  processed_at: Generated<Date>
}

export type ExperimentStatus = 'running' | 'paused' | 'pinned'

export interface ExperimentsTable {
  page_id: number
  segment: string
  status: ColumnType<ExperimentStatus, ExperimentStatus | undefined, ExperimentStatus>
  pinned_variant_id: number | null
  /** bigint[]: node-postgres reads them as strings. */
  variants: ColumnType<string[], number[], number[]>
  allocation: ColumnType<string[], number[], number[]>
  p_best: ColumnType<Record<string, number>, string | undefined, string>
  started_at: Generated<Date>
  reallocated_at: Generated<Date>
}

export interface ExperimentCountsTable {
  page_id: number
  segment: string
  variant_id: number
  views: ColumnType<string, number | undefined, number | string>
  conversions: ColumnType<string, number | undefined, number | string>
  updated_at: Generated<Date>
}

export interface Database {
  pages: PagesTable
  segments: SegmentsTable
  content_variants: ContentVariantsTable
  embedding_versions: EmbeddingVersionsTable
  page_embedding_staging: PageEmbeddingStagingTable
  purge_outbox: PurgeOutboxTable
  search_console_imports: SearchConsoleImportsTable
  search_console_rows: SearchConsoleRowsTable
  sitemap_version: SitemapVersionTable
  engagement_daily: EngagementDailyTable
  engagement_stream_receipts: EngagementStreamReceiptsTable
  experiments: ExperimentsTable
  experiment_counts: ExperimentCountsTable
}
