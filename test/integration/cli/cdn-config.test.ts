// `npm run cdn:config -- --flavour varnish`: the VCL for the segments in the database, byte for byte what
// GET /admin/cdn/varnish.vcl serves; with --url, that route of a running origin; any other flavour is
// refused with the ones there are.

import t from 'tap'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { sql } from 'kysely'
import { buildTestApp } from '../../helper.ts'
import { runScript } from '../../support/processes.ts'
import { VCL_PATH } from '../../support/varnish.ts'
import { DEMO_SEGMENTS, demoPages } from '../../../src/demo/demo-site.ts'

const cli = fileURLToPath(new URL('../../../src/cli/cdn-config.ts', import.meta.url))
const TOKEN = 'cdn-config-test-token-0123456789'

t.test('usage, and a flavour there is not', async (t) => {
  const none = await runScript(cli, [], {})
  t.equal(none.code, 2)
  t.match(none.stderr, /usage: npm run cdn:config -- --flavour varnish/)
  const fastly = await runScript(cli, ['--flavour', 'fastly'], {})
  t.equal(fastly.code, 2)
  t.match(fastly.stderr, /unknown flavour "fastly"; supported: varnish/)
  t.equal(fastly.stdout, '', 'nothing that could end up in a VCL file')
})

t.test('from the database and from a running origin: the VCL the admin route serves', async (t) => {
  const app = await buildTestApp(t, { ADMIN_TOKEN: TOKEN, REDIS_URL: 'off', SEED_DEMO: 'false' })
  const admin = { authorization: `Bearer ${TOKEN}` }
  const ingest = async (kind: string, records: unknown[]) => {
    const response = await app.inject({ method: 'POST', url: `/admin/${kind}`, headers: admin, payload: { [kind]: records } })
    t.equal(response.statusCode, 200, `${kind}: ${response.body}`)
  }
  // A database with pages: SEED_DEMO=true loads nothing into it, as at the origin's start.
  await ingest('segments', DEMO_SEGMENTS)
  await ingest('pages', demoPages().filter((p) => p.kind === 'landing'))
  const env = { DATABASE_URL: app.database.connectionString, DB_POOL_MAX: '1', MIGRATE_ON_START: 'false', REDIS_URL: 'off', SEED_DEMO: 'true' }

  const demo = await runScript(cli, ['--flavour', 'varnish'], env)
  t.equal(demo.code, 0, demo.stderr)
  t.equal(demo.stdout, await readFile(VCL_PATH, 'utf8'), 'the demo segments: deploy/varnish/default.vcl')

  await ingest('segments', [{ slug: 'partners', utm_sources: ['partnerstack'] }])
  const served = await app.inject({ url: '/admin/cdn/varnish.vcl', headers: admin })
  t.match(served.body, '|partners|')
  const fromDatabase = await runScript(cli, ['--flavour', 'varnish'], env)
  t.equal(fromDatabase.code, 0, fromDatabase.stderr)
  t.equal(fromDatabase.stdout, served.body, 'a segment added: the same bytes as GET /admin/cdn/varnish.vcl')

  const address = await app.listen({ port: 0, host: '127.0.0.1' })
  const fromOrigin = await runScript(cli, ['--flavour', 'varnish', '--url', address], { ADMIN_TOKEN: TOKEN })
  t.equal(fromOrigin.code, 0, fromOrigin.stderr)
  t.equal(fromOrigin.stdout, served.body, '--url: the origin\'s answer')
  const wrongToken = await runScript(cli, ['--flavour', 'varnish', '--url', address], { ADMIN_TOKEN: 'not-the-token-0123456789' })
  t.equal(wrongToken.code, 1)
  t.match(wrongToken.stderr, /401 from \/admin\/cdn\/varnish\.vcl/)
  t.equal(wrongToken.stdout, '')

  // A utm source written around the admin API's validation: refused by name, never written into a VCL.
  await sql`UPDATE segments SET utm_sources = ARRAY['partner"stack'] WHERE slug = 'partners'`.execute(app.database.db)
  const refused = await app.inject({ url: '/admin/cdn/varnish.vcl', headers: admin })
  t.equal(refused.statusCode, 409)
  t.match(refused.json().message, /segment partners: utm_source "partner\\"stack" is not one the VCL can hold/)
})
