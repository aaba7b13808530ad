// CDN purge adapters, each speaking its CDN's documented API:
// - Varnish (varnish-modules xkey): `PURGE /` with `xkey-purge: <tags>` (or `xkey-softpurge`), and
//   `PURGE <path>` per path; the project's VCL maps these to xkey.purge / xkey.softpurge / purge.
// - Fastly: `POST /service/{id}/purge` with `Surrogate-Key: <keys>` (at most 256 keys a request),
//   `Fastly-Soft-Purge: 1` for soft purges; URLs with `POST /purge/{host}{path}`.
// - Cloudflare: `POST /zones/{zone}/purge_cache` with `{"tags": [...]}` or `{"files": [...]}`, at most
//   30 items a request.
// A non-2xx answer or a network error throws: the outbox keeps the purge and retries it.

import type { Config } from '../config.ts'
import type { PurgeTarget } from '../db/schema.ts'
import { chunks } from '../chunks.ts'

export interface PurgeRequest {
  paths: string[]
  tags: string[]
  soft: boolean
}

export interface CdnAdapter {
  readonly target: PurgeTarget
  purge(request: PurgeRequest): Promise<void>
}

export type CdnSettings = Pick<
  Config,
  'publicBaseUrl' | 'varnishPurgeUrl' | 'fastlyApiUrl' | 'fastlyServiceId' | 'fastlyApiToken' | 'cloudflareApiUrl' | 'cloudflareZoneId' | 'cloudflareApiToken'
>

const REQUEST_TIMEOUT_MS = 10_000


async function send(url: string, init: RequestInit, what: string): Promise<void> {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })
  if (!response.ok) {
    const text = (await response.text()).slice(0, 300)
    throw new Error(`${what}: ${response.status} ${text}`)
  }
  await response.arrayBuffer()
}

export class VarnishAdapter implements CdnAdapter {
  readonly target = 'varnish' as const
  private readonly baseUrl: string
  constructor(baseUrl: string) {
    this.baseUrl = baseUrl.replace(/\/$/, '')
  }
  async purge({ paths, tags, soft }: PurgeRequest): Promise<void> {
    if (tags.length > 0) {
      await send(`${this.baseUrl}/`, { method: 'PURGE', headers: { [soft ? 'xkey-softpurge' : 'xkey-purge']: tags.join(' ') } }, 'varnish xkey purge')
    }
    for (const path of paths) await send(`${this.baseUrl}${path}`, { method: 'PURGE' }, `varnish purge ${path}`)
  }
}

export class FastlyAdapter implements CdnAdapter {
  readonly target = 'fastly' as const
  private readonly settings: CdnSettings
  constructor(settings: CdnSettings) {
    this.settings = settings
  }
  async purge({ paths, tags, soft }: PurgeRequest): Promise<void> {
    const headers: Record<string, string> = { 'fastly-key': this.settings.fastlyApiToken ?? '', accept: 'application/json' }
    if (soft) headers['fastly-soft-purge'] = '1'
    for (const keys of chunks(tags, 256)) {
      await send(`${this.settings.fastlyApiUrl}/service/${this.settings.fastlyServiceId}/purge`, { method: 'POST', headers: { ...headers, 'surrogate-key': keys.join(' ') } }, 'fastly surrogate-key purge')
    }
    const host = new URL(this.settings.publicBaseUrl).host
    for (const path of paths) await send(`${this.settings.fastlyApiUrl}/purge/${host}${path}`, { method: 'POST', headers }, `fastly purge ${path}`)
  }
}

export class CloudflareAdapter implements CdnAdapter {
  readonly target = 'cloudflare' as const
  private readonly settings: CdnSettings
  constructor(settings: CdnSettings) {
    this.settings = settings
  }
  async purge({ paths, tags }: PurgeRequest): Promise<void> {
    const url = `${this.settings.cloudflareApiUrl}/zones/${this.settings.cloudflareZoneId}/purge_cache`
    const headers = { authorization: `Bearer ${this.settings.cloudflareApiToken ?? ''}`, 'content-type': 'application/json' }
    for (const group of chunks(tags, 30)) await send(url, { method: 'POST', headers, body: JSON.stringify({ tags: group }) }, 'cloudflare tag purge')
    const files = paths.map((path) => `${this.settings.publicBaseUrl}${path}`)
    for (const group of chunks(files, 30)) await send(url, { method: 'POST', headers, body: JSON.stringify({ files: group }) }, 'cloudflare url purge')
  }
}

/** The adapters the configuration asks for; a target without its settings is a configuration error. */
export function createAdapters(targets: readonly PurgeTarget[], settings: CdnSettings): CdnAdapter[] {
  return targets.map((target) => {
    switch (target) {
      case 'varnish':
        return new VarnishAdapter(settings.varnishPurgeUrl ?? '')
      case 'fastly':
        return new FastlyAdapter(settings)
      case 'cloudflare':
        return new CloudflareAdapter(settings)
    }
  })
}
