// Bearer tokens (issue 12 items 9d and 9f): the Authorization scheme is case-insensitive on every
// token-guarded route, and /openapi.json can sit behind a token of its own (OPENAPI_TOKEN), the same
// guard /metrics has.

import t, { type Test } from 'tap'
import { buildTestApp } from '../../helper.ts'
import { loadConfig } from '../../../src/config.ts'

const ADMIN = 'access-admin-token-0123456789'
const METRICS = 'access-metrics-token-0123456789'
const OPENAPI = 'access-openapi-token-0123456789'
const app = await buildTestApp(t, { REDIS_URL: 'off', ADMIN_TOKEN: ADMIN, METRICS_TOKEN: METRICS, OPENAPI_TOKEN: OPENAPI })

const refusedLike = (t: Test, res: Awaited<ReturnType<typeof app.inject>>, realm: string, variable: string, what: string) => {
  t.equal(res.statusCode, 401, what)
  t.equal(res.headers['www-authenticate'], `Bearer realm="${realm}"`, `${what}: WWW-Authenticate`)
  t.equal(res.headers['cache-control'], 'no-store', `${what}: no-store`)
  t.match(res.json(), { statusCode: 401, error: 'Unauthorized', message: `send Authorization: Bearer <${variable}>` })
}

t.test('the admin API: Bearer, bearer, BEARER are one scheme', async (t) => {
  for (const scheme of ['Bearer', 'bearer', 'BEARER', 'beaRER']) {
    const res = await app.inject({ method: 'POST', url: '/admin/purge', headers: { authorization: `${scheme} ${ADMIN}` }, payload: { paths: ['/crm'] } })
    t.equal(res.statusCode, 202, scheme)
    t.equal(res.headers['cache-control'], 'no-store')
  }
  for (const authorization of [`Basic ${ADMIN}`, `bearer ${ADMIN.toUpperCase()}`, `bearer ${METRICS}`, ADMIN]) {
    refusedLike(t, await app.inject({ method: 'POST', url: '/admin/purge', headers: { authorization }, payload: { paths: ['/crm'] } }), 'variant-origin admin', 'ADMIN_TOKEN', authorization.slice(0, 12))
  }
})

t.test('/metrics: the same scheme rule', async (t) => {
  t.equal((await app.inject({ url: '/metrics', headers: { authorization: `bearer ${METRICS}` } })).statusCode, 200)
  t.equal((await app.inject({ url: '/metrics', headers: { authorization: `BEARER ${METRICS}` } })).statusCode, 200)
  refusedLike(t, await app.inject({ url: '/metrics' }), 'variant-origin metrics', 'METRICS_TOKEN', 'no token')
})

t.test('/openapi.json behind OPENAPI_TOKEN', async (t) => {
  refusedLike(t, await app.inject({ url: '/openapi.json' }), 'variant-origin openapi', 'OPENAPI_TOKEN', 'no token')
  refusedLike(t, await app.inject({ url: '/openapi.json', headers: { authorization: `Bearer ${METRICS}` } }), 'variant-origin openapi', 'OPENAPI_TOKEN', 'another route\'s token')
  refusedLike(t, await app.inject({ url: '/openapi.json', headers: { authorization: `Bearer ${ADMIN}` } }), 'variant-origin openapi', 'OPENAPI_TOKEN', 'the admin token')
  const res = await app.inject({ url: '/openapi.json', headers: { authorization: `bearer ${OPENAPI}` } })
  t.equal(res.statusCode, 200)
  t.equal(res.json().openapi, '3.1.0')
  t.equal(res.headers['cache-control'], 'no-store', 'a document behind a token is kept by no cache')
})

t.test('OPENAPI_TOKEN is checked like METRICS_TOKEN', async (t) => {
  t.equal(loadConfig({}).openapiToken, undefined, 'unset: /openapi.json is open (test/integration/routes/openapi.test.ts)')
  t.throws(() => loadConfig({ OPENAPI_TOKEN: 'short' }), /OPENAPI_TOKEN[^\n]*\b16\b/, 'too short a token is refused at start')
})
