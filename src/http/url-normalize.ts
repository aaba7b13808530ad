// URL normalization for the page path: one canonical URL per page, so the CDN and the origin cache
// hold one entry per page, and a redirect can only ever point at a path on this same origin.

/**
 * Query parameters that identify a click, not content. Every parameter not on QUERY_ALLOWLIST is dropped
 * from page URLs; these never can be allowed, and the CDN (the VCL) strips them before its cache key.
 */
export const TRACKING_PARAMS: ReadonlySet<string> = new Set([
  'gclid', 'gclsrc', 'dclid', 'gbraid', 'wbraid', 'fbclid', 'msclkid', 'yclid', 'twclid', 'ttclid',
  'li_fat_id', 'igshid', 'mc_cid', 'mc_eid', '_ga', '_gl', '_hsenc', '_hsmi', 'ref', 'ref_src', 'srsltid',
])

/** The utm_source value, the first one, whatever the case of its name (as the VCL reads it). */
export function utmSourceOf(rawQuery: string): string | undefined {
  for (const [name, value] of new URLSearchParams(rawQuery)) if (name.toLowerCase() === 'utm_source') return value
  return undefined
}

export function isTrackingParam(name: string): boolean {
  const lower = name.toLowerCase()
  return lower.startsWith('utm_') || TRACKING_PARAMS.has(lower)
}

/** Characters a page path may hold once canonical. Anything else is not a page of this site. */
const CANONICAL_PATH = /^\/(?:[a-z0-9._~-]+(?:\/[a-z0-9._~-]+)*)?$/

export function isCanonicalPagePath(path: string): boolean {
  return CANONICAL_PATH.test(path) && !path.split('/').some((s) => s === '.' || s === '..')
}

export type NormalizedUrl =
  | { kind: 'canonical'; path: string }
  | { kind: 'redirect'; path: string; location: string }
  | { kind: 'invalid' }

const MAX_URL_LENGTH = 2048

/** Lower-case path segments that cannot be '.' or '..' (they never start with a dot), no query: canonical as is. */
const ALREADY_CANONICAL = /^\/(?:[a-z0-9_~-][a-z0-9._~-]*(?:\/[a-z0-9_~-][a-z0-9._~-]*)*)?$/

const NO_PARAMETERS: ReadonlySet<string> = new Set()

/**
 * Normalizes a raw request target (path and query as received). Query parameter names are compared
 * in lower case, as every rule here does; only those in `queryAllowlist` (lower case) are kept, under
 * their lower-case name, sorted; every other one (tracking or not) is dropped by the redirect.
 * The path is never parsed as a URL: `//evil.example/x` stays a path on this origin.
 */
export function normalizeRequestUrl(rawUrl: string, queryAllowlist: ReadonlySet<string> = NO_PARAMETERS): NormalizedUrl {
  if (rawUrl.length > MAX_URL_LENGTH || !rawUrl.startsWith('/')) return { kind: 'invalid' }
  // The hot path: the CDN sends canonical URLs almost always; one regex settles them.
  if (ALREADY_CANONICAL.test(rawUrl)) return { kind: 'canonical', path: rawUrl }
  const hashAt = rawUrl.indexOf('#')
  const target = hashAt === -1 ? rawUrl : rawUrl.slice(0, hashAt)
  const queryAt = target.indexOf('?')
  const rawPath = queryAt === -1 ? target : target.slice(0, queryAt)
  const rawQuery = queryAt === -1 ? '' : target.slice(queryAt + 1)

  const path = canonicalPath(rawPath)
  if (path === undefined) return { kind: 'invalid' }

  const kept: Array<[string, string]> = []
  if (queryAllowlist.size > 0) {
    for (const [name, value] of new URLSearchParams(rawQuery)) {
      const lower = name.toLowerCase()
      if (queryAllowlist.has(lower)) kept.push([lower, value])
    }
  }
  kept.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
  const query = new URLSearchParams(kept)
  const search = query.toString()
  const location = search === '' ? path : `${path}?${search}`

  if (location === target) return { kind: 'canonical', path }
  return { kind: 'redirect', path, location }
}

function canonicalPath(rawPath: string): string | undefined {
  let decoded: string
  try {
    // Decode so %2F, %5C and %2E cannot smuggle separators or dot segments past the checks below.
    decoded = decodeURIComponent(rawPath)
  } catch {
    return undefined
  }
  const segments: string[] = []
  for (const segment of decoded.replace(/\\/g, '/').toLowerCase().split('/')) {
    if (segment === '' || segment === '.') continue
    if (segment === '..') {
      segments.pop()
      continue
    }
    segments.push(segment)
  }
  const path = `/${segments.join('/')}`
  return isCanonicalPagePath(path) ? path : undefined
}
