// Baseline for every benchmark: bare Fastify on the same Node, answering with the same bytes, so a ratio
// measures what the origin adds, not the machine. Two flavours:
//   BARE_HEADERS_JSON set: the origin's own response headers (both sides put the same bytes on the wire);
//   unset: Fastify's own minimal headers (content-type, ETag), what a user would compare with.
// BARE_BR_B64: brotli bytes of the body, sent with Content-Encoding: br when the request accepts br.

import Fastify from 'fastify'

const body = Buffer.from(process.env.BARE_BODY_B64 ?? '', 'base64')
const brotli = process.env.BARE_BR_B64 === undefined ? undefined : Buffer.from(process.env.BARE_BR_B64, 'base64')
const originHeaders = process.env.BARE_HEADERS_JSON === undefined ? undefined : (JSON.parse(process.env.BARE_HEADERS_JSON) as Record<string, string>)
const headers = originHeaders ?? { 'content-type': 'text/html; charset=utf-8', etag: '"bare-0123456789"' }
const etag = headers.etag ?? '"bare"'
const app = Fastify({ logger: false, keepAliveTimeout: 72_000 })
const notModifiedNames = new Set(['cache-control', 'cdn-cache-control', 'surrogate-key', 'etag', 'last-modified', 'vary', 'x-segment', 'x-cache'])
const notModifiedHeaders = Object.fromEntries(Object.entries(headers).filter(([name]) => notModifiedNames.has(name)))
app.get('/*', async (request, reply) => {
  if (request.headers['if-none-match'] === etag) return reply.code(304).headers(notModifiedHeaders).send()
  if (brotli !== undefined && request.headers['accept-encoding']?.includes('br') === true) return reply.headers(headers).header('content-encoding', 'br').send(brotli)
  return reply.headers(headers).send(body)
})
const address = await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' })
process.send?.({ address, etag })
process.on('disconnect', () => void app.close().then(() => process.exit(0)))
