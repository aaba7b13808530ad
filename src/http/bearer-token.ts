// `Authorization: Bearer <token>` checked in constant time (the admin API, /metrics).

import { createHash, timingSafeEqual } from 'node:crypto'

const digest = (value: string): Buffer => createHash('sha256').update(value).digest()

/** A constant-time check of `Authorization: Bearer <token>` against one token. */
export function bearerTokenCheck(token: string): (authorization: string | undefined) => boolean {
  const expected = digest(token)
  return (authorization = '') => {
    const presented = authorization.startsWith('Bearer ') ? authorization.slice(7) : ''
    // Comparing fixed-length digests keeps the comparison constant-time whatever the lengths.
    return timingSafeEqual(digest(presented), expected)
  }
}
