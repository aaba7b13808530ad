// What crawlers read besides pages: /robots.txt, the sitemap index /sitemap.xml and its shards
// /sitemaps/N.xml. Streamed, cacheable by the CDN, validated by ETag per sitemap version. These static
// routes win over the page catch-all `/*` in Fastify's router whatever the registration order.

import { Type } from '@sinclair/typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest, FastifySchema } from 'fastify'
import { cacheTag, publicCacheHeaders, shortLivedCacheHeaders } from '../src/http/cache-policy.ts'
import { isNotModified, strongEtag } from '../src/http/conditional.ts'
import { SitemapService, type SitemapState } from '../src/sitemaps/sitemap-service.ts'
import { robotsTxt } from '../src/sitemaps/robots.ts'

const XML = 'application/xml; charset=utf-8'

/** OpenAPI fields; @fastify/swagger's typings add them to FastifySchema, and without it they are extra keys. */
const crawlDoc = (summary: string): FastifySchema => ({ tags: ['crawl'], summary }) as unknown as FastifySchema

const sitemapRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { config } = app
  // Read replicas serve the sitemaps when configured (DatabaseHandle.read); the primary otherwise.
  const sitemaps = new SitemapService(app.database.read, config, app.log)
  const cacheHeaders = publicCacheHeaders(config, config.sitemapTtlSeconds, [cacheTag('template', 'sitemap')])
  const notFoundHeaders = shortLivedCacheHeaders(config, config.notFoundTtlSeconds, [cacheTag('template', 'sitemap')])

  /** Headers every answer about a document of this version carries; a matching validator gets 304. */
  const conditional = (request: FastifyRequest, reply: FastifyReply, etag: string, lastModified: Date): boolean => {
    const seconds = new Date(Math.floor(lastModified.getTime() / 1000) * 1000)
    reply.headers(cacheHeaders).header('etag', etag).header('last-modified', seconds.toUTCString()).header('x-content-type-options', 'nosniff')
    if (!isNotModified({ ifNoneMatch: request.headers['if-none-match'], ifModifiedSince: request.headers['if-modified-since'] }, etag, seconds)) return false
    reply.code(304).send()
    return true
  }

  const stream = (reply: FastifyReply, state: SitemapState, body: NodeJS.ReadableStream, what: string) => {
    body.on('error', (err: unknown) => app.log.error({ err, what, version: state.version }, 'sitemap stream failed; the response is cut short'))
    return reply.type(XML).send(body)
  }

  app.get(
    '/sitemap.xml',
    { schema: crawlDoc('Sitemap index: one entry per shard, shards in crawl-weight order') },
    async (request, reply) => {
      const state = await sitemaps.state()
      if (conditional(request, reply, sitemaps.etag(state, 'index'), state.changedAt)) return reply
      return stream(reply, state, sitemaps.indexStream(state), 'index')
    },
  )

  app.get(
    '/sitemaps/:file',
    {
      schema: {
        ...crawlDoc('One sitemap shard: up to SITEMAP_SHARD_SIZE URLs (at most 50,000 and 50 MB)'),
        params: Type.Object({ file: Type.String({ maxLength: 32 }) }),
      },
    },
    async (request, reply) => {
      const match = /^(0|[1-9]\d{0,6})\.xml$/.exec(request.params.file)
      const state = match === null ? undefined : await sitemaps.state()
      const shard = match === null ? -1 : Number(match[1])
      if (state === undefined || shard >= state.shardCount) {
        return reply.code(404).headers(notFoundHeaders).type('text/plain; charset=utf-8').send(`no sitemap ${request.params.file}; the index is /sitemap.xml\n`)
      }
      if (conditional(request, reply, sitemaps.etag(state, String(shard)), state.changedAt)) return reply
      return stream(reply, state, sitemaps.shardStream(state, shard), `shard ${shard}`)
    },
  )

  const robots = robotsTxt(config.publicBaseUrl, config.robotsDisallow)
  const robotsEtag = strongEtag(robots)
  const robotsModified = new Date()
  app.get('/robots.txt', { schema: crawlDoc('robots.txt: ROBOTS_DISALLOW rules and the sitemap index') }, async (request, reply) => {
    if (conditional(request, reply, robotsEtag, robotsModified)) return reply
    return reply.type('text/plain; charset=utf-8').send(robots)
  })
}

export default sitemapRoutes
