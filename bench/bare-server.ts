// Baseline for every benchmark: bare Fastify answering with the same bytes and headers-count as the
// origin, so a ratio measures what the origin adds, not the machine.

import Fastify from 'fastify'

const body = Buffer.from(process.env.BARE_BODY_B64 ?? '', 'base64')
// The origin's own response headers (minus connection-level ones), so both sides put the same bytes on the wire.
const headers = JSON.parse(process.env.BARE_HEADERS_JSON ?? '{}') as Record<string, string>
const etag = headers.etag ?? '"bare"'
const app = Fastify({ logger: false, keepAliveTimeout: 72_000 })
const notModifiedNames = new Set(['cache-control', 'cdn-cache-control', 'surrogate-key', 'etag', 'last-modified', 'vary', 'x-segment', 'x-cache'])
const notModifiedHeaders = Object.fromEntries(Object.entries(headers).filter(([name]) => notModifiedNames.has(name)))
app.get('/*', async (request, reply) => {
  if (request.headers['if-none-match'] === etag) return reply.code(304).headers(notModifiedHeaders).send()
  return reply.headers(headers).send(body)
})
const address = await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' })
process.send?.({ address, etag })
process.on('disconnect', () => void app.close().then(() => process.exit(0)))
