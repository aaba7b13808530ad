import t from 'tap'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { ConfigError, loadConfig } from '../../src/config.ts'

t.test('defaults: embedded database, demo data, local Redis', async (t) => {
  const config = loadConfig({})
  t.equal(config.port, 3000)
  t.equal(config.host, '127.0.0.1')
  t.equal(config.databaseUrl, undefined)
  t.equal(config.dataDir, './data')
  t.equal(config.seedDemo, true, 'demo data by default on the embedded database')
  t.equal(config.redisUrl, 'redis://127.0.0.1:6379')
  t.equal(config.cdnFlavour, 'generic')
  t.equal(config.publicBaseUrl, 'https://www.example.com')
  t.match(config, { eventsStreamMaxLen: 1_000_000, eventsRateLimitPerMinute: 120, eventsBatchSize: 50, eventsClaimIdleMs: 60_000, eventsMaxDeliveries: 5, eventsConsumer: true })
})

t.test('explicit values', async (t) => {
  const config = loadConfig({
    PORT: '8080', DATABASE_URL: 'postgres://u:p@db:5432/app', REDIS_URL: 'off', CDN_FLAVOUR: 'Fastly', MIGRATE_ON_START: 'no',
    PUBLIC_BASE_URL: 'https://shop.example.test/', L1_MAX_BYTES: '2097152',
  })
  t.equal(config.port, 8080)
  t.equal(config.databaseUrl, 'postgres://u:p@db:5432/app')
  t.equal(config.seedDemo, false, 'no demo data on a real database unless asked')
  t.equal(config.redisUrl, undefined)
  t.equal(config.cdnFlavour, 'fastly')
  t.equal(config.migrateOnStart, false)
  t.equal(config.publicBaseUrl, 'https://shop.example.test')
  t.equal(config.l1MaxBytes, 2097152)
})

t.test('every bad value is named with what it accepts', async (t) => {
  const table: Array<[Record<string, string>, RegExp]> = [
    [{ PORT: 'abc' }, /PORT="abc": expected an integer from 0 to 65535/],
    [{ PORT: '70000' }, /PORT="70000": expected an integer from 0 to 65535/],
    [{ DATABASE_URL: 'mysql://x@y/z' }, /DATABASE_URL: scheme mysql: is not accepted; expected postgres:/],
    [{ DATABASE_URL: 'not a url' }, /DATABASE_URL: not a URL/],
    [{ REDIS_URL: 'http://x' }, /REDIS_URL: scheme http: is not accepted/],
    [{ EVENTS_REDIS_URL: 'http://x' }, /EVENTS_REDIS_URL: scheme http: is not accepted; expected redis:\/\/host:6379/],
    [{ PUBLIC_BASE_URL: 'http://www.example.test' }, /PUBLIC_BASE_URL: scheme http: is not accepted; expected an absolute https URL/],
    [{ PUBLIC_BASE_URL: 'https://www.example.test/shop' }, /PUBLIC_BASE_URL: expected an origin without path/],
    [{ CDN_FLAVOUR: 'akamia' }, /CDN_FLAVOUR="akamia": expected one of generic, varnish, fastly, cloudflare, akamai, cloudfront/],
    [{ MIGRATE_ON_START: 'maybe' }, /MIGRATE_ON_START="maybe": expected true or false/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL="loud": expected one of fatal, error/],
    [{ HOST: 'a b' }, /HOST="a b": expected a host name or IP address/],
    [{ L1_MAX_BYTES: '10' }, /L1_MAX_BYTES="10": expected an integer from 1048576/],
    [{ PURGE_TARGETS: 'akamai' }, /PURGE_TARGETS: "akamai" is not one of varnish, fastly, cloudflare/],
    [{ PURGE_TARGETS: 'fastly' }, /FASTLY_SERVICE_ID: required when PURGE_TARGETS includes fastly/],
    [{ ADMIN_TOKEN: 'short' }, /ADMIN_TOKEN must be at least 16 characters \(got 5\)/],
    [{ EVENTS_STREAM_MAXLEN: '10' }, /EVENTS_STREAM_MAXLEN="10": expected an integer from 1000 to 1000000000/],
    [{ EVENTS_RATE_LIMIT_PER_MINUTE: '0' }, /EVENTS_RATE_LIMIT_PER_MINUTE="0": expected an integer from 1/],
    [{ EVENTS_BATCH_SIZE: '5000' }, /EVENTS_BATCH_SIZE="5000": expected an integer from 1 to 1000/],
    [{ EVENTS_CLAIM_IDLE_MS: '1' }, /EVENTS_CLAIM_IDLE_MS="1": expected an integer from 50/],
    [{ EVENTS_MAX_DELIVERIES: '0' }, /EVENTS_MAX_DELIVERIES="0": expected an integer from 1 to 100/],
    [{ EVENTS_CONSUMER: 'sometimes' }, /EVENTS_CONSUMER="sometimes": expected true or false/],
  ]
  for (const [env, message] of table) {
    t.throws(() => loadConfig(env), message, JSON.stringify(env))
  }
  const error = t.throws(() => loadConfig({ PORT: 'x', CDN_FLAVOUR: 'y' })) as ConfigError
  t.equal(error.problems.length, 2, 'all problems reported at once')
  t.notMatch(String(t.throws(() => loadConfig({ DATABASE_URL: 'mysql://user:secret@h/d' }))), /secret/, 'a password is never echoed')
})

t.test('log buffer and hit-line sampling: LOG_BUFFER_BYTES, ACCESS_LOG_HITS', async (t) => {
  t.match(loadConfig({}), { logBufferBytes: 4096, accessLogHitEvery: 1 }, 'a 4 KiB asynchronous buffer, every hit logged')
  t.equal(loadConfig({ LOG_BUFFER_BYTES: '0' }).logBufferBytes, 0, '0: synchronous')
  t.equal(loadConfig({ LOG_BUFFER_BYTES: '65536' }).logBufferBytes, 65536)
  t.equal(loadConfig({ ACCESS_LOG_HITS: 'all' }).accessLogHitEvery, 1)
  t.equal(loadConfig({ ACCESS_LOG_HITS: 'OFF' }).accessLogHitEvery, 0)
  t.equal(loadConfig({ ACCESS_LOG_HITS: 'sample:10' }).accessLogHitEvery, 10)
  t.equal(loadConfig({ ACCESS_LOG_HITS: ' Sample:2 ' }).accessLogHitEvery, 2)
  const table: Array<[Record<string, string>, RegExp]> = [
    [{ LOG_BUFFER_BYTES: '-1' }, /LOG_BUFFER_BYTES="-1": expected an integer from 0 to 65536/],
    [{ LOG_BUFFER_BYTES: '1MB' }, /LOG_BUFFER_BYTES="1MB": expected an integer from 0 to 65536/],
    [{ LOG_BUFFER_BYTES: '65537' }, /LOG_BUFFER_BYTES="65537": expected an integer/],
  ]
  for (const bad of ['some', 'sample', 'sample:', 'sample:1', 'sample:0', 'sample:-5', 'sample:2.5', 'sample:1000001', '10', 'none']) {
    table.push([{ ACCESS_LOG_HITS: bad }, /ACCESS_LOG_HITS="[^"]*": expected all, off, or sample:N \(one hit line in N, N an integer from 2 to 1000000\)/])
  }
  for (const [env, message] of table) t.throws(() => loadConfig(env), message, JSON.stringify(env))
  const error = t.throws(() => loadConfig({ ACCESS_LOG_HITS: 'x'.repeat(500), LOG_BUFFER_BYTES: 'big' })) as ConfigError
  t.equal(error.problems.length, 2, 'both named at once')
  t.ok(error.problems[1]!.length < 200, 'a long value is cut in the message')
})

t.test('read replicas: DATABASE_READ_URL, DB_REPLICA_MAX_LAG_SECONDS, DB_REPLICA_CHECK_INTERVAL_MS', async (t) => {
  t.match(loadConfig({}), { databaseReadUrls: [], dbReplicaMaxLagSeconds: 5, dbReplicaCheckIntervalMs: 2000 }, 'none by default')
  const primary = 'postgres://u:p@db:5432/app'
  const config = loadConfig({ DATABASE_URL: primary, DATABASE_READ_URL: ' postgres://u:p@replica-1/app , postgresql://u:p@replica-2:5433/app,', DB_REPLICA_MAX_LAG_SECONDS: '0.5', DB_REPLICA_CHECK_INTERVAL_MS: '500' })
  t.same(config.databaseReadUrls, ['postgres://u:p@replica-1/app', 'postgresql://u:p@replica-2:5433/app'], 'comma-separated, trimmed')
  t.match(config, { dbReplicaMaxLagSeconds: 0.5, dbReplicaCheckIntervalMs: 500 })

  const embedded = t.throws(() => loadConfig({ DATABASE_READ_URL: 'postgres://u:replicaSecret@replica/app' })) as ConfigError
  t.match(embedded.message, /DATABASE_READ_URL is set but DATABASE_URL is not: read replicas are replicas of a PostgreSQL primary, and the embedded database has none/)
  t.notMatch(embedded.message, 'replicaSecret')
  const bad = t.throws(() => loadConfig({ DATABASE_URL: primary, DATABASE_READ_URL: 'postgres://u:p@r1/app,mysql://u:replicaSecret@r2/app' })) as ConfigError
  t.match(bad.message, /DATABASE_READ_URL \(item 2 of 2\): expected postgres:\/\/user:pass@replica-host:5432\/db \(comma-separated for several replicas\); the value is not shown/)
  t.notMatch(bad.message, 'replicaSecret', 'a password is never echoed')
  t.throws(() => loadConfig({ DATABASE_URL: primary, DATABASE_READ_URL: 'not a url' }), /DATABASE_READ_URL: expected postgres:/)
  t.throws(() => loadConfig({ DB_REPLICA_MAX_LAG_SECONDS: '-1' }), /DB_REPLICA_MAX_LAG_SECONDS="-1": expected a number from 0 to 86400/)
  t.throws(() => loadConfig({ DB_REPLICA_CHECK_INTERVAL_MS: '10' }), /DB_REPLICA_CHECK_INTERVAL_MS="10": expected an integer from 50 to 60000/)
})

t.test("a secret's value never appears in a configuration error", async (t) => {
  // Each bad value is distinctive, so finding any piece of it in the message is a leak.
  const table: Array<[Record<string, string>, string, RegExp]> = [
    [{ ADMIN_TOKEN: 'sh0rtSecret' }, 'sh0rtSecret', /ADMIN_TOKEN must be at least 16 characters \(got 11\)/],
    [{ ADMIN_TOKEN: 'adminSecret with a space' }, 'adminSecret', /ADMIN_TOKEN must be printable ASCII without spaces \(character 12 is not\)/],
    [{ ADMIN_TOKEN: `adminSecret${'x'.repeat(300)}` }, 'adminSecret', /ADMIN_TOKEN must be at most 256 characters \(got 311\)/],
    [{ METRICS_TOKEN: 'metricsSecret' }, 'metricsSecret', /METRICS_TOKEN must be at least 16 characters \(got 13\)/],
    [{ OPENAPI_TOKEN: 'openapiSecret' }, 'openapiSecret', /OPENAPI_TOKEN must be at least 16 characters \(got 13\)/],
    [{ OPENAI_API_KEY: 'sk-openaiSecret\u0001x' }, 'openaiSecret', /OPENAI_API_KEY must be printable ASCII without spaces \(character 16 is not\)/],
    [{ FASTLY_API_TOKEN: 'fastly Secret' }, 'Secret', /FASTLY_API_TOKEN must be printable ASCII without spaces \(character 7 is not\)/],
    [{ CLOUDFLARE_API_TOKEN: 'cloudflareSécret' }, 'cloudflareS', /CLOUDFLARE_API_TOKEN must be printable ASCII without spaces \(character 12 is not\)/],
    [{ DATABASE_URL: 'mysql://user:dbSecret@h/d' }, 'dbSecret', /DATABASE_URL: scheme mysql: is not accepted/],
    [{ DATABASE_URL: 'user:dbSecret@db.internal:5432/app' }, 'dbSecret', /DATABASE_URL: a value without scheme:\/\/ is not accepted; expected postgres:/],
    [{ DATABASE_URL: 'postgres://user:db Secret@[bad/app' }, 'Secret', /DATABASE_URL: not a URL/],
    [{ REDIS_URL: 'http://:redisSecret@h:6379' }, 'redisSecret', /REDIS_URL: scheme http: is not accepted/],
    [{ REDIS_URL: 'redis://:redis Secret@[h' }, 'Secret', /REDIS_URL: not a URL/],
    [{ EVENTS_REDIS_URL: 'https://:eventsSecret@h' }, 'eventsSecret', /EVENTS_REDIS_URL: scheme https: is not accepted/],
    [{ REDIS_CLUSTER_NODES: 'redis://:clusterSecret@h:7000' }, 'clusterSecret', /REDIS_CLUSTER_NODES: expected host:port\[,host:port\.\.\.\] seed nodes \(item 1 of 1 is not host:port\)/],
  ]
  for (const [env, secret, message] of table) {
    const error = t.throws(() => loadConfig(env), message, JSON.stringify(Object.keys(env))) as ConfigError
    t.notMatch(error.message, secret, `${Object.keys(env)[0]}: the value is not in the message`)
  }
  // Good values of the same variables pass and are kept as given.
  const config = loadConfig({ ADMIN_TOKEN: 'a'.repeat(16), OPENAI_API_KEY: 'sk-proj-AbC_123', FASTLY_API_TOKEN: 'f', CLOUDFLARE_API_TOKEN: 'cf-token' })
  t.match(config, { adminToken: 'a'.repeat(16), openaiApiKey: 'sk-proj-AbC_123', fastlyApiToken: 'f', cloudflareApiToken: 'cf-token' })
})

t.test('the server exits non-zero naming the bad variable', async (t) => {
  const server = fileURLToPath(new URL('../../server.ts', import.meta.url))
  const result = spawnSync(process.execPath, [...process.execArgv, server], { env: { ...process.env, PORT: 'eighty', CDN_FLAVOUR: 'nope' }, encoding: 'utf8', timeout: 30_000 })
  t.equal(result.status, 2)
  t.match(result.stderr, /PORT="eighty": expected an integer from 0 to 65535/)
  t.match(result.stderr, /CDN_FLAVOUR="nope"/)
})
