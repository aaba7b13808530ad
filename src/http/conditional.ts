// Validators and conditional GET (RFC 9110 section 13): strong ETags from the rendered bytes,
// If-None-Match first, If-Modified-Since only when no If-None-Match was sent.

import { createHash } from 'node:crypto'

export function strongEtag(body: Buffer | string): string {
  return `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`
}

/** If-None-Match uses the weak comparison: W/"x" matches "x". */
function etagListMatches(header: string, etag: string): boolean {
  const opaque = etag.replace(/^W\//, '')
  return header.split(',').some((candidate) => {
    const trimmed = candidate.trim()
    return trimmed === '*' || trimmed.replace(/^W\//, '') === opaque
  })
}

export interface ConditionalHeaders {
  ifNoneMatch?: string | undefined
  ifModifiedSince?: string | undefined
}

/** True when the client's copy is current and a 304 is the answer. */
export function isNotModified(request: ConditionalHeaders, etag: string, lastModified: Date): boolean {
  if (request.ifNoneMatch !== undefined && request.ifNoneMatch !== '') {
    return etagListMatches(request.ifNoneMatch, etag)
  }
  if (request.ifModifiedSince !== undefined && request.ifModifiedSince !== '') {
    const since = Date.parse(request.ifModifiedSince)
    if (Number.isNaN(since)) return false
    // HTTP dates have one-second resolution.
    return Math.floor(lastModified.getTime() / 1000) <= Math.floor(since / 1000)
  }
  return false
}
