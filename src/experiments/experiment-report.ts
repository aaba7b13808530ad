// What a marketer reads about experiments: per page, segment and variant, the views, conversions, rate
// with a 95% interval, probability of being best and share of buckets. Shared by
// GET /admin/experiments and `npm run experiments`.

import { rateInterval95 } from './allocation.ts'
import { experimentKey, type ExperimentRow, type VariantCounts } from './experiment-repository.ts'
import { bestVariant } from './experiment-registry.ts'

export interface VariantReport {
  variant: number
  views: number
  conversions: number
  /** conversions / views; 0 without views. */
  rate: number
  /** Wilson 95% interval of the rate. */
  interval95: [number, number]
  probabilityBest: number
  /** Buckets that see this variant, over all buckets (a pinned experiment: 1 for the pin). */
  share: number
}

export interface ExperimentReport {
  page: string
  segment: string
  status: 'running' | 'paused' | 'pinned'
  pinnedVariant: number | null
  /** What a visitor without a bucket (a crawler) is served. */
  bestVariant: number
  since: string
  reallocatedAt: string
  variants: VariantReport[]
}

export function experimentReports(rows: readonly ExperimentRow[], counts: ReadonlyMap<string, ReadonlyMap<number, VariantCounts>>): ExperimentReport[] {
  return rows.map((row) => {
    const seen = counts.get(experimentKey(row.pageId, row.segment))
    const best = bestVariant(row)
    return {
      page: row.path,
      segment: row.segment,
      status: row.status,
      pinnedVariant: row.pinnedVariantId ?? null,
      bestVariant: best,
      since: row.startedAt.toISOString(),
      reallocatedAt: row.reallocatedAt.toISOString(),
      variants: row.variants.map((variant) => {
        const { views, conversions } = seen?.get(variant) ?? { views: 0, conversions: 0 }
        const buckets = row.status === 'pinned' ? (variant === best ? row.allocation.length : 0) : row.allocation.filter((v) => v === variant).length
        return {
          variant,
          views,
          conversions,
          rate: views === 0 ? 0 : Math.min(conversions, views) / views,
          interval95: rateInterval95(conversions, views),
          probabilityBest: row.pBest.get(variant) ?? 0,
          share: row.allocation.length === 0 ? 0 : buckets / row.allocation.length,
        }
      }),
    }
  })
}

const pct = (x: number): string => `${(x * 100).toFixed(1)}%`

/** The reports as a plain-text table (npm run experiments). */
export function formatReports(reports: readonly ExperimentReport[]): string {
  if (reports.length === 0) return 'No experiments: a landing page competes once a segment has two or more variants in its scope.\n'
  const lines = [['page', 'segment', 'status', 'variant', 'views', 'conversions', 'rate', '95% interval', 'P(best)', 'share', 'since'].join('\t')]
  for (const r of reports) {
    for (const v of r.variants) {
      const mark = v.variant === r.bestVariant ? '*' : ''
      lines.push([r.page, r.segment, r.status, `${v.variant}${mark}`, v.views, v.conversions, pct(v.rate), `${pct(v.interval95[0])}-${pct(v.interval95[1])}`, pct(v.probabilityBest), pct(v.share), r.since.slice(0, 16).replace('T', ' ')].join('\t'))
    }
  }
  // Columns aligned on the widest cell.
  const cells = lines.map((l) => l.split('\t'))
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((c) => (c[i] ?? '').length)))
  return `${cells.map((c) => c.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')}\n(* = served to visitors without a bucket)\n`
}
