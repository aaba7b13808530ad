// Segment resolution from a bounded allowlist: the CDN's X-Segment header, else the user_segment
// cookie, else the utm_source rules kept with the segments, else the default. Unknown values never
// create a cache key: they become the default.

export interface SegmentDirectory {
  slugs: ReadonlySet<string>
  defaultSlug: string
  /** utm_source (lower case) -> segment slug */
  utmRules: ReadonlyMap<string, string>
}

export type SegmentSource = 'header' | 'cookie' | 'utm' | 'default'

export interface SegmentInput {
  header?: string | string[] | undefined
  cookieHeader?: string | undefined
  utmSource?: string | null | undefined
}

export const SEGMENT_COOKIE = 'user_segment'
const MAX_VALUE_LENGTH = 64

export function buildSegmentDirectory(rows: ReadonlyArray<{ slug: string; utmSources: readonly string[]; isDefault: boolean }>, fallbackDefault = 'general'): SegmentDirectory {
  const slugs = new Set(rows.map((r) => r.slug))
  const defaultSlug = rows.find((r) => r.isDefault)?.slug ?? rows[0]?.slug ?? fallbackDefault
  slugs.add(defaultSlug)
  const utmRules = new Map<string, string>()
  for (const row of rows) for (const source of row.utmSources) utmRules.set(source.toLowerCase(), row.slug)
  return { slugs, defaultSlug, utmRules }
}

function known(directory: SegmentDirectory, value: string | undefined): string | undefined {
  if (value === undefined || value.length === 0 || value.length > MAX_VALUE_LENGTH) return undefined
  const slug = value.trim().toLowerCase()
  return directory.slugs.has(slug) ? slug : undefined
}

/** Reads one cookie without decoding the others (a malformed neighbour must not hide it). */
export function readCookie(cookieHeader: string | undefined, name: string): string | undefined {
  if (cookieHeader === undefined || cookieHeader.length > 8192) return undefined
  for (const part of cookieHeader.split(';')) {
    const eq = part.indexOf('=')
    if (eq === -1 || part.slice(0, eq).trim() !== name) continue
    let value = part.slice(eq + 1).trim()
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1)
    try {
      return decodeURIComponent(value)
    } catch {
      return undefined
    }
  }
  return undefined
}

export function resolveSegment(directory: SegmentDirectory, input: SegmentInput): { segment: string; source: SegmentSource } {
  // A repeated header is ambiguous: take none of it rather than guess.
  const header = typeof input.header === 'string' ? known(directory, input.header) : undefined
  if (header !== undefined) return { segment: header, source: 'header' }
  const cookie = known(directory, readCookie(input.cookieHeader, SEGMENT_COOKIE))
  if (cookie !== undefined) return { segment: cookie, source: 'cookie' }
  const utm = input.utmSource?.trim().toLowerCase()
  if (utm !== undefined && utm.length <= MAX_VALUE_LENGTH) {
    const bySource = directory.utmRules.get(utm)
    if (bySource !== undefined && directory.slugs.has(bySource)) return { segment: bySource, source: 'utm' }
  }
  return { segment: directory.defaultSlug, source: 'default' }
}
