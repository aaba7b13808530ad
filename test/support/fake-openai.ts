// A local server speaking OpenAI's POST /v1/embeddings as documented (request: model, input,
// dimensions, encoding_format; response: { object: 'list', data: [{ object, index, embedding }],
// model, usage }), with scripted failures. Vectors come from the local embedder, so they are real.

import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { localEmbedding } from '../../src/embeddings/local-embedder.ts'

export type Behaviour = 'ok' | '429' | '500' | 'hang' | 'wrong-dimensions'

export interface RecordedRequest {
  at: number
  authorization: string | undefined
  body: { model: string; input: string[]; dimensions?: number; encoding_format?: string }
}

export interface FakeOpenAI {
  baseURL: string
  requests: RecordedRequest[]
  /** Behaviours for the next requests, in order; 'ok' once the script runs out. */
  script: Behaviour[]
  close(): Promise<void>
}

export async function startFakeOpenAI(): Promise<FakeOpenAI> {
  const requests: RecordedRequest[] = []
  const fake = { script: [] as Behaviour[] }
  const hanging = new Set<http.ServerResponse>()
  const server = http.createServer((req, res) => {
    let raw = ''
    req.on('data', (chunk) => (raw += chunk))
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/embeddings') {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: 'not found', type: 'invalid_request_error' } }))
        return
      }
      const body = JSON.parse(raw) as RecordedRequest['body']
      requests.push({ at: Date.now(), authorization: req.headers.authorization, body })
      const behaviour = fake.script.shift() ?? 'ok'
      const error = (status: number, message: string, headers: Record<string, string> = {}) =>
        res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify({ error: { message, type: 'server_error', code: null } }))
      if (behaviour === '429') return error(429, 'Rate limit reached', { 'retry-after': '1' })
      if (behaviour === '500') return error(500, 'The server had an error while processing your request.')
      if (behaviour === 'hang') {
        hanging.add(res)
        return
      }
      const dimensions = behaviour === 'wrong-dimensions' ? 768 : (body.dimensions ?? 1536)
      const inputs = Array.isArray(body.input) ? body.input : [body.input]
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          object: 'list',
          data: inputs.map((text, index) => ({ object: 'embedding', index, embedding: localEmbedding(String(text), dimensions) })),
          model: body.model,
          usage: { prompt_tokens: inputs.length, total_tokens: inputs.length },
        }),
      )
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    requests,
    get script() {
      return fake.script
    },
    set script(value: Behaviour[]) {
      fake.script = value
    },
    async close() {
      for (const res of hanging) res.destroy()
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}
