// The live pull from the Search Console API: a service account's JWT bearer grant (RFC 7523, RS256)
// for an access token, then searchanalytics.query with dimension page, 25,000 rows a request paged
// by startRow, backing off on 429/5xx as the quota asks (Retry-After, else exponential with jitter).
// Base URLs come from configuration, so tests point the same code at a local server.

import { createSign } from 'node:crypto'
import { DomainError } from '../errors.ts'

export const SEARCH_CONSOLE_SCOPE = 'https://www.googleapis.com/auth/webmasters.readonly'
export const DEFAULT_TOKEN_URL = 'https://oauth2.googleapis.com/token'
/** The API's maximum rows per request. */
export const MAX_ROW_LIMIT = 25_000
const MAX_BACKOFF_MS = 60_000

export interface ServiceAccountKey {
  client_email: string
  private_key: string
  token_uri: string
}

/** A service account JSON key as the Cloud console downloads it; names the field that is wrong. */
export function parseServiceAccountKey(text: string): ServiceAccountKey {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (err) {
    // V8's message quotes the text around the error, which here is the private key: give the place only.
    const at = /at position (\d+)(?: \(line (\d+) column (\d+)\))?/.exec((err as Error).message)
    const where = at === null ? '' : at[2] === undefined ? ` (at character ${Number(at[1]) + 1})` : ` (at line ${at[2]} column ${at[3]})`
    throw new DomainError('VALIDATION_FAILED', `the service account key is not JSON${where}; expected the JSON key file the Cloud console downloads`)
  }
  const key = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Record<string, unknown>
  const problems: string[] = []
  if (typeof key.client_email !== 'string' || !key.client_email.includes('@')) problems.push('client_email: missing or not an email address')
  if (typeof key.private_key !== 'string' || !key.private_key.includes('PRIVATE KEY')) problems.push('private_key: missing or not a PEM private key')
  if (key.token_uri !== undefined && typeof key.token_uri !== 'string') problems.push('token_uri: must be a URL')
  if (problems.length > 0) throw new DomainError('VALIDATION_FAILED', `the service account key is not usable: ${problems.join('; ')}`)
  return { client_email: key.client_email as string, private_key: key.private_key as string, token_uri: (key.token_uri as string | undefined) ?? DEFAULT_TOKEN_URL }
}

const base64url = (value: string | Buffer) => Buffer.from(value).toString('base64url')

/** The RS256 JWT a service account presents to the token endpoint (aud = that endpoint). */
export function serviceAccountJwt(key: ServiceAccountKey, audience: string, nowSeconds: number): string {
  const header = base64url(JSON.stringify({ alg: 'RS256', typ: 'JWT' }))
  const claims = base64url(JSON.stringify({ iss: key.client_email, scope: SEARCH_CONSOLE_SCOPE, aud: audience, iat: nowSeconds, exp: nowSeconds + 3600 }))
  const signature = createSign('RSA-SHA256').update(`${header}.${claims}`).sign(key.private_key)
  return `${header}.${claims}.${base64url(signature)}`
}

/** Retry-After as seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number | undefined {
  if (header === null || header.trim() === '') return undefined
  if (/^\d+$/.test(header.trim())) return Number(header.trim()) * 1000
  const date = Date.parse(header)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

export interface LivePullOptions {
  apiUrl: string
  /** Overrides the key's token_uri. */
  tokenUrl: string | undefined
  siteUrl: string
  startDate: string
  endDate: string
  key: ServiceAccountKey
  maxRetries: number
  rowLimit?: number
  timeoutMs?: number
  /** Waits between retries; tests keep the real one and short Retry-After values. */
  sleep?: (ms: number) => Promise<void>
  log?: { warn(obj: object, msg: string): void }
}

export interface LivePullResult {
  rows: unknown[]
  requests: number
  retries: number
}

const defaultSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export async function pullSearchAnalytics(options: LivePullOptions): Promise<LivePullResult> {
  const sleep = options.sleep ?? defaultSleep
  const rowLimit = Math.min(options.rowLimit ?? MAX_ROW_LIMIT, MAX_ROW_LIMIT)
  const timeoutMs = options.timeoutMs ?? 60_000
  const tokenUrl = options.tokenUrl ?? options.key.token_uri
  let requests = 0
  let retries = 0

  /** One call with the quota-aware retry loop: 429 and 5xx (and network errors) are retried. */
  const call = async (what: string, url: string, init: RequestInit): Promise<unknown> => {
    for (let attempt = 0; ; attempt++) {
      requests++
      let response: Response | undefined
      let failure: string
      try {
        response = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) })
        if (response.ok) return await response.json()
        const text = await response.text()
        failure = `${what}: HTTP ${response.status} ${text.slice(0, 300)}`
        if (response.status !== 429 && response.status < 500) throw new DomainError('UNAVAILABLE', failure)
      } catch (err) {
        if (err instanceof DomainError) throw err
        failure = `${what}: ${(err as Error).message}`
      }
      if (attempt >= options.maxRetries) throw new DomainError('UNAVAILABLE', `${failure} (gave up after ${attempt + 1} attempts)`)
      const wait = retryAfterMs(response?.headers.get('retry-after') ?? null) ?? Math.random() * Math.min(MAX_BACKOFF_MS, 1000 * 2 ** attempt)
      options.log?.warn({ what, attempt: attempt + 1, waitMs: Math.round(wait), failure }, 'Search Console request failed; backing off')
      retries++
      await sleep(Math.min(wait, MAX_BACKOFF_MS))
    }
  }

  const token = (await call('token', tokenUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion: serviceAccountJwt(options.key, tokenUrl, Math.floor(Date.now() / 1000)) }).toString(),
  })) as { access_token?: unknown }
  if (typeof token.access_token !== 'string') throw new DomainError('UNAVAILABLE', 'token: the response has no access_token')

  const queryUrl = `${options.apiUrl}/webmasters/v3/sites/${encodeURIComponent(options.siteUrl)}/searchAnalytics/query`
  const rows: unknown[] = []
  for (let startRow = 0; ; startRow += rowLimit) {
    const page = (await call(`searchAnalytics.query startRow ${startRow}`, queryUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token.access_token}` },
      body: JSON.stringify({ startDate: options.startDate, endDate: options.endDate, dimensions: ['page'], type: 'web', rowLimit, startRow }),
    })) as { rows?: unknown[] }
    const batch = Array.isArray(page.rows) ? page.rows : []
    rows.push(...batch)
    if (batch.length < rowLimit) return { rows, requests, retries }
  }
}
