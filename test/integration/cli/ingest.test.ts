// `npm run ingest` end to end: a whole file validated before anything is written, then ingested
// into the database directly, or through a running origin's admin API.

import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { openDatabase } from '../../../src/db/database.ts'
import { buildTestApp, directDatabase } from '../../helper.ts'
import { skipOnNative } from '../../support/native-postgres.ts'
import { runScript } from '../../support/processes.ts'

const cli = fileURLToPath(new URL('../../../src/cli/ingest.ts', import.meta.url))
const work = mkdtempSync(path.join(tmpdir(), 'vo-ingest-'))
t.teardown(() => rmSync(work, { recursive: true, force: true }))

const run = (args: string[], env: Record<string, string>) => runScript(cli, args, env)

const ndjson = (records: object[]) => records.map((r) => JSON.stringify(r)).join('\n') + '\n'
const good = [
  { type: 'segment', slug: 'general', is_default: true },
  { type: 'segment', slug: 'enterprise', utm_sources: ['linkedin'] },
  ...Array.from({ length: 25 }, (_, i) => ({ type: 'page', path: `/docs/page-${i}`, kind: i === 0 ? 'landing' : 'seo', title: `Page ${i}`, intent_text: `documentation page ${i} about invoices` })),
  ...Array.from({ length: 12 }, (_, i) => ({ type: 'variant', key: `cli-${i}`, segment: i % 2 === 0 ? 'general' : 'enterprise', page: '/docs/page-0', headline: `Invoices made easy, take ${i}` })),
]

t.test('a bad file: every problem with its line number, exit 1, nothing written', async (t) => {
  const dataDir = path.join(work, 'bad')
  const file = path.join(work, 'bad.ndjson')
  writeFileSync(file, ndjson(good.slice(0, 5)) + '{not json\n' + ndjson([{ type: 'page', path: '/UP', kind: 'seo', title: 'x' }, { type: 'widget' }, { type: 'variant', key: 'k' }]))
  const result = await run([file], { DATA_DIR: dataDir, REDIS_URL: 'off' })
  t.equal(result.code, 1)
  t.match(result.stderr, /6 problem\(s\); nothing was written\n  line 6: not valid JSON.*\n  line 7: path.*\n  line 8: .*\n  line 9: segment.*\n  line 9: page.*\n  line 9: headline/)
  t.match(result.stderr, /line 6: not valid JSON/)
  t.match(result.stderr, /line 7: path: must be a canonical path/)
  t.match(result.stderr, /line 8: "type" must be "segment", "page" or "variant"/)
  t.match(result.stderr, /line 9: segment: is required/)
  t.match(result.stderr, /line 9: headline: is required/)
  t.match(result.stderr, /line 9: page: is required: give the landing page this variant belongs to/)
})

t.test('a good file into the database directly, then again with nothing to do', async (t) => {
  const target = await directDatabase(t, path.join(work, 'good'))
  const file = path.join(work, 'good.ndjson')
  writeFileSync(file, ndjson(good))
  const first = await run([file, '--batch', '10'], { ...target.env, REDIS_URL: 'off' })
  t.equal(first.code, 0, first.stderr)
  t.match(JSON.parse(first.stdout), { segment: { upserted: 2 }, page: { inserted: 25, embedded: 25 }, variant: { inserted: 12, embedded: 12 } })
  const second = await run([file], { ...target.env, REDIS_URL: 'off' })
  t.equal(second.code, 0, second.stderr)
  t.match(JSON.parse(second.stdout), { page: { unchanged: 25, embedded: 0 }, variant: { unchanged: 12, embedded: 0 } })
  const handle = await openDatabase({ ...target, dbPoolMax: 1, dbConnectTimeoutMs: 5000, dbStatementTimeoutMs: 10000 }, { error: () => {} })
  t.teardown(() => handle.close())
  t.equal((await handle.db.selectFrom('pages').select('id').execute()).length, 25)
  t.test('while this process holds the data directory, a second CLI refuses rather than corrupt it', { skip: skipOnNative('the data directory lock of PGlite') }, async (t) => {
    const locked = await run([file], { ...target.env, REDIS_URL: 'off' })
    t.equal(locked.code, 1)
    t.match(locked.stderr, /is in use by process \d+/)
  })
})

t.test('through a running origin with --url', async (t) => {
  const app = await buildTestApp(t, { ADMIN_TOKEN: 'cli-test-token-0123456789', REDIS_URL: 'off', SEED_DEMO: 'false' })
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  const file = path.join(work, 'api.ndjson')
  writeFileSync(file, ndjson(good))
  const result = await run([file, '--url', address], { ADMIN_TOKEN: 'cli-test-token-0123456789' })
  t.equal(result.code, 0, result.stderr)
  t.match(JSON.parse(result.stdout), { page: { inserted: 25 }, variant: { inserted: 12 } })
  const landing = await app.inject({ url: '/docs/page-0', headers: { 'x-segment': 'enterprise' } })
  t.match(landing.body, /data-segment="enterprise"/)
  const wrongToken = await run([file, '--url', address], { ADMIN_TOKEN: 'not-the-token-0123456789' })
  t.equal(wrongToken.code, 1)
  t.match(wrongToken.stderr, /segment batch 1 \(records 1-2\) failed.*401/)
})
