// The Grafana dashboard and Prometheus config stay in step with the metrics the origin exposes:
// every query names only the metrics (and their labels and label values) of the /metrics contract.

import { spawnSync } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { buildTestApp } from '../../helper.ts'

const root = (relative: string): string => fileURLToPath(new URL(`../../../${relative}`, import.meta.url))

interface MetricSpec {
  type: 'counter' | 'gauge' | 'histogram'
  /** label -> allowed values (undefined: any value) */
  labels: Record<string, readonly string[] | undefined>
  /** Registered only where its source runs (the stream gauges: an events consumer; the replica gauges: DATABASE_READ_URL). */
  optional?: boolean
}

/**
 * The /metrics contract (issue 6, as plugins/metrics.ts implements it): names, types, labels and their
 * values. The crawl-weight gauge carries `max_weight`, not `le`: promtool rejects `le` outside histograms.
 */
const METRICS: Record<string, MetricSpec> = {
  http_request_duration_seconds: {
    type: 'histogram',
    labels: { method: undefined, route: undefined, status_code: undefined, cache: ['HIT-L1', 'HIT-L2', 'STALE', 'MISS', 'DEFAULT', 'none'] },
  },
  variant_origin_cache_requests_total: { type: 'counter', labels: { tier: ['l1', 'l2'], result: ['hit', 'miss', 'stale'] } },
  variant_origin_renders_total: { type: 'counter', labels: { outcome: ['ok', 'error'] } },
  variant_origin_render_duration_seconds: { type: 'histogram', labels: {} },
  variant_origin_stale_served_total: { type: 'counter', labels: { reason: ['revalidate', 'error', 'budget'] } },
  variant_origin_singleflight_coalesced_total: { type: 'counter', labels: {} },
  variant_origin_l2_reads_coalesced_total: { type: 'counter', labels: {} },
  variant_origin_vector_search_duration_seconds: { type: 'histogram', labels: {} },
  variant_origin_db_pool_connections: { type: 'gauge', labels: { state: ['total', 'idle', 'waiting'] } },
  variant_origin_redis_errors_total: { type: 'counter', labels: { kind: ['connection', 'command'] } },
  variant_origin_circuit_breaker_state: { type: 'gauge', labels: { breaker: undefined } },
  variant_origin_purge_outbox_depth: { type: 'gauge', labels: {} },
  variant_origin_events_stream_length: { type: 'gauge', labels: {}, optional: true },
  variant_origin_events_consumer_lag: { type: 'gauge', labels: {}, optional: true },
  variant_origin_events_pending: { type: 'gauge', labels: {}, optional: true },
  variant_origin_warmup_success_ratio: { type: 'gauge', labels: {} },
  variant_origin_pages_by_crawl_weight: { type: 'gauge', labels: { max_weight: ['0.1', '0.2', '0.3', '0.4', '0.5', '0.6', '0.7', '0.8', '0.9', '1'] } },
  variant_origin_db_queries_total: { type: 'counter', labels: { target: ['primary', 'replica'], replica: undefined } },
  // One series per experiment variant: none until a landing page has competing variants.
  variant_origin_experiment_bucket_share: { type: 'gauge', labels: { page: undefined, segment: undefined, variant: undefined }, optional: true },
  variant_origin_experiment_conversion_rate: { type: 'gauge', labels: { page: undefined, segment: undefined, variant: undefined }, optional: true },
  variant_origin_experiment_probability_best: { type: 'gauge', labels: { page: undefined, segment: undefined, variant: undefined }, optional: true },
  variant_origin_db_replica_up: { type: 'gauge', labels: { replica: undefined }, optional: true },
  variant_origin_db_replica_lag_seconds: { type: 'gauge', labels: { replica: undefined }, optional: true },
  variant_origin_db_replica_fallbacks_total: { type: 'counter', labels: { reason: ['unavailable', 'error'] }, optional: true },
}

const FUNCTIONS = new Set(['label_replace', 'sum', 'max', 'min', 'avg', 'count', 'rate', 'irate', 'increase', 'histogram_quantile', 'topk', 'bottomk', 'clamp_min', 'clamp_max', 'delta', 'deriv', 'abs', 'vector', 'max_over_time', 'avg_over_time'])
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset'])

/** The metric a series name belongs to: a histogram's _bucket/_count/_sum series name their histogram. */
function metricOf(series: string): string | undefined {
  if (METRICS[series] !== undefined) return series
  const base = series.replace(/_(bucket|count|sum)$/, '')
  return METRICS[base]?.type === 'histogram' && base !== series ? base : undefined
}

/** Problems in one PromQL expression: unknown series, functions, labels or label values. */
function checkExpression(expr: string): { problems: string[]; metrics: Set<string> } {
  const problems: string[] = []
  const metrics = new Set<string>()
  const selectors = [...expr.matchAll(/([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}/g)]
  for (const [, name, body] of selectors) {
    const metric = name === undefined ? undefined : metricOf(name)
    if (metric === undefined) {
      problems.push(`selector ${JSON.stringify(`${name ?? ''}{${body}}`)} names no known metric`)
      continue
    }
    const labels: Record<string, readonly string[] | undefined> = { ...METRICS[metric]!.labels, ...(name!.endsWith('_bucket') ? { le: undefined } : {}) }
    for (const [, label, op, value] of body!.matchAll(/(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"/g)) {
      if (!(label! in labels)) {
        problems.push(`${metric} has no label ${label}`)
        continue
      }
      const allowed = labels[label!]
      const values = op === '=~' || op === '!~' ? value!.split('|') : [value!]
      for (const v of values) if (allowed !== undefined && !allowed.includes(v)) problems.push(`${metric}{${label}} has no value ${JSON.stringify(v)}`)
    }
  }
  // What is left once selectors' bodies, ranges, strings and numbers are gone: functions, keywords,
  // grouping labels, and bare metric names.
  const stripped = expr.replace(/\{[^}]*\}/g, ' ').replace(/\[[^\]]*\]/g, ' ').replace(/"[^"]*"/g, ' ')
  const grouped = new Set<string>()
  for (const [, list] of stripped.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)) for (const label of list!.split(',')) grouped.add(label.trim())
  const bare = stripped.replace(/\b(?:by|without|on|ignoring)\s*\([^)]*\)/g, ' ')
  for (const match of bare.matchAll(/[a-zA-Z_:][\w:]*/g)) {
    const token = match[0]
    const following = bare.slice((match.index ?? 0) + token.length).trimStart()
    if (following.startsWith('(')) {
      if (!FUNCTIONS.has(token)) problems.push(`unknown function ${token}`)
    } else if (!KEYWORDS.has(token)) {
      const metric = metricOf(token)
      if (metric === undefined) problems.push(`${token} is not a metric of the /metrics contract`)
      else metrics.add(metric)
    }
  }
  for (const [, name] of selectors) if (name !== undefined && metricOf(name) !== undefined) metrics.add(metricOf(name)!)
  for (const label of grouped) {
    if (label === '') continue
    const known = [...metrics].some((m) => label in METRICS[m]!.labels || (label === 'le' && METRICS[m]!.type === 'histogram'))
    if (!known) problems.push(`no metric in this query has the label ${label}`)
  }
  return { problems, metrics }
}

interface Panel {
  type: string
  title: string
  datasource?: { uid?: string }
  targets?: Array<{ expr?: string; datasource?: { uid?: string } }>
}

const dashboard = JSON.parse(await readFile(root('deploy/grafana/dashboards/variant-origin.json'), 'utf8')) as { uid: string; panels: Panel[] }
const datasources = await readFile(root('deploy/grafana/provisioning/datasources/prometheus.yml'), 'utf8')

t.test('the checker itself tells good queries from bad ones', async (t) => {
  t.same(checkExpression('sum by (cache) (rate(http_request_duration_seconds_count{cache=~"HIT-L1|STALE"}[5m]))').problems, [])
  t.same(checkExpression('histogram_quantile(0.9, sum by (le) (rate(variant_origin_vector_search_duration_seconds_bucket[5m])))').problems, [])
  t.same(checkExpression('rate(http_requests_total[5m])').problems, ['http_requests_total is not a metric of the /metrics contract'])
  t.same(checkExpression('variant_origin_cache_requests_total{tier="l3"}').problems, ['variant_origin_cache_requests_total{tier} has no value "l3"'])
  t.same(checkExpression('variant_origin_renders_total{status="ok"}').problems, ['variant_origin_renders_total has no label status'])
  t.same(checkExpression('sum by (shard) (variant_origin_purge_outbox_depth)').problems, ['no metric in this query has the label shard'])
  t.same(checkExpression('variant_origin_purge_outbox_depth_count').problems, ['variant_origin_purge_outbox_depth_count is not a metric of the /metrics contract'], 'only histograms have _count')
  t.same(checkExpression('frobnicate(variant_origin_purge_outbox_depth)').problems, ['unknown function frobnicate'])
})

t.test('every dashboard query uses only the /metrics contract, and every metric is on the dashboard', async (t) => {
  const provisionedUid = /^\s*uid:\s*(\S+)\s*$/m.exec(datasources)?.[1]
  t.equal(provisionedUid, 'prometheus', 'the provisioned datasource uid')
  const used = new Set<string>()
  const panels = dashboard.panels.filter((p) => p.type !== 'row')
  t.ok(panels.length >= 10)
  for (const panel of panels) {
    t.equal(panel.datasource?.uid, provisionedUid, `${panel.title}: the provisioned datasource`)
    t.ok((panel.targets ?? []).length > 0, `${panel.title}: has queries`)
    for (const target of panel.targets ?? []) {
      t.equal(target.datasource?.uid, provisionedUid)
      const { problems, metrics } = checkExpression(target.expr ?? '')
      t.same(problems, [], `${panel.title}: ${target.expr}`)
      for (const m of metrics) used.add(m)
    }
  }
  t.same([...used].sort(), Object.keys(METRICS).sort(), 'every metric of the contract has a panel')
  const titles = panels.map((p) => p.title.toLowerCase()).join('\n')
  for (const needed of ['hit ratio by tier', 'p50 / p95 / p99', 'crawl weight', 'engagement stream', 'purge outbox depth', 'circuit breaker']) t.match(titles, needed)
})

t.test('Prometheus scrapes the origin; promtool and docker-compose accept the files where installed', async (t) => {
  const prometheus = await readFile(root('deploy/prometheus/prometheus.yml'), 'utf8')
  t.match(prometheus, /metrics_path: \/metrics/)
  t.match(prometheus, /targets: \["origin:3000"\]/)
  const promtool = spawnSync('promtool', ['check', 'config', root('deploy/prometheus/prometheus.yml')], { encoding: 'utf8', timeout: 30_000 })
  if (promtool.error === undefined) t.equal(promtool.status, 0, promtool.stdout + promtool.stderr)
  else if (process.env.CI) t.fail('promtool is not installed: .ci/run installs the Debian package prometheus')
  else t.comment('promtool is not installed (apt-get install prometheus): config syntax not checked')
  const compose = spawnSync('docker-compose', ['--profile', 'observability', 'config', '-q'], { cwd: root('.'), encoding: 'utf8', timeout: 30_000 })
  if (compose.error === undefined) t.equal(compose.status, 0, compose.stderr)
  else t.comment('docker-compose is not installed: docker-compose.yml not checked')
})

t.test('the replica profile: a streaming replica of the primary, and the origin reading from it when deploy/replica.env is used', async (t) => {
  t.equal(spawnSync('bash', ['-n', root('deploy/postgres/replica-entrypoint.sh')]).status, 0, 'the standby entrypoint parses')
  const entrypoint = await readFile(root('deploy/postgres/replica-entrypoint.sh'), 'utf8')
  t.match(entrypoint, /pg_basebackup -h "\$PRIMARY_HOST" -p 5432 -U "\$REPLICATION_USER" -D "\$PGDATA" -R -X stream/)
  t.match(await readFile(root('deploy/postgres/pg_hba.conf'), 'utf8'), /^host\s+replication\s+replicator\s+all\s+scram-sha-256$/m, 'the primary admits the replication role')
  const env = await readFile(root('deploy/replica.env'), 'utf8')
  t.match(env, /^COMPOSE_PROFILES=replica$/m)
  t.match(env, /^DATABASE_READ_URL=postgres:\/\/origin:origin@postgres-replica:5432\/origin$/m)
  const config = (args: string[]) => spawnSync('docker-compose', [...args, 'config'], { cwd: root('.'), encoding: 'utf8', timeout: 30_000 })
  const plain = config([])
  if (plain.error !== undefined) {
    t.comment('docker-compose is not installed: the replica profile is not checked with docker-compose config')
    return
  }
  t.equal(plain.status, 0, plain.stderr)
  t.match(plain.stdout, /DATABASE_READ_URL: (''|"")$/m, 'without the profile the origin has no replica')
  const profile = config(['--profile', 'replica'])
  t.equal(profile.status, 0, profile.stderr)
  t.match(profile.stdout, /^ {2}postgres-replica:\n(?: {4,}.*\n)*? {4}profiles:\n {4,}- replica$/m, 'postgres-replica is in the replica profile')
  const withEnv = config(['--env-file', 'deploy/replica.env'])
  t.equal(withEnv.status, 0, withEnv.stderr)
  t.match(withEnv.stdout, /DATABASE_READ_URL: postgres:\/\/origin:origin@postgres-replica:5432\/origin/, 'deploy/replica.env points the origin at the standby')
})

t.test('the origin exposes every metric of the dashboard', async (t) => {
  const app = await buildTestApp(t, { SEED_DEMO: 'false' })
  const response = await app.inject({ url: '/metrics' })
  t.equal(response.statusCode, 200, 'GET /metrics answers')
  for (const [name, spec] of Object.entries(METRICS)) {
    const declared = new RegExp(`^# TYPE ${name} ${spec.type}$`, 'm').test(response.body)
    if (spec.optional === true && !declared) t.comment(`${name}: not registered here (no events consumer, or no DATABASE_READ_URL, in this app)`)
    else t.ok(declared, `${name} is a ${spec.type}`)
  }
})
