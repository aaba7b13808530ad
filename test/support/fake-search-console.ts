// A local server speaking the two Search Console endpoints the live pull uses: the OAuth token
// endpoint (JWT bearer grant, RS256 verified with the service account's public key, claims checked)
// and searchanalytics.query (dimension page, rowLimit/startRow paging). It can be told to answer
// the next query requests with 429 (or 5xx) + Retry-After, and records what it received.

import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { createVerify, type KeyObject } from 'node:crypto'

export interface FakeSearchConsole {
  url: string
  tokenUrl: string
  /** Rows the query endpoint pages through. */
  rows: unknown[]
  /** The next N query requests get 429 with this Retry-After. */
  throttle: { next: number; retryAfter: string; status: number }
  queries: Array<{ at: number; site: string; body: Record<string, unknown> }>
  tokenRequests: number
  rejectedTokens: string[]
  close(): Promise<void>
}

export async function startFakeSearchConsole(publicKey: KeyObject, clientEmail: string): Promise<FakeSearchConsole> {
  const token = 'fake-access-token'
  const state: Omit<FakeSearchConsole, 'close' | 'url' | 'tokenUrl'> = { rows: [], throttle: { next: 0, retryAfter: '0', status: 429 }, queries: [], tokenRequests: 0, rejectedTokens: [] }
  let tokenUrl = ''
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      const json = (status: number, value: unknown, headers: Record<string, string> = {}) => res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(value))
      if (req.method === 'POST' && req.url === '/token') {
        state.tokenRequests++
        const form = new URLSearchParams(body)
        const problem = checkAssertion(form, publicKey, clientEmail, tokenUrl)
        if (problem !== undefined) {
          state.rejectedTokens.push(problem)
          return json(400, { error: 'invalid_grant', error_description: problem })
        }
        return json(200, { access_token: token, expires_in: 3599, token_type: 'Bearer' })
      }
      const match = /^\/webmasters\/v3\/sites\/([^/]+)\/searchAnalytics\/query$/.exec(req.url ?? '')
      if (req.method === 'POST' && match !== null) {
        if (req.headers.authorization !== `Bearer ${token}`) return json(401, { error: { code: 401, message: 'Request had invalid authentication credentials.', status: 'UNAUTHENTICATED' } })
        const query = JSON.parse(body) as Record<string, unknown>
        state.queries.push({ at: Date.now(), site: decodeURIComponent(match[1]!), body: query })
        if (state.throttle.next > 0) {
          state.throttle.next--
          const headers: Record<string, string> = state.throttle.retryAfter === '' ? {} : { 'retry-after': state.throttle.retryAfter }
          return json(state.throttle.status, { error: { code: state.throttle.status, message: 'Quota exceeded', status: 'RESOURCE_EXHAUSTED' } }, headers)
        }
        if (JSON.stringify(query.dimensions) !== '["page"]') return json(400, { error: { code: 400, message: 'expected dimensions ["page"]' } })
        const rowLimit = Number(query.rowLimit ?? 1000)
        const startRow = Number(query.startRow ?? 0)
        if (!(rowLimit >= 1 && rowLimit <= 25_000)) return json(400, { error: { code: 400, message: 'rowLimit must be 1..25000' } })
        const rows = state.rows.slice(startRow, startRow + rowLimit)
        // Like the API: no rows key at all past the end.
        return json(200, rows.length === 0 ? { responseAggregationType: 'byPage' } : { rows, responseAggregationType: 'byPage' })
      }
      json(404, { error: { code: 404, message: 'not found' } })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  tokenUrl = `${url}/token`
  return Object.assign(state, {
    url,
    tokenUrl,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  })
}

function checkAssertion(form: URLSearchParams, publicKey: KeyObject, clientEmail: string, audience: string): string | undefined {
  if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') return 'grant_type must be the JWT bearer grant'
  const parts = (form.get('assertion') ?? '').split('.')
  if (parts.length !== 3) return 'assertion is not a JWT'
  const [header, claims, signature] = parts as [string, string, string]
  const parsedHeader = JSON.parse(Buffer.from(header, 'base64url').toString()) as Record<string, unknown>
  if (parsedHeader.alg !== 'RS256') return 'alg must be RS256'
  if (!createVerify('RSA-SHA256').update(`${header}.${claims}`).verify(publicKey, Buffer.from(signature, 'base64url'))) return 'signature does not verify'
  const c = JSON.parse(Buffer.from(claims, 'base64url').toString()) as Record<string, unknown>
  const now = Math.floor(Date.now() / 1000)
  if (c.iss !== clientEmail) return 'iss is not the service account'
  if (c.aud !== audience) return `aud must be ${audience}`
  if (c.scope !== 'https://www.googleapis.com/auth/webmasters.readonly') return 'scope must be webmasters.readonly'
  if (typeof c.iat !== 'number' || typeof c.exp !== 'number' || c.exp <= now || c.iat > now + 60 || c.exp - c.iat > 3600) return 'iat/exp out of range'
  return undefined
}
