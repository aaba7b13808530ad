// The page lookup every miss makes is a prepared statement on a real PostgreSQL (DB_PREPARED_STATEMENTS,
// src/db/prepared-statements.ts): one named statement per connection, parsed and planned once, reused by
// every render whatever its page or segment; none with DB_PREPARED_STATEMENTS=false. Skipped on the
// embedded pass (its sockets share one session, so it never prepares; npm run test:native runs this).

import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildTestApp } from '../../helper.ts'
import { skipUnlessNative } from '../../support/native-postgres.ts'

const skip = skipUnlessNative()

/** The statements the pool's one connection has prepared. */
async function prepared(app: FastifyInstance): Promise<Array<{ name: string; statement: string }>> {
  const { rows } = await app.database.pool.query<{ name: string; statement: string }>('SELECT name, statement FROM pg_prepared_statements ORDER BY name')
  return rows
}

async function render(t: Test, app: FastifyInstance, url: string, segment: string): Promise<string> {
  const response = await app.inject({ url, headers: { 'x-segment': segment } })
  t.equal(response.statusCode, 200, `${url} for ${segment}`)
  t.equal(response.headers['x-cache'], 'MISS', 'a render, not a cache hit')
  return response.body
}

t.test('the page lookup is one prepared statement per connection, reused by every render', { skip }, async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off', DB_POOL_MAX: '1', SEED_DEMO: 'true' })
  await render(t, app, '/crm/dentists/austin', 'general')
  const first = await prepared(app)
  t.equal(first.length, 1, 'one statement prepared')
  t.match(first[0], { name: /^vo_[0-9a-f]{24}$/, statement: /^\/\* prepared \*\/ SELECT p\.id, p\.path/ })
  const landing = await render(t, app, '/crm', 'general')
  const other = await render(t, app, '/crm', 'enterprise')
  t.not(landing, other, 'each segment sees its own variant through the same statement')
  await render(t, app, '/payroll/clinics/dallas', 'general')
  t.same(await prepared(app), first, 'still the one statement after renders of other pages and segments')
})

t.test('DB_PREPARED_STATEMENTS=false: nothing is prepared', { skip }, async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off', DB_POOL_MAX: '1', SEED_DEMO: 'true', DB_PREPARED_STATEMENTS: 'false' })
  await render(t, app, '/crm/dentists/austin', 'general')
  await render(t, app, '/crm', 'enterprise')
  t.same(await prepared(app), [])
})
