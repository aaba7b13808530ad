// Configuration from the environment, validated once at start.
// A bad value is reported with the variable's name and what it accepts, all at once, never half-applied.
// Over 300 lines on purpose: it is the one table of every variable (type, default, range, message), read
// top to bottom beside the README's; split, a variable's default and its check would live apart.

import { isTrackingParam } from './http/url-normalize.ts'
import { parseTrustProxy, type TrustProxySetting } from './http/trust-proxy.ts'

export const CDN_FLAVOURS = ['generic', 'varnish', 'fastly', 'cloudflare', 'akamai', 'cloudfront'] as const
export type CdnFlavour = (typeof CDN_FLAVOURS)[number]

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
type LogLevel = (typeof LOG_LEVELS)[number]

export interface Config {
  port: number
  host: string
  logLevel: LogLevel
  /** Absolute https origin the site is published under; canonical URLs and links are built from it. */
  publicBaseUrl: string
  /** Undefined means: run the embedded PostgreSQL (PGlite + pgvector). */
  databaseUrl: string | undefined
  /** Embedded database directory, or `memory://` for a throwaway in-memory database. */
  dataDir: string
  /** Read replicas of DATABASE_URL (DATABASE_READ_URL): the render path reads from them; empty: everything on the primary. */
  databaseReadUrls: string[]
  /** A replica whose replay lag is over this (seconds) is skipped until it catches up; the primary serves its reads. */
  dbReplicaMaxLagSeconds: number
  /** How often each replica's reachability and lag are measured. */
  dbReplicaCheckIntervalMs: number
  dbPoolMax: number
  dbConnectTimeoutMs: number
  dbStatementTimeoutMs: number
  /** The page lookup as a prepared statement on a real PostgreSQL (src/db/prepared-statements.ts); off for a pooler that cannot keep them. */
  dbPreparedStatements: boolean
  migrateOnStart: boolean
  seedDemo: boolean
  /** Undefined means: Redis is switched off and the origin runs on its in-process cache alone. */
  redisUrl: string | undefined
  /** host:port seeds of a Redis Cluster; when set, ioredis Cluster is used instead of REDIS_URL. */
  redisClusterNodes: Array<{ host: string; port: number }> | undefined
  /** The engagement stream's own Redis (one that never evicts); undefined: the stream shares the cache's Redis. */
  eventsRedisUrl: string | undefined
  redisKeyPrefix: string
  redisCommandTimeoutMs: number
  /** Timeout of the invalidation subscriber's SUBSCRIBE, and its retry interval until the first one succeeds. */
  redisSubscribeTimeoutMs: number
  cdnFlavour: CdnFlavour
  browserMaxAgeSeconds: number
  staleWhileRevalidateSeconds: number
  staleIfErrorSeconds: number
  notFoundTtlSeconds: number
  redirectTtlSeconds: number
  /** Query parameters a page may keep (lower case); every other one is dropped with a 301. */
  queryAllowlist: ReadonlySet<string>
  l1MaxBytes: number
  l1TtlSeconds: number
  /** Cap on how long the origin's own tiers treat an entry as fresh (the CDN's TTL can be a day). */
  originFreshSeconds: number
  /** Time budget of a miss (variant and related-page lookups) before a default rendering is served. */
  renderBudgetMs: number
  relatedLinks: number
  /** Undefined: the admin API is off (404), never open. */
  adminToken: string | undefined
  openaiApiKey: string | undefined
  openaiBaseUrl: string | undefined
  embeddingModel: string
  embeddingDimensions: number
  embeddingTimeoutMs: number
  embeddingMaxRetries: number
  /** CDNs that receive purges through the outbox. */
  purgeTargets: Array<'varnish' | 'fastly' | 'cloudflare'>
  varnishPurgeUrl: string | undefined
  fastlyApiUrl: string
  fastlyServiceId: string | undefined
  fastlyApiToken: string | undefined
  cloudflareApiUrl: string
  cloudflareZoneId: string | undefined
  cloudflareApiToken: string | undefined
  /** Bearer token /metrics asks for; undefined: open (restrict it at the network instead). */
  metricsToken: string | undefined
  /** Bearer token /openapi.json asks for; undefined: open. */
  openapiToken: string | undefined
  /** Peers whose X-Forwarded-For and X-Request-Id are believed (TRUST_PROXY); none by default. */
  trustProxy: TrustProxySetting
  /** Time a client has to send its request line and headers (slowloris), checked every connectionsCheckIntervalMs. */
  headersTimeoutMs: number
  /** Time a client has to send its whole request, body included (a slow upload is cut past it). */
  requestTimeoutMs: number
  /** How often Node looks for connections past those two timeouts (its default, 30 s, lets them overrun). */
  connectionsCheckIntervalMs: number
  /** How often the crawl-weight histogram (a scan of pages) is recomputed for /metrics. */
  metricsCrawlWeightRefreshSeconds: number
  /** Load shedding (@fastify/under-pressure); 0 turns a threshold off. */
  loadShedMaxEventLoopDelayMs: number
  loadShedMaxHeapUsedBytes: number
  loadShedMaxRssBytes: number
  loadShedRetryAfterSeconds: number
  loadShedSampleIntervalMs: number
  /** Human-readable logs: auto means only when stdout is a terminal. */
  logPretty: 'auto' | 'true' | 'false'
  /**
   * Bytes of JSON log lines buffered before one asynchronous write to stdout (also written every second,
   * and drained on close); 0 writes each line synchronously. Not used by pretty logs (their own thread).
   */
  logBufferBytes: number
  /**
   * Which cache hits (X-Cache HIT-L1 or HIT-L2, their 304s and HEADs included) get a log line: 1 every one
   * (ACCESS_LOG_HITS=all), N one in N, the first of each N (sample:N), 0 none (off). Every other request
   * is always logged, and the request metrics count every request whatever this says.
   */
  accessLogHitEvery: number
  /** A page missing from a Search Console import: w = max(floor, w * decay) while w is above the floor. */
  crawlWeightDecay: number
  crawlWeightFloor: number
  /** URLs per sitemap shard (the protocol's limit is 50,000). */
  sitemapShardSize: number
  /** Published pages under this crawl weight are left out of the sitemaps (0: every published page). */
  sitemapMinWeight: number
  /** Shared-cache lifetime of /sitemap.xml, its shards and /robots.txt. */
  sitemapTtlSeconds: number
  /** Path prefixes robots.txt disallows for every user agent. */
  robotsDisallow: string[]
  /** Search Console API base (the live pull); tests point it at a local server. */
  searchConsoleApiUrl: string
  /** Overrides the service account key's token_uri (the JWT bearer grant's token endpoint). */
  searchConsoleTokenUrl: string | undefined
  searchConsoleMaxRetries: number
  /** Approximate cap (XADD MAXLEN ~) on the engagement stream, in entries (one per accepted request). */
  eventsStreamMaxLen: number
  /** POST /events requests per client IP per minute. */
  eventsRateLimitPerMinute: number
  /** Stream entries read (and aggregated in one transaction) at a time. */
  eventsBatchSize: number
  /** A message pending this long on a consumer is claimed by another (the first is presumed dead). */
  eventsClaimIdleMs: number
  /** Deliveries after which a message goes to the dead-letter stream instead of being retried. */
  eventsMaxDeliveries: number
  /** Whether this instance aggregates the stream (every instance accepts events either way). */
  eventsConsumer: boolean
  /** Sticky visitor buckets the CDN assigns (vo_bucket cookie, X-Bucket header): 0..experimentBuckets-1. */
  experimentBuckets: number
  /** How often one instance reallocates buckets among competing variants; 0 = never (the split stays as is). */
  experimentReallocateSeconds: number
  /** The share of buckets every competing variant keeps, however it converts. */
  experimentMinShare: number
}

export class ConfigError extends Error {
  readonly problems: string[]
  constructor(problems: string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`)
    this.name = 'ConfigError'
    this.problems = problems
  }
}

type Env = Record<string, string | undefined>

/** Reads one variable at a time and collects every problem, so the operator fixes them in one go. */
class EnvReader {
  readonly problems: string[] = []
  private readonly env: Env
  constructor(env: Env) {
    this.env = env
  }

  private raw(name: string): string | undefined {
    const value = this.env[name]
    return value === undefined || value.trim() === '' ? undefined : value.trim()
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    const value = this.raw(name)
    if (value === undefined) return fallback
    const parsed = /^-?\d+$/.test(value) ? Number(value) : Number.NaN
    if (!Number.isSafeInteger(parsed) || parsed < min || parsed > max) {
      this.problems.push(`${name}=${JSON.stringify(value)}: expected an integer from ${min} to ${max}`)
      return fallback
    }
    return parsed
  }

  number(name: string, fallback: number, min: number, max: number): number {
    const value = this.raw(name)
    if (value === undefined) return fallback
    const parsed = /^-?(\d+\.?\d*|\.\d+)$/.test(value) ? Number(value) : Number.NaN
    if (!Number.isFinite(parsed) || parsed < min || parsed > max) {
      this.problems.push(`${name}=${JSON.stringify(value)}: expected a number from ${min} to ${max}`)
      return fallback
    }
    return parsed
  }

  boolean(name: string, fallback: boolean): boolean {
    const value = this.raw(name)
    if (value === undefined) return fallback
    if (/^(1|true|yes|on)$/i.test(value)) return true
    if (/^(0|false|no|off)$/i.test(value)) return false
    this.problems.push(`${name}=${JSON.stringify(value)}: expected true or false (also 1/0, yes/no, on/off)`)
    return fallback
  }

  oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const value = this.raw(name)
    if (value === undefined) return fallback
    const lowered = value.toLowerCase()
    if ((allowed as readonly string[]).includes(lowered)) return lowered as T
    this.problems.push(`${name}=${JSON.stringify(value)}: expected one of ${allowed.join(', ')}`)
    return fallback
  }

  url(name: string, protocols: readonly string[], fallback: string | undefined, what: string): string | undefined {
    const value = this.raw(name)
    if (value === undefined) return fallback
    let parsed: URL
    try {
      parsed = new URL(value)
    } catch {
      this.problems.push(`${name}: not a URL; expected ${what}`)
      return fallback
    }
    if (!protocols.includes(parsed.protocol)) {
      // The value may hold a password: name the scheme (when it is written as one), never echo the URL.
      // `user:secret@host` parses with the scheme `user:`, which is no scheme at all.
      const scheme = value.toLowerCase().startsWith(`${parsed.protocol}//`) ? `scheme ${parsed.protocol}` : 'a value without scheme://'
      this.problems.push(`${name}: ${scheme} is not accepted; expected ${what}`)
      return fallback
    }
    return value
  }

  string(name: string, fallback: string, pattern: RegExp, what: string): string {
    const value = this.raw(name)
    if (value === undefined) return fallback
    if (!pattern.test(value)) {
      this.problems.push(`${name}=${JSON.stringify(value)}: expected ${what}`)
      return fallback
    }
    return value
  }

  get(name: string): string | undefined {
    return this.raw(name)
  }

  /**
   * A credential (token, API key): checked like any value, but never echoed, because a configuration
   * error is printed to terminals and collected with the logs. The problem says what is wrong instead.
   * Printable ASCII without spaces: a credential travels in an HTTP header, where anything else fails.
   */
  secret(name: string, min: number, max: number): string | undefined {
    const value = this.raw(name)
    if (value === undefined) return undefined
    const bad = [...value].findIndex((c) => c < '!' || c > '~')
    if (bad !== -1) this.problems.push(`${name} must be printable ASCII without spaces (character ${bad + 1} is not); its value is not shown`)
    else if (value.length < min) this.problems.push(`${name} must be at least ${min} characters (got ${value.length}); its value is not shown`)
    else if (value.length > max) this.problems.push(`${name} must be at most ${max} characters (got ${value.length}); its value is not shown`)
    else return value
    return undefined
  }
}

const DAY = 86_400

function parseNodes(read: EnvReader): Array<{ host: string; port: number }> | undefined {
  const raw = read.get('REDIS_CLUSTER_NODES')
  if (raw === undefined) return undefined
  const nodes = raw.split(',').map((item) => item.trim()).filter((item) => item !== '')
  const parsed = nodes.map((item) => /^([\w.-]+|\[[0-9a-f:]+\]):(\d{1,5})$/i.exec(item))
  const bad = parsed.findIndex((m) => m === null || Number(m[2]) > 65_535)
  if (nodes.length === 0 || bad !== -1) {
    // Not echoed: a node written as a URL may carry a password.
    read.problems.push(`REDIS_CLUSTER_NODES: expected host:port[,host:port...] seed nodes${bad === -1 ? '' : ` (item ${bad + 1} of ${nodes.length} is not host:port)`}`)
    return undefined
  }
  return parsed.map((m) => ({ host: m![1]!.replace(/^\[|\]$/g, ''), port: Number(m![2]) }))
}

/**
 * DATABASE_READ_URL: one or more postgres:// URLs of streaming replicas of DATABASE_URL, comma-separated.
 * Never echoed (a URL may carry a password): a problem names the item by its position.
 */
function parseReadUrls(read: EnvReader, embedded: boolean): string[] {
  const raw = read.get('DATABASE_READ_URL')
  if (raw === undefined) return []
  const items = raw.split(',').map((item) => item.trim()).filter((item) => item !== '')
  const urls: string[] = []
  items.forEach((item, i) => {
    let parsed: URL | undefined
    try {
      parsed = new URL(item)
    } catch {
      // not a URL: reported below
    }
    const which = items.length === 1 ? 'DATABASE_READ_URL' : `DATABASE_READ_URL (item ${i + 1} of ${items.length})`
    if (parsed === undefined || !['postgres:', 'postgresql:'].includes(parsed.protocol)) read.problems.push(`${which}: expected postgres://user:pass@replica-host:5432/db (comma-separated for several replicas); the value is not shown`)
    else urls.push(item)
  })
  if (embedded) {
    read.problems.push('DATABASE_READ_URL is set but DATABASE_URL is not: read replicas are replicas of a PostgreSQL primary, and the embedded database has none; set DATABASE_URL to the primary or unset DATABASE_READ_URL')
    return []
  }
  return urls
}

/** ACCESS_LOG_HITS: all (1), sample:N (one hit line in N), off (0). */
function parseAccessLogHits(read: EnvReader): number {
  const raw = read.get('ACCESS_LOG_HITS')
  if (raw === undefined || /^all$/i.test(raw)) return 1
  if (/^off$/i.test(raw)) return 0
  const sample = /^sample:(\d{1,7})$/i.exec(raw)
  const every = sample === null ? Number.NaN : Number(sample[1])
  if (every >= 2 && every <= 1_000_000) return every
  read.problems.push(`ACCESS_LOG_HITS=${JSON.stringify(raw.slice(0, 70))}: expected all, off, or sample:N (one hit line in N, N an integer from 2 to 1000000)`)
  return 1
}

export function loadConfig(env: Env = process.env): Config {
  const read = new EnvReader(env)

  const databaseUrl = read.url('DATABASE_URL', ['postgres:', 'postgresql:'], undefined, 'postgres://user:pass@host:5432/db')
  const embedded = databaseUrl === undefined

  const publicBaseUrl = read.url('PUBLIC_BASE_URL', ['https:'], 'https://www.example.com', 'an absolute https URL such as https://www.example.com')
  let normalizedBase = 'https://www.example.com'
  if (publicBaseUrl !== undefined) {
    const parsed = new URL(publicBaseUrl)
    if (parsed.pathname !== '/' || parsed.search !== '' || parsed.hash !== '') {
      read.problems.push('PUBLIC_BASE_URL: expected an origin without path, query or fragment, such as https://www.example.com')
    } else {
      normalizedBase = parsed.origin
    }
  }

  // REDIS_URL=off runs the origin on its in-process cache alone, on purpose (not as a degraded state).
  const redisRaw = read.get('REDIS_URL')
  const redisUrl =
    redisRaw !== undefined && /^(off|none|disabled)$/i.test(redisRaw)
      ? undefined
      : read.url('REDIS_URL', ['redis:', 'rediss:'], 'redis://127.0.0.1:6379', 'redis://host:6379[/db], rediss://..., or off')

  const config: Config = {
    port: read.integer('PORT', 3000, 0, 65_535),
    host: read.string('HOST', '127.0.0.1', /^[\w.:[\]-]+$/, 'a host name or IP address to listen on, such as 0.0.0.0'),
    logLevel: read.oneOf('LOG_LEVEL', LOG_LEVELS, 'info'),
    publicBaseUrl: normalizedBase,
    databaseUrl,
    dataDir: read.string('DATA_DIR', './data', /^(memory:\/\/|[^\0]+)$/, 'a directory path or memory://'),
    databaseReadUrls: parseReadUrls(read, embedded),
    dbReplicaMaxLagSeconds: read.number('DB_REPLICA_MAX_LAG_SECONDS', 5, 0, 86_400),
    dbReplicaCheckIntervalMs: read.integer('DB_REPLICA_CHECK_INTERVAL_MS', 2_000, 50, 60_000),
    dbPoolMax: read.integer('DB_POOL_MAX', 10, 1, 200),
    dbConnectTimeoutMs: read.integer('DB_CONNECT_TIMEOUT_MS', 5_000, 100, 120_000),
    dbStatementTimeoutMs: read.integer('DB_STATEMENT_TIMEOUT_MS', 5_000, 100, 600_000),
    dbPreparedStatements: read.boolean('DB_PREPARED_STATEMENTS', true),
    migrateOnStart: read.boolean('MIGRATE_ON_START', true),
    seedDemo: read.boolean('SEED_DEMO', embedded),
    redisUrl,
    redisClusterNodes: parseNodes(read),
    eventsRedisUrl: read.url('EVENTS_REDIS_URL', ['redis:', 'rediss:'], undefined, 'redis://host:6379[/db] or rediss://... (unset: the stream shares REDIS_URL)'),
    redisKeyPrefix: read.string('REDIS_KEY_PREFIX', 'vo:', /^[\w:.{}-]{1,64}$/, 'up to 64 letters, digits or : . _ - { }'),
    redisCommandTimeoutMs: read.integer('REDIS_COMMAND_TIMEOUT_MS', 50, 5, 10_000),
    redisSubscribeTimeoutMs: read.integer('REDIS_SUBSCRIBE_TIMEOUT_MS', 5_000, 100, 60_000),
    cdnFlavour: read.oneOf('CDN_FLAVOUR', CDN_FLAVOURS, 'generic'),
    browserMaxAgeSeconds: read.integer('BROWSER_MAX_AGE_SECONDS', 60, 0, DAY),
    staleWhileRevalidateSeconds: read.integer('STALE_WHILE_REVALIDATE_SECONDS', 600, 0, 7 * DAY),
    staleIfErrorSeconds: read.integer('STALE_IF_ERROR_SECONDS', DAY, 0, 30 * DAY),
    notFoundTtlSeconds: read.integer('NOT_FOUND_TTL_SECONDS', 60, 0, DAY),
    redirectTtlSeconds: read.integer('REDIRECT_TTL_SECONDS', DAY, 0, 365 * DAY),
    queryAllowlist: new Set<string>(),
    l1MaxBytes: read.integer('L1_MAX_BYTES', 64 * 1024 * 1024, 1024 * 1024, 8 * 1024 * 1024 * 1024),
    l1TtlSeconds: read.integer('L1_TTL_SECONDS', 60, 0, DAY),
    originFreshSeconds: read.integer('ORIGIN_FRESH_SECONDS', 3_600, 1, 7 * DAY),
    renderBudgetMs: read.integer('RENDER_BUDGET_MS', 200, 1, 60_000),
    relatedLinks: read.integer('RELATED_LINKS', 6, 0, 50),
    adminToken: read.secret('ADMIN_TOKEN', 16, 256),
    openaiApiKey: read.secret('OPENAI_API_KEY', 1, 4096),
    openaiBaseUrl: read.url('OPENAI_BASE_URL', ['https:', 'http:'], undefined, 'the base URL of an OpenAI-compatible API, such as https://api.openai.com/v1'),
    embeddingModel: read.string('EMBEDDING_MODEL', 'text-embedding-3-small', /^[\w.:/-]{1,100}$/, 'a model name such as text-embedding-3-small'),
    embeddingDimensions: read.integer('EMBEDDING_DIMENSIONS', 1536, 1, 1536),
    embeddingTimeoutMs: read.integer('EMBEDDING_TIMEOUT_MS', 30_000, 100, 600_000),
    embeddingMaxRetries: read.integer('EMBEDDING_MAX_RETRIES', 3, 0, 10),
    purgeTargets: [],
    varnishPurgeUrl: read.url('VARNISH_PURGE_URL', ['http:', 'https:'], undefined, 'the URL purges are sent to, such as http://varnish:80'),
    fastlyApiUrl: (read.url('FASTLY_API_URL', ['http:', 'https:'], 'https://api.fastly.com', 'https://api.fastly.com') ?? '').replace(/\/$/, ''),
    fastlyServiceId: read.get('FASTLY_SERVICE_ID'),
    fastlyApiToken: read.secret('FASTLY_API_TOKEN', 1, 4096),
    cloudflareApiUrl: (read.url('CLOUDFLARE_API_URL', ['http:', 'https:'], 'https://api.cloudflare.com/client/v4', 'https://api.cloudflare.com/client/v4') ?? '').replace(/\/$/, ''),
    cloudflareZoneId: read.get('CLOUDFLARE_ZONE_ID'),
    cloudflareApiToken: read.secret('CLOUDFLARE_API_TOKEN', 1, 4096),
    metricsToken: read.secret('METRICS_TOKEN', 16, 256),
    openapiToken: read.secret('OPENAPI_TOKEN', 16, 256),
    trustProxy: { kind: 'none' },
    headersTimeoutMs: read.integer('HEADERS_TIMEOUT_MS', 10_000, 100, 600_000),
    requestTimeoutMs: read.integer('REQUEST_TIMEOUT_MS', 120_000, 100, 3_600_000),
    connectionsCheckIntervalMs: read.integer('CONNECTIONS_CHECK_INTERVAL_MS', 2_000, 50, 30_000),
    metricsCrawlWeightRefreshSeconds: read.integer('METRICS_CRAWL_WEIGHT_REFRESH_SECONDS', 300, 1, DAY),
    loadShedMaxEventLoopDelayMs: read.integer('LOAD_SHED_MAX_EVENT_LOOP_DELAY_MS', 1_000, 0, 60_000),
    loadShedMaxHeapUsedBytes: read.integer('LOAD_SHED_MAX_HEAP_USED_BYTES', 0, 0, 2 ** 40),
    loadShedMaxRssBytes: read.integer('LOAD_SHED_MAX_RSS_BYTES', 0, 0, 2 ** 40),
    loadShedRetryAfterSeconds: read.integer('LOAD_SHED_RETRY_AFTER_SECONDS', 5, 1, 3_600),
    loadShedSampleIntervalMs: read.integer('LOAD_SHED_SAMPLE_INTERVAL_MS', 1_000, 10, 60_000),
    logPretty: read.oneOf('LOG_PRETTY', ['auto', 'true', 'false'] as const, 'auto'),
    // Up to a Linux pipe's default capacity (64 KiB): a larger buffer only delays lines.
    logBufferBytes: read.integer('LOG_BUFFER_BYTES', 4_096, 0, 65_536),
    accessLogHitEvery: parseAccessLogHits(read),
    crawlWeightDecay: read.number('CRAWL_WEIGHT_DECAY', 0.5, 0, 1),
    crawlWeightFloor: read.number('CRAWL_WEIGHT_FLOOR', 0.05, 0, 1),
    sitemapShardSize: read.integer('SITEMAP_SHARD_SIZE', 50_000, 1, 50_000),
    sitemapMinWeight: read.number('SITEMAP_MIN_WEIGHT', 0, 0, 1),
    sitemapTtlSeconds: read.integer('SITEMAP_TTL_SECONDS', 3_600, 0, 7 * DAY),
    robotsDisallow: [],
    searchConsoleApiUrl: (read.url('SEARCH_CONSOLE_API_URL', ['https:', 'http:'], 'https://searchconsole.googleapis.com', 'the Search Console API base, such as https://searchconsole.googleapis.com') ?? '').replace(/\/$/, ''),
    searchConsoleTokenUrl: read.url('SEARCH_CONSOLE_TOKEN_URL', ['https:', 'http:'], undefined, 'an OAuth token endpoint, such as https://oauth2.googleapis.com/token'),
    searchConsoleMaxRetries: read.integer('SEARCH_CONSOLE_MAX_RETRIES', 5, 0, 20),
    eventsStreamMaxLen: read.integer('EVENTS_STREAM_MAXLEN', 1_000_000, 1_000, 1_000_000_000),
    eventsRateLimitPerMinute: read.integer('EVENTS_RATE_LIMIT_PER_MINUTE', 120, 1, 1_000_000),
    eventsBatchSize: read.integer('EVENTS_BATCH_SIZE', 50, 1, 1_000),
    eventsClaimIdleMs: read.integer('EVENTS_CLAIM_IDLE_MS', 60_000, 50, DAY * 1000),
    eventsMaxDeliveries: read.integer('EVENTS_MAX_DELIVERIES', 5, 1, 100),
    eventsConsumer: read.boolean('EVENTS_CONSUMER', true),
    experimentBuckets: read.integer('EXPERIMENT_BUCKETS', 20, 2, 1_000),
    experimentReallocateSeconds: read.integer('EXPERIMENT_REALLOCATE_SECONDS', 300, 0, 7 * DAY),
    experimentMinShare: read.number('EXPERIMENT_MIN_SHARE', 0.05, 0, 0.5),
  }

  // ROBOTS_DISALLOW=none disallows nothing; unset keeps crawlers off the admin API.
  const disallowRaw = read.get('ROBOTS_DISALLOW') ?? '/admin/'
  const disallow = (/^none$/i.test(disallowRaw) ? '' : disallowRaw).split(',').map((p) => p.trim()).filter((p) => p !== '')
  for (const rule of disallow) if (!/^\/[\x21-\x7e]*$/.test(rule)) read.problems.push(`ROBOTS_DISALLOW: ${JSON.stringify(rule)} is not a path starting with / (comma-separated, no spaces)`)
  config.robotsDisallow = disallow.filter((p) => /^\/[\x21-\x7e]*$/.test(p))

  // No page reads a query parameter unless the operator lists it: the rest would only split the CDN cache.
  const allowed = (read.get('QUERY_ALLOWLIST') ?? '').split(',').map((p) => p.trim().toLowerCase()).filter((p) => p !== '')
  for (const name of allowed) {
    if (!/^[a-z0-9_.~-]{1,64}$/.test(name)) read.problems.push(`QUERY_ALLOWLIST: ${JSON.stringify(name.slice(0, 70))} is not a parameter name (letters, digits, _ . ~ -; comma-separated)`)
    else if (isTrackingParam(name)) read.problems.push(`QUERY_ALLOWLIST: ${name} is a tracking parameter, always dropped`)
  }
  config.queryAllowlist = new Set(allowed.filter((name) => /^[a-z0-9_.~-]{1,64}$/.test(name) && !isTrackingParam(name)))

  const targets = (read.get('PURGE_TARGETS') ?? '').split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== '')
  for (const target of targets) if (!['varnish', 'fastly', 'cloudflare'].includes(target)) read.problems.push(`PURGE_TARGETS: ${JSON.stringify(target)} is not one of varnish, fastly, cloudflare`)
  config.purgeTargets = [...new Set(targets)].filter((t): t is 'varnish' | 'fastly' | 'cloudflare' => ['varnish', 'fastly', 'cloudflare'].includes(t))
  const need = (target: string, names: string[]) => {
    if (!config.purgeTargets.includes(target as 'varnish')) return
    for (const name of names) if (read.get(name) === undefined) read.problems.push(`${name}: required when PURGE_TARGETS includes ${target}`)
  }
  need('varnish', ['VARNISH_PURGE_URL'])
  need('fastly', ['FASTLY_SERVICE_ID', 'FASTLY_API_TOKEN'])
  need('cloudflare', ['CLOUDFLARE_ZONE_ID', 'CLOUDFLARE_API_TOKEN'])

  const trust = parseTrustProxy(read.get('TRUST_PROXY'))
  if ('problem' in trust) read.problems.push(trust.problem)
  else config.trustProxy = trust.setting
  // Node refuses a headers timeout longer than the request timeout (the headers are part of the request).
  if (config.headersTimeoutMs > config.requestTimeoutMs) read.problems.push(`HEADERS_TIMEOUT_MS=${config.headersTimeoutMs}: must not exceed REQUEST_TIMEOUT_MS (${config.requestTimeoutMs})`)

  if (read.problems.length > 0) throw new ConfigError(read.problems)
  return config
}
