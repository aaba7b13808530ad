// What PostgreSQL can store as text and jsonb, checked on every input before anything is written.
// text and jsonb refuse U+0000 (`invalid byte sequence for encoding "UTF8": 0x00`, `unsupported Unicode
// escape sequence`), and an unpaired UTF-16 surrogate (JSON allows "\ud800") is no character at all:
// the driver encodes it to UTF-8 as U+FFFD, so text would silently store a different string, and jsonb
// refuses it outright. Both are refused here, with a message that says what to fix.

/** Why `value` cannot be stored as PostgreSQL text, or undefined when it can. Never echoes the value. */
export function unstorableText(value: string): string | undefined {
  const nul = value.indexOf('\u0000')
  if (nul !== -1) return `contains a NUL character (U+0000) at position ${nul}, which PostgreSQL cannot store; remove it`
  if (value.isWellFormed()) return undefined
  for (let i = 0; i < value.length; i++) {
    const unit = value.charCodeAt(i)
    if (unit < 0xd800 || unit > 0xdfff) continue
    const next = value.charCodeAt(i + 1)
    if (unit <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
      i++
      continue
    }
    return `contains an unpaired UTF-16 surrogate (\\u${unit.toString(16)}) at position ${i}, which is not a Unicode character (stored, it would become U+FFFD); send both halves of the surrogate pair, or remove it`
  }
  return undefined
}

/** One place in a JSON value that cannot be stored (as jsonb): its path (`metadata.a.b`, `metadata.list[2]`) and why. */
export interface UnstorableJson {
  path: string
  message: string
}

const PLAIN_KEY = /^[A-Za-z_$][\w$-]*$/

/**
 * The first key or string in `value` (objects and arrays, at any depth) that jsonb cannot hold, with its
 * path under `path`; undefined when all of it can be stored.
 */
export function unstorableJson(value: unknown, path: string): UnstorableJson | undefined {
  if (typeof value === 'string') {
    const message = unstorableText(value)
    return message === undefined ? undefined : { path, message }
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = unstorableJson(value[i], `${path}[${i}]`)
      if (found !== undefined) return found
    }
    return undefined
  }
  if (typeof value === 'object' && value !== null) {
    for (const [key, item] of Object.entries(value)) {
      const keyProblem = unstorableText(key)
      // JSON.stringify escapes what it cannot show (U+0000 as \u0000, a lone surrogate as \ud800).
      const itemPath = keyProblem === undefined && PLAIN_KEY.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`
      if (keyProblem !== undefined) return { path: itemPath, message: `key ${keyProblem}` }
      const found = unstorableJson(item, itemPath)
      if (found !== undefined) return found
    }
  }
  return undefined
}
