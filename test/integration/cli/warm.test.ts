// `npm run warm -- --url`: the origin answers POST /admin/warm with a job; the CLI follows it
// (GET /admin/jobs/:id) to its end and prints the report, and exits 1 when the origin refuses.

import t from 'tap'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { buildTestApp } from '../../helper.ts'
import { metricValue } from '../../support/metrics.ts'
import { runScript } from '../../support/processes.ts'

const cli = fileURLToPath(new URL('../../../bin/warm.ts', import.meta.url))
const TOKEN = 'warm-cli-token-0123456789'

t.test('--url: the CLI follows the job to its end and prints the report; a warm-up already running is exit 1', async (t) => {
  // Long database timeouts: the held database below must hold the warm-up, not fail it.
  const app = await buildTestApp(t, { ADMIN_TOKEN: TOKEN, REDIS_KEY_PREFIX: `vo-warm-cli-${process.pid}:`, DB_STATEMENT_TIMEOUT_MS: '60000', DB_CONNECT_TIMEOUT_MS: '60000' })
  const address = await app.listen({ port: 0, host: '127.0.0.1' })

  const result = await runScript(cli, ['--top', '40', '--url', address], { ADMIN_TOKEN: TOKEN })
  t.equal(result.code, 0, result.stderr)
  const report = JSON.parse(result.stdout)
  t.match(report, { pages: 40, segments: 4, failed: 0, successRate: 1 }, 'the report of the finished job')
  t.equal(report.warmed + report.skipped, report.attempted)
  t.ok((await metricValue(app, 'http_request_duration_seconds_count', { method: 'GET', route: '/admin/jobs/:id', status_code: '200' })) >= 1, 'the CLI polled the job')

  // A warm-up that cannot finish yet holds the instance's one warm-up slot. The database is held before
  // it starts, from another connection: on the embedded database an open transaction makes every other
  // query wait (one backend session), on a real server the lock on pages (the warm-up's first read) does.
  const blocker = new pg.Client({ connectionString: app.database.connectionString })
  await blocker.connect()
  await blocker.query('BEGIN')
  await blocker.query('LOCK TABLE pages IN ACCESS EXCLUSIVE MODE')
  let held = true
  const resume = async () => {
    if (!held) return
    held = false
    await blocker.query('COMMIT')
    await blocker.end()
  }
  t.teardown(resume)
  const busy = await app.inject({ method: 'POST', url: '/admin/warm', headers: { authorization: `Bearer ${TOKEN}` }, payload: { top: 10 } })
  t.equal(busy.statusCode, 202)
  const refused = await runScript(cli, ['--top', '10', '--url', address], { ADMIN_TOKEN: TOKEN })
  await resume()
  t.equal(refused.code, 1, 'refused: exit 1')
  t.match(refused.stderr, /variant-origin warm: 409 from \/admin\/warm: .*already running/)
  t.match(refused.stderr, busy.json().job.id, 'naming the running job')
  t.equal(refused.stdout, '')

  const wrongToken = await runScript(cli, ['--top', '10', '--url', address], { ADMIN_TOKEN: 'not-the-token-0123456789' })
  t.equal(wrongToken.code, 1)
  t.match(wrongToken.stderr, /401 from \/admin\/warm/)
})
