// The floor under every node:http origin: node:http itself answering a stored response with nothing else
// (no lookup, no log line, no metrics), with the origin's own headers and bytes, or its 304. `npm run
// bench` measures it beside bare Fastify, so the L1 row can be read against what node:http alone costs
// on this machine: an origin in front of Fastify can at best approach this row, never pass it.

import { createServer } from 'node:http'

const body = Buffer.from(process.env.BARE_BODY_B64 ?? '', 'base64')
const headers: Record<string, string> = { ...(JSON.parse(process.env.BARE_HEADERS_JSON ?? '{}') as Record<string, string>), 'content-length': String(body.length) }
const etag = headers.etag ?? '"raw"'
const notModifiedNames = new Set(['cache-control', 'cdn-cache-control', 'surrogate-key', 'etag', 'last-modified', 'vary', 'x-segment', 'x-cache'])
const notModifiedHeaders = Object.fromEntries(Object.entries(headers).filter(([name]) => notModifiedNames.has(name)))
const server = createServer({ keepAliveTimeout: 72_000 }, (req, res) => {
  if (req.headers['if-none-match'] === etag) {
    res.writeHead(304, notModifiedHeaders).end()
    return
  }
  res.writeHead(200, headers).end(body)
})
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  const address = server.address()
  process.send?.({ address: typeof address === 'object' && address !== null ? `http://127.0.0.1:${address.port}` : '', etag })
})
process.on('disconnect', () => server.close(() => process.exit(0)))
