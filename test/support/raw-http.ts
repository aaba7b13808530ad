// A request through plain node:http: the test controls every header (Accept-Encoding, cookies, the
// source address) and gets the bytes as sent, never decompressed (fetch decodes gzip and brotli).

import http from 'node:http'

export interface RawReply {
  status: number
  headers: http.IncomingHttpHeaders
  body: Buffer
}

export function rawRequest(url: string, options: { method?: string; headers?: Record<string, string>; localAddress?: string; body?: string } = {}): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: options.method ?? 'GET', headers: options.headers, localAddress: options.localAddress, agent: false, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
    })
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer within 10 s`)))
    req.on('error', reject)
    req.end(options.body)
  })
}
