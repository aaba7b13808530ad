import t from 'tap'
import { Validator } from '@seriousme/openapi-schema-validator'
import { buildTestApp } from '../../helper.ts'

t.test('/openapi.json: a valid OpenAPI 3.1 document of the admin and health APIs, admin routes behind the bearer token', async (t) => {
  const app = await buildTestApp(t, { ADMIN_TOKEN: 'openapi-test-token-0123456789', REDIS_URL: 'off' })
  const res = await app.inject({ url: '/openapi.json' })
  t.equal(res.statusCode, 200)
  const doc = res.json()
  const result = await new Validator().validate(doc)
  t.ok(result.valid, `valid OpenAPI: ${JSON.stringify(result.errors)}`)
  t.equal(doc.openapi, '3.1.0')
  t.same(doc.components.securitySchemes.adminToken, { type: 'http', scheme: 'bearer', description: 'ADMIN_TOKEN from the origin environment' })

  const paths = Object.keys(doc.paths)
  t.notOk(paths.includes('/*') || paths.includes('/'), 'page URLs are not an API')
  t.notOk(paths.includes('/metrics'))
  const adminOperations = paths
    .filter((p) => p.startsWith('/admin/'))
    .flatMap((p) => Object.entries(doc.paths[p] as Record<string, Record<string, unknown>>).map(([method, operation]): Record<string, unknown> => ({ ...operation, method })))
  t.ok(adminOperations.length >= 6, `admin operations: ${paths.join(', ')}`)
  for (const operation of adminOperations) {
    t.same(operation.security, [{ adminToken: [] }], `${String(operation.summary)} requires the token`)
    // A GET has no body to document: its answer is the point.
    t.ok((operation.method === 'get' || operation.requestBody !== undefined) && (operation.responses as object) !== undefined, `${String(operation.summary)} documents body and responses`)
  }
  t.same(Object.keys(doc.paths['/admin/cdn/varnish.vcl'].get.responses['200'].content), ['text/plain'], 'the generated VCL is documented as text')
  t.ok(doc.paths['/health/ready'].get.responses['503'], 'readiness documents its 503')
})

t.test('without ADMIN_TOKEN the document lists no admin routes (they do not exist)', async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off' })
  const doc = (await app.inject({ url: '/openapi.json' })).json()
  t.same(Object.keys(doc.paths).filter((p: string) => p.startsWith('/admin/')), [])
  t.equal((await app.inject({ url: '/admin/cdn/varnish.vcl' })).statusCode, 404, 'the generated VCL is admin-only too: no route, only the 404 page')
})
