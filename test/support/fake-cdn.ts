// One local server speaking the purge APIs of Varnish (xkey via PURGE), Fastly and Cloudflare as
// documented, recording what it receives; it can be told to fail the next requests with 503.

import http from 'node:http'
import type { AddressInfo } from 'node:net'

export interface CdnRequest {
  method: string
  url: string
  headers: http.IncomingHttpHeaders
  body: string
}

export interface FakeCdn {
  url: string
  requests: CdnRequest[]
  failNext: number
  close(): Promise<void>
}

export async function startFakeCdn(): Promise<FakeCdn> {
  const state = { failNext: 0 }
  const requests: CdnRequest[] = []
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body })
      if (state.failNext > 0) {
        state.failNext--
        res.writeHead(503, { 'content-type': 'text/plain' }).end('upstream unavailable')
        return
      }
      const url = req.url ?? ''
      if (req.method === 'PURGE') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('Purged')
      } else if (req.method === 'POST' && /^\/service\/[^/]+\/purge$/.test(url)) {
        if (req.headers['fastly-key'] !== 'fastly-token') return void res.writeHead(401).end('{"msg":"Provided credentials are missing or invalid"}')
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(Object.fromEntries(String(req.headers['surrogate-key']).split(' ').map((k, i) => [k, `id-${i}`]))))
      } else if (req.method === 'POST' && url.startsWith('/purge/')) {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok","id":"1"}')
      } else if (req.method === 'POST' && /^\/zones\/[^/]+\/purge_cache$/.test(url)) {
        if (req.headers.authorization !== 'Bearer cf-token') return void res.writeHead(403).end('{"success":false}')
        const parsed = JSON.parse(body) as { tags?: string[]; files?: string[] }
        const count = (parsed.tags ?? parsed.files ?? []).length
        if (count === 0 || count > 30) return void res.writeHead(400).end('{"success":false,"errors":[{"code":1,"message":"too many items"}]}')
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"success":true,"errors":[],"messages":[],"result":{"id":"x"}}')
      } else {
        res.writeHead(404).end()
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    get failNext() {
      return state.failNext
    },
    set failNext(n: number) {
      state.failNext = n
    },
    async close() {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}
