// What a test asserts instead of a wall-clock bound or a service object's private counter: the value
// of one of the app's Prometheus series, read from its prom-client registry (what /metrics exposes).

import type { FastifyInstance } from 'fastify'

interface SeriesValue {
  value: number
  labels: Record<string, string | number | undefined>
  /** Set on a histogram's or summary's series: `<name>_bucket`, `<name>_sum`, `<name>_count`. */
  metricName?: string
}

const SERIES_SUFFIX = /_(bucket|count|sum)$/

/**
 * The sum of the series of `name` whose labels include every one of `labels`; 0 when none matches
 * (a labelled counter has no series until it is first bumped). A histogram or summary is read
 * through one of its series: `variant_origin_render_duration_seconds_count`, `..._sum` or
 * `..._bucket` (with `{ le: '0.5' }`). A name the registry does not know throws, so a misspelt
 * metric cannot pass as a counter that stayed at 0.
 */
export async function metricValue(app: FastifyInstance, name: string, labels: Record<string, string> = {}): Promise<number> {
  const { registry } = app.metrics
  let metric = registry.getSingleMetric(name)
  let series: string | undefined
  if (metric === undefined && SERIES_SUFFIX.test(name)) {
    metric = registry.getSingleMetric(name.replace(SERIES_SUFFIX, ''))
    series = name
  }
  if (metric === undefined) throw new Error(`no metric ${name} in the registry`)
  const { type, values } = (await metric.get()) as unknown as { type: unknown; values: SeriesValue[] }
  if (series === undefined && (type === 'histogram' || type === 'summary')) {
    throw new Error(`${name} is a ${type}: name one of its series (${name}_count, ${name}_sum or ${name}_bucket)`)
  }
  let sum = 0
  for (const value of values) {
    if (series !== undefined && value.metricName !== series) continue
    if (Object.entries(labels).every(([label, wanted]) => value.labels[label] !== undefined && String(value.labels[label]) === wanted)) sum += value.value
  }
  return sum
}
