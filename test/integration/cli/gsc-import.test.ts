// `npm run gsc:import` end to end: the CSV export into the database directly, problems listed with
// their lines before anything is written, and the live pull sent through a running origin (--url).

import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { sql } from 'kysely'
import { migrateToLatest, openDatabase } from '../../../src/db/database.ts'
import { buildTestApp, directDatabase } from '../../helper.ts'
import { runScript } from '../../support/processes.ts'
import { startFakeSearchConsole } from '../../support/fake-search-console.ts'

const cli = fileURLToPath(new URL('../../../src/cli/gsc-import.ts', import.meta.url))
const work = mkdtempSync(path.join(tmpdir(), 'vo-gsc-'))
t.teardown(() => rmSync(work, { recursive: true, force: true }))
const TOKEN = 'cli-test-token-0123456789'

const run = (args: string[], env: Record<string, string>) => runScript(cli, args, { PUBLIC_BASE_URL: 'https://www.example.test', ...env })

t.test('usage', async (t) => {
  const result = await run([], { REDIS_URL: 'off' })
  t.equal(result.code, 2)
  t.match(result.stderr, /usage: npm run gsc:import -- FILE/)
  t.equal((await run(['--pull', '--site', 'x'], {})).code, 2, '--pull needs --key')
})

t.test('a bad CSV: every problem with its line, exit 1, nothing read from the database', async (t) => {
  const file = path.join(work, 'bad.csv')
  writeFileSync(file, 'Top pages,Clicks,Impressions,CTR,Position\nhttps://www.example.test/a,1,10,10%,2\n/relative,x,10,1%,2\n')
  const result = await run([file, '--start', '2026-10-01'], { DATA_DIR: path.join(work, 'never-created'), REDIS_URL: 'off' })
  t.equal(result.code, 1)
  t.match(result.stderr, /3 problem\(s\) in the Search Console batch; nothing was written/)
  t.match(result.stderr, /  endDate: must be a date YYYY-MM-DD/)
  t.match(result.stderr, /  row 1: Top pages: line 3: "\/relative" is not an absolute http\(s\) URL/)
  t.match(result.stderr, /  row 1: Clicks: line 3: "x" is not a number >= 0/)
  const json = path.join(work, 'bad.json')
  writeFileSync(json, '{"rows": 3}')
  t.match((await run([json], { REDIS_URL: 'off' })).stderr, /"rows" must be the array/)
})

t.test('the CSV export into the database directly', async (t) => {
  const target = await directDatabase(t, path.join(work, 'db'))
  const handle = await openDatabase({ ...target, dbPoolMax: 1, dbConnectTimeoutMs: 5000, dbStatementTimeoutMs: 20000 }, { error: () => {} })
  await migrateToLatest(handle.db)
  await sql`INSERT INTO pages (path, kind, title, canonical_url, crawl_weight) VALUES ('/a', 'seo', 'A', 'https://www.example.test/a', 0), ('/b', 'seo', 'B', 'https://www.example.test/b', 0.9)`.execute(handle.db)
  await handle.close()
  const file = path.join(work, 'Pages.csv')
  writeFileSync(file, '\ufeff"Top pages","Clicks","Impressions","CTR","Position"\r\n"https://www.example.test/a","120","1,000","12%","2.5"\r\n"https://www.example.test/unknown","1","10","10%","9"\r\n')
  const result = await run([file, '--start', '2026-10-01', '--end', '2026-10-28'], { ...target.env, REDIS_URL: 'off' })
  t.equal(result.code, 0, result.stderr)
  t.match(JSON.parse(result.stdout), { received: 2, matched: 1, unknown: 1, changed: 1, decayed: 1, unknownSample: ['https://www.example.test/unknown'] })
  // (The weights and history rows themselves are checked in test/routes/search-console.test.ts.)

  // An export of another site matches no page: refused, rather than decaying every page.
  const other = path.join(work, 'Other.csv')
  writeFileSync(other, '"Top pages","Clicks","Impressions","CTR","Position"\n"https://blog.other.test/x","5","50","10%","3"\n"https://blog.other.test/y","1","10","10%","4"\n')
  const refused = await run([other, '--start', '2026-10-01', '--end', '2026-10-28'], { ...target.env, REDIS_URL: 'off' })
  t.equal(refused.code, 1)
  t.match(refused.stderr, /1 problem\(s\) in the Search Console batch; nothing was written/)
  t.match(refused.stderr, /  rows: no row's URL matched a page .*under PUBLIC_BASE_URL \(https:\/\/www\.example\.test\)\. Unknown: "https:\/\/blog\.other\.test\/x", "https:\/\/blog\.other\.test\/y"/)
  const after = await openDatabase({ ...target, dbPoolMax: 1, dbConnectTimeoutMs: 5000, dbStatementTimeoutMs: 20000 }, { error: () => {} })
  t.teardown(() => after.close())
  t.equal((await after.db.selectFrom('search_console_imports').select('id').execute()).length, 1, 'only the first import was written')
  t.equal(Number((await after.db.selectFrom('pages').select('crawl_weight').where('path', '=', '/b').executeTakeFirstOrThrow()).crawl_weight), 0.45, '/b decayed once, not twice')
})

t.test('the live pull, sent through a running origin with --url', async (t) => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const email = 'importer@example-project.iam.gserviceaccount.com'
  const fake = await startFakeSearchConsole(publicKey, email)
  t.teardown(() => fake.close())
  fake.rows = [{ keys: ['https://www.example.test/docs/x'], clicks: 50, impressions: 100, ctr: 0.5, position: 1.2 }]
  const keyFile = path.join(work, 'key.json')
  writeFileSync(keyFile, JSON.stringify({ type: 'service_account', client_email: email, private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), token_uri: 'https://oauth2.invalid/token' }))
  const app = await buildTestApp(t, { ADMIN_TOKEN: TOKEN, REDIS_URL: 'off', SEED_DEMO: 'false' })
  await sql`INSERT INTO pages (path, kind, title, canonical_url) VALUES ('/docs/x', 'seo', 'X', 'https://www.example.test/docs/x')`.execute(app.database.db)
  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  const env = { ADMIN_TOKEN: TOKEN, SEARCH_CONSOLE_API_URL: fake.url, SEARCH_CONSOLE_TOKEN_URL: fake.tokenUrl }
  const args = ['--pull', '--site', 'sc-domain:example.test', '--key', keyFile, '--start', '2026-10-01', '--end', '2026-10-28', '--url', address, '--soft-purge']
  const result = await run(args, env)
  t.equal(result.code, 0, result.stderr)
  t.same(fake.rejectedTokens, [])
  t.match(JSON.parse(result.stdout), { received: 1, matched: 1, changed: 1, queued: 0 })
  const imported = await app.database.db.selectFrom('search_console_imports').select('source').execute()
  t.same(imported, [{ source: 'live' }])
  const noDates = await run(['--pull', '--site', 'sc-domain:example.test', '--key', keyFile], env)
  t.equal(noDates.code, 1)
  t.match(noDates.stderr, /startDate: must be a date/)
  const wrongToken = await run(args, { ...env, ADMIN_TOKEN: 'not-the-token-0123456789' })
  t.equal(wrongToken.code, 1)
  t.match(wrongToken.stderr, /401 from \/admin\/search-console/)
})
