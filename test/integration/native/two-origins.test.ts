// Two origins on one real PostgreSQL, each with a pool of 10 (the embedded database gives every origin
// one connection to one backend session, so nothing there ever runs at once): concurrent ingest through
// both admin APIs while both render, a stampede on one cold key across both, and two processes
// migrating one empty database at once. Skipped on the embedded pass (npm run test:native runs it).

import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { sql } from 'kysely'
import type { FastifyInstance } from 'fastify'
import { migrateToLatest, openDatabase, pendingMigrations } from '../../../src/db/database.ts'
import { buildTestApp, directDatabase } from '../../helper.ts'
import { metricValue } from '../../support/metrics.ts'
import { skipUnlessNative } from '../../support/native-postgres.ts'
import { until } from '../../support/until.ts'

const skip = skipUnlessNative()
/** The advisory lock kysely's PostgresAdapter holds while migrating (LOCK_ID in kysely/dist/dialect/postgres/postgres-adapter.js). */
const MIGRATION_LOCK = '3853314791062309107'
const MIGRATE_CLI = fileURLToPath(new URL('../../../src/cli/migrate.ts', import.meta.url))

/** `npm run migrate` in a process of its own. */
function migrate(env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MIGRATE_CLI], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c) => (stdout += c))
    child.stderr.on('data', (c) => (stderr += c))
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}
const TOKEN = 'native-two-origins-token-0123456789'
const auth = { authorization: `Bearer ${TOKEN}` }

/** Origin a (with the demo site) and origin b on a's database, pools of 10, one Redis key prefix of their own. */
async function twoOrigins(t: Test, name: string): Promise<[FastifyInstance, FastifyInstance]> {
  const shared = { ADMIN_TOKEN: TOKEN, DB_POOL_MAX: '10', REDIS_KEY_PREFIX: `vo-test-${process.pid}-${name}:` }
  const a = await buildTestApp(t, shared)
  const b = await buildTestApp(t, { ...shared, DATABASE_URL: a.database.connectionString })
  t.equal(a.database.pool.options.max, 10)
  t.equal(b.database.pool.options.max, 10)
  return [a, b]
}

t.test('concurrent ingest through both origins while both render: no 5xx, every row once and whole, both origins serve what was written last', { skip }, async (t) => {
  const [a, b] = await twoOrigins(t, 'ingest')
  const ROUNDS = 4
  const landing = Array.from({ length: 4 }, (_, i) => `/native/lp-${i}`)
  const seo = Array.from({ length: 40 }, (_, i) => `/native/page-${i}`)
  const segments = ['general', 'enterprise', 'smb', 'developer']
  const pagesBatch = (writer: string, round: number, order: 'forward' | 'backward') => {
    const pages = [
      ...landing.map((path, i) => ({ path, kind: 'landing', vertical: 'native', title: `Landing ${i} ${writer} ${round}`, intent_text: `native landing page ${i} about invoices` })),
      // The text changes every other round: those rounds embed again, the others only rewrite the title.
      ...seo.map((path, i) => ({ path, kind: 'seo', vertical: 'native', title: `Page ${i} ${writer} ${round}`, intent_text: `native page ${i} about payroll, version ${Math.floor(round / 2)}` })),
    ]
    return { pages: order === 'forward' ? pages : pages.reverse() }
  }
  const variantsBatch = (writer: string, round: number, order: 'forward' | 'backward') => {
    const variants = landing.flatMap((page, i) => segments.map((segment) => ({ key: `native-${i}-${segment}`, segment, page, headline: `For ${segment}, ${writer} ${round}` })))
    return { variants: order === 'forward' ? variants : variants.reverse() }
  }
  const post = (app: FastifyInstance, url: string, payload: object) => app.inject({ method: 'POST', url, headers: auth, payload })
  const demo = (await a.database.db.selectFrom('pages').select('path').orderBy('crawl_weight', 'desc').limit(24).execute()).map((r) => r.path)

  const statuses: Array<{ what: string; status: number; body: string }> = []
  const record = (what: string) => (res: { statusCode: number; body: string }) => void statuses.push({ what, status: res.statusCode, body: res.body.slice(0, 300) })
  await post(a, '/admin/pages', pagesBatch('seed', 0, 'forward')).then(record('seed pages'))
  for (let round = 1; round <= ROUNDS; round++) {
    // Both origins write the same rows at once, in opposite orders; both render what is being written and the demo's pages.
    const reads = [...landing, ...seo.slice(0, 12), ...demo].map((url, i) => (i % 2 === 0 ? a : b).inject({ url, headers: { 'x-segment': segments[i % segments.length]! } }).then(record(`GET ${url}`)))
    await Promise.all([
      post(a, '/admin/pages', pagesBatch('a', round, 'forward')).then(record(`a pages ${round}`)),
      post(b, '/admin/pages', pagesBatch('b', round, 'backward')).then(record(`b pages ${round}`)),
      post(a, '/admin/variants', variantsBatch('a', round, 'backward')).then(record(`a variants ${round}`)),
      post(b, '/admin/variants', variantsBatch('b', round, 'forward')).then(record(`b variants ${round}`)),
      ...reads,
    ])
  }
  const failures = statuses.filter((s) => s.status >= 500)
  t.same(failures, [], `no 5xx in ${statuses.length} requests`)
  t.same(
    statuses.filter((s) => !s.what.startsWith('GET')).filter((s) => s.status !== 200),
    [],
    'every admin batch was applied',
  )

  const { db } = a.database
  const pages = await db.selectFrom('pages').select(['path', 'title', 'kind', 'intent_hash', 'embedding_version', sql<boolean>`intent_embedding is not null`.as('embedded')]).where('path', 'like', '/native/%').orderBy('path').execute()
  t.equal(pages.length, landing.length + seo.length, 'every page once')
  const active = await db.selectFrom('embedding_versions').select('id').where('active', '=', true).executeTakeFirstOrThrow()
  t.same(pages.filter((p) => !p.embedded || p.intent_hash === null || String(p.embedding_version) !== String(active.id)), [], 'every page has its vector of the active version')
  const lastRound = new RegExp(` [ab] ${ROUNDS}$`)
  t.same(pages.filter((p) => !lastRound.test(p.title)).map((p) => `${p.path}: ${p.title}`), [], "every title is one of the last round's writes")
  const variants = await db
    .selectFrom('content_variants as v')
    .innerJoin('pages as p', 'p.id', 'v.page_id')
    .select(['v.variant_key', 'v.headline', 'p.path', 'p.kind'])
    .where('v.variant_key', 'like', 'native-%')
    .orderBy('v.variant_key')
    .execute()
  t.equal(variants.length, landing.length * segments.length, 'every variant once, on its landing page')
  t.ok(variants.every((v) => v.kind === 'landing' && lastRound.test(v.headline)), "each on a landing page, with one of the last round's headlines")

  // What was written last is what both origins serve (each write invalidated both origins' caches).
  for (const page of pages.filter((p) => p.kind === 'seo').slice(0, 12)) {
    for (const app of [a, b]) {
      let body = ''
      await until(`${page.path} to show "${page.title}"`, async () => (body = (await app.inject({ url: page.path })).body).includes(page.title), { timeoutMs: 2_000 })
      t.ok(body.includes(page.title), `${page.path}: "${page.title}" on both origins`)
    }
  }
})

t.test('a stampede on one cold key across two origins renders once', { skip }, async (t) => {
  const [a, b] = await twoOrigins(t, 'stampede')
  const renders = async () => (await metricValue(a, 'variant_origin_renders_total')) + (await metricValue(b, 'variant_origin_renders_total'))
  const before = await renders()
  const url = '/payroll/plumbers/miami'
  const responses = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? a : b).inject({ url })))
  t.same([...new Set(responses.map((r) => r.statusCode))], [200])
  t.equal(new Set(responses.map((r) => r.headers.etag)).size, 1, 'one body for everyone')
  t.equal((await renders()) - before, 1, 'one render in all, though each origin had 10 connections to render with')
})

t.test('two processes migrating one empty database at once: both succeed, every migration applied once (the Migrator\'s lock)', { skip }, async (t) => {
  const target = await directDatabase(t)
  const handle = await openDatabase({ ...target, dbPoolMax: 2, dbConnectTimeoutMs: 5_000, dbStatementTimeoutMs: 30_000 }, { error: () => {} })
  t.teardown(() => handle.close())
  // Both processes must reach the Migrator's lock while it is taken, so they really run at once: this session
  // holds it (kysely's PostgresAdapter takes pg_advisory_lock(MIGRATION_LOCK) around a run) until both wait.
  const holder = await handle.pool.connect()
  t.teardown(() => holder.release())
  await holder.query(`select pg_advisory_lock(${MIGRATION_LOCK})`)
  const waitingForLock = async () => {
    const { rows } = await handle.pool.query<{ n: string }>(
      "select count(*) as n from pg_stat_activity where datname = current_database() and application_name = 'variant-origin' and wait_event_type = 'Lock' and wait_event = 'advisory'",
    )
    return Number(rows[0]!.n)
  }
  // Plain Node (type stripping) rather than the test loader: a second or so to start instead of several.
  const env = { ...target.env, LOG_LEVEL: 'info', REDIS_URL: 'off', DB_STATEMENT_TIMEOUT_MS: '60000' }
  const runs = Promise.all([migrate(env), migrate(env)])
  try {
    await until('both processes to wait for the migration lock', async () => (await waitingForLock()) === 2, { timeoutMs: 30_000, intervalMs: 100 })
  } finally {
    await holder.query(`select pg_advisory_unlock(${MIGRATION_LOCK})`)
  }
  const [one, two] = await runs
  t.same([one.code, two.code], [0, 0], `${one.stderr}\n${two.stderr}`)
  const applied = [one, two].map((r) => r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { applied?: string[] }).find((l) => l.applied !== undefined)?.applied ?? [])

  const names = (await sql<{ name: string }>`select name from kysely_migration order by name`.execute(handle.db)).rows.map((r) => r.name)
  t.ok(names.length >= 6, `${names.length} migrations recorded`)
  t.same(applied.flat().sort(), names, 'each migration applied by exactly one of the two')
  t.same(applied.map((a) => a.length).sort((x, y) => x - y), [0, names.length], 'one process applied them all, the other waited for the lock and found nothing to do')
  t.same(await pendingMigrations(handle.db), [])
  t.same((await migrateToLatest(handle.db)).results, [], 'nothing left to apply')
  const vector = await sql<{ n: string }>`select count(*) as n from pg_extension where extname = 'vector'`.execute(handle.db)
  t.equal(Number(vector.rows[0]!.n), 1, 'pgvector created once')
})
