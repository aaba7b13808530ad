// The CDN's configuration for the current data: GET /admin/cdn/varnish.vcl is the complete VCL generated
// from the segments table (src/cdn/varnish-vcl.ts), what `npm run cdn:config -- --flavour varnish` prints.
// Read from the database, not the segment directory, so a segment added on another instance is in it at
// once. Admin only, like routes/admin.ts: without ADMIN_TOKEN the route does not exist.

import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { renderVarnishVcl } from '../src/cdn/varnish-vcl.ts'
import { listSegments } from '../src/pages/page-repository.ts'

const TEXT = 'text/plain; charset=utf-8'

const cdnConfigRoutes: FastifyPluginAsyncTypebox = async (app) => {
  if (!app.adminAuth.protect(app)) return

  app.get(
    '/admin/cdn/varnish.vcl',
    {
      schema: {
        tags: ['admin'],
        summary: 'The Varnish VCL for the current segments (allowlist, utm_source rules, default)',
        description: 'deploy/varnish/default.vcl is this document for the demo site. Load it with varnishadm vcl.load and vcl.use after adding segments.',
        security: app.adminAuth.security,
        response: {
          200: { description: 'a complete VCL 4.1 file', content: { 'text/plain': { schema: Type.String() } } },
        },
      },
    },
    async (_request, reply) => {
      const vcl = renderVarnishVcl(await listSegments(app.database.db), { queryAllowlist: app.config.queryAllowlist, experimentBuckets: app.config.experimentBuckets })
      // protect() already answers no-store: said again here because a cached VCL would hide a new segment.
      return reply.type(TEXT).header('cache-control', 'no-store').header('x-content-type-options', 'nosniff').send(vcl)
    },
  )
}

export default cdnConfigRoutes
