// The suite's second pass: the database-facing test files again, on a real PostgreSQL with pgvector
// (TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres) instead of the embedded one.
// Each test file gets fresh databases there (test/helper.ts, test/support/native-postgres.ts), dropped
// when it ends; the files in test/integration/native/ run only here.
//
//   npm run test:native                 this pass alone (npm test runs it after the embedded pass)
//   npm run test:native -- FILE...      these test files instead of the list below
//
// No PostgreSQL answering there, or one without pgvector 0.8+: the pass says it was skipped and why, and
// exits 0; with CI set it fails instead. Coverage is the embedded pass's business (tap --disable-coverage).

import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { DEFAULT_TEST_DATABASE_URL, dropLeftoverTestDatabases, probeNativePostgres, redactUrl } from './support/native-postgres.ts'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/**
 * What a real server can show that the embedded one cannot: the files that write, render or migrate
 * through PostgreSQL (pools of 10 instead of one connection, concurrent transactions, locks, constraints,
 * vector queries, the ingest CLI writing directly) and the native-only tests. Left out, to keep this pass
 * to a few minutes: files about HTTP, logging, Redis alone or the process, whose database is incidental;
 * the CLI files other than ingest (gsc-import, sitemaps-write, cdn-config, warm: their database work is
 * the same service code routes/search-console, routes/sitemaps and routes/admin-jobs run here, and each
 * spawns several TypeScript processes); and db/variant-recall.test.ts, which opens TEST_DATABASE_URL itself
 * rather than a database of its own.
 */
const NATIVE_PASS_FILES = [
  'test/integration/native/real-server.test.ts',
  'test/integration/native/two-origins.test.ts',
  'test/integration/native/prepared-statements.test.ts',
  'test/integration/cli/ingest.test.ts',
  'test/integration/cache/tiered-cache.test.ts',
  'test/integration/routes/admin-jobs.test.ts',
  'test/integration/routes/search-console.test.ts',
  'test/integration/db/reembed.test.ts',
  'test/integration/routes/pages.test.ts',
  'test/integration/routes/admin.test.ts',
  'test/integration/purge/purge.test.ts',
  'test/integration/db/migrations.test.ts',
  'test/integration/cache/redis-faults.test.ts',
  'test/integration/events/engagement-consumer.test.ts',
  'test/integration/experiments/experiments.test.ts',
  'test/integration/routes/storable-input.test.ts',
  'test/integration/routes/sitemaps.test.ts',
  'test/integration/cache/slow-database.test.ts',
]

async function main(): Promise<number> {
  const serverUrl = process.env.TEST_DATABASE_URL || DEFAULT_TEST_DATABASE_URL
  const probe = await probeNativePostgres(serverUrl)
  if (!probe.ok) {
    if (process.env.CI) {
      console.error(`native PostgreSQL pass failed: ${probe.reason} (CI is set: this pass must run; .ci/run installs pgvector with ../shared/scripts/install-pgvector.sh)`)
      return 1
    }
    console.log(`native PostgreSQL pass skipped: ${probe.reason}`)
    return 0
  }
  const args = process.argv.slice(2)
  const files = args.length > 0 ? args : NATIVE_PASS_FILES
  console.log(`native PostgreSQL pass: PostgreSQL ${probe.server}, pgvector ${probe.pgvector} at ${redactUrl(serverUrl)}, ${files.length} test file(s)`)
  const started = Date.now()
  const tap = path.join(root, 'node_modules', '.bin', 'tap')
  const code = await new Promise<number>((resolve) => {
    // Coverage is the embedded pass's: none is collected here, and none is checked (another tap run in the same
    // directory could leave its partial coverage in .tap/coverage, which tap reports at the end of any run).
    const child = spawn(tap, ['--disable-coverage', '--allow-incomplete-coverage', ...files], { cwd: root, stdio: 'inherit', env: { ...process.env, TEST_DATABASE_URL: serverUrl } })
    child.on('error', (err) => {
      console.error(`native PostgreSQL pass: could not start tap (${err.message})`)
      resolve(1)
    })
    child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal === null ? 1 : 128)))
  })
  // A file killed by its timeout never ran its teardown: its databases go here.
  const leftovers = await dropLeftoverTestDatabases(serverUrl).catch((err: unknown) => {
    console.error(`native PostgreSQL pass: could not drop leftover test databases (${(err as Error).message})`)
    return []
  })
  if (leftovers.length > 0) console.log(`native PostgreSQL pass: dropped ${leftovers.length} database(s) left by killed test files: ${leftovers.join(', ')}`)
  console.log(`native PostgreSQL pass: ${code === 0 ? 'passed' : 'FAILED'} in ${((Date.now() - started) / 1000).toFixed(0)} s`)
  return code
}

process.exit(await main())
