// A hung PostgreSQL (its process stopped with SIGSTOP, so queries neither answer nor fail) under warm
// keys past their stale-while-revalidate window: each one answers with its own stale entry once the
// render overruns RENDER_BUDGET_MS, never with another segment's rendering and never after the
// database's timeouts; once PostgreSQL answers again the keys are rendered fresh.

import t from 'tap'
import { buildTestApp } from '../../helper.ts'
import { metricValue } from '../../support/metrics.ts'
import { skipOnNative } from '../../support/native-postgres.ts'
import { embeddedPostgresPid } from '../../support/processes.ts'
import { until } from '../../support/until.ts'

// The native pass holds a real server with a table lock instead: test/integration/native/real-server.test.ts.
const skip = skipOnNative('it stops the embedded PostgreSQL child process (SIGSTOP)')

t.test('a hung database costs a warm key the render budget, and it gets its own stale entry', { skip }, async (t) => {
  const app = await buildTestApp(t, {
    REDIS_URL: 'off',
    ORIGIN_FRESH_SECONDS: '1',
    STALE_WHILE_REVALIDATE_SECONDS: '1',
    L1_TTL_SECONDS: '1',
    RENDER_BUDGET_MS: '200',
    DB_STATEMENT_TIMEOUT_MS: '3000',
  })
  const url = '/crm' // a landing page: a variant per segment
  const general = await app.inject({ url })
  const enterprise = await app.inject({ url, headers: { 'x-segment': 'enterprise' } })
  t.equal(general.headers['x-cache'], 'MISS')
  t.equal(enterprise.headers['x-cache'], 'MISS')
  t.not(enterprise.body, general.body, 'two different renderings')
  // A fixed sleep on purpose: the passage of time is the point, past fresh (1 s) and stale-while-revalidate (1 s).
  await new Promise((resolve) => setTimeout(resolve, 2_100))

  // This file builds one app: the only embedded PostgreSQL child of this process is its database.
  const pid = embeddedPostgresPid()
  if (pid === undefined) throw new Error('no embedded PostgreSQL child process')
  process.kill(pid, 'SIGSTOP')
  t.teardown(() => process.kill(pid, 'SIGCONT'))
  try {
    const staleServed = async () => ({
      budget: await metricValue(app, 'variant_origin_stale_served_total', { reason: 'budget' }),
      error: await metricValue(app, 'variant_origin_stale_served_total', { reason: 'error' }),
    })
    for (const [headers, warm] of [[{}, general], [{ 'x-segment': 'enterprise' }, enterprise]] as const) {
      const before = await staleServed()
      const started = Date.now()
      const res = await app.inject({ url, headers })
      const ms = Date.now() - started
      t.equal(res.statusCode, 200)
      t.equal(res.headers['x-cache'], 'STALE', `its own stale entry (${res.headers['x-segment']})`)
      t.equal(res.body, warm.body, 'the same bytes as before, not the default segment')
      // Which path answered, from the counters: the render budget ran out (stale for "budget"), not a
      // database timeout (stale-if-error counts "error").
      const after = await staleServed()
      t.equal(after.budget - before.budget, 1, 'served stale because the render overran its budget')
      t.equal(after.error - before.error, 0, 'not because a database call failed or timed out')
      // The budget is the behaviour under test, so its cost is bounded too: generously, under the 3 s
      // statement timeout that a request waiting on the database would have paid.
      t.ok(ms < 3_000, `answered within the budget's reach, not after the 3 s statement timeout (${ms} ms)`)
    }
    t.match((await app.inject({ url: '/metrics' })).body, /variant_origin_stale_served_total\{reason="budget"\} 2\n/)
  } finally {
    process.kill(pid, 'SIGCONT')
  }

  // PostgreSQL answers again: the key is rendered anew (the renders that overran may have failed; a
  // failure never replaced the entry, and the next render fills the caches).
  let fresh = await app.inject({ url })
  await until(
    'a fresh answer (HIT-L1 or MISS) once PostgreSQL answers again',
    async () => {
      if (/^(HIT-L1|MISS)$/.test(String(fresh.headers['x-cache']))) return true
      fresh = await app.inject({ url })
      return /^(HIT-L1|MISS)$/.test(String(fresh.headers['x-cache']))
    },
    { timeoutMs: 10_000, intervalMs: 100 },
  )
  t.match(fresh.headers['x-cache'], /^(HIT-L1|MISS)$/, `fresh again once PostgreSQL answers (${fresh.headers['x-cache']})`)
  t.equal(fresh.statusCode, 200)
})
