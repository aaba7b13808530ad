// `npm run sitemaps:write`: the origin's sitemap index and shards as static files, byte for byte what
// GET /sitemap.xml and /sitemaps/N.xml answer; a later, smaller run leaves no orphan shard behind.

import t from 'tap'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { sql } from 'kysely'
import { buildTestApp } from '../../helper.ts'
import { runScript } from '../../support/processes.ts'

const cli = fileURLToPath(new URL('../../../src/cli/sitemaps-write.ts', import.meta.url))
const work = mkdtempSync(path.join(tmpdir(), 'vo-sitemaps-write-'))
t.teardown(() => rmSync(work, { recursive: true, force: true }))

const run = (args: string[], env: Record<string, string>) => runScript(cli, args, env)

t.test('usage', async (t) => {
  const result = await run([], {})
  t.equal(result.code, 2)
  t.match(result.stderr, /usage: npm run sitemaps:write -- --out DIR/)
})

t.test('the files are what the origin serves', async (t) => {
  const settings = { PUBLIC_BASE_URL: 'https://www.example.test', SITEMAP_SHARD_SIZE: '100' }
  const app = await buildTestApp(t, { REDIS_URL: 'off', ...settings })
  const env = { ...settings, DATABASE_URL: app.database.connectionString, DB_POOL_MAX: '1', MIGRATE_ON_START: 'false', REDIS_URL: 'off' }
  const out = path.join(work, 'site')
  // A shard left from an earlier, larger run: no index lists it any more.
  const orphan = path.join(out, 'sitemaps', '99.xml')
  await run(['--out', out], env)
  writeFileSync(orphan, 'old')

  const result = await run(['--out', out], env)
  t.equal(result.code, 0, result.stderr)
  const report = JSON.parse(result.stdout)
  t.match(report, { shards: 6, removedStaleShards: 1, out })
  t.ok(report.maxRssBytes > 0)
  t.notOk(existsSync(orphan), 'the orphan shard is gone')
  t.same(readdirSync(path.join(out, 'sitemaps')).sort(), ['0.xml', '1.xml', '2.xml', '3.xml', '4.xml', '5.xml'], 'no temporary files left')

  const index = await app.inject({ url: '/sitemap.xml' })
  t.equal(readFileSync(path.join(out, 'sitemap.xml'), 'utf8'), index.body, 'the index, byte for byte')
  let bytes = Buffer.byteLength(index.body)
  for (let shard = 0; shard < 6; shard++) {
    const served = await app.inject({ url: `/sitemaps/${shard}.xml` })
    t.equal(readFileSync(path.join(out, 'sitemaps', `${shard}.xml`), 'utf8'), served.body, `shard ${shard}, byte for byte`)
    bytes += Buffer.byteLength(served.body)
  }
  t.equal(report.bytes, bytes)

  // Fewer pages: the next run writes fewer shards and removes the ones no index names.
  await sql`UPDATE pages SET status = 'draft' WHERE kind = 'seo' AND id % 2 = 0`.execute(app.database.db)
  const smaller = JSON.parse((await run(['--out', out], env)).stdout)
  t.ok(smaller.shards < 6, `${smaller.shards} shards`)
  t.equal(smaller.removedStaleShards, 6 - smaller.shards)
  t.equal(readdirSync(path.join(out, 'sitemaps')).length, smaller.shards)
})

t.test('a database it cannot reach: exit 1 with the reason, nothing written', async (t) => {
  const out = path.join(work, 'unreachable')
  const result = await run(['--out', out], { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none', DB_CONNECT_TIMEOUT_MS: '500', MIGRATE_ON_START: 'false', REDIS_URL: 'off' })
  t.equal(result.code, 1)
  t.match(result.stderr, /variant-origin sitemaps:write: /)
  t.notOk(existsSync(path.join(out, 'sitemap.xml')))
})
