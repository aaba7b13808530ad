// Compressed representations of a rendered entry: gzip and brotli bytes made once, at render time (a
// page of a few KB on the event loop, where it costs less than the trip to libuv's thread pool and back;
// a larger one in the thread pool), kept beside the identity bytes, and chosen per request by
// Accept-Encoding. A hit never compresses. Each coding is its own representation (RFC 9110 section
// 8.8.3): its own strong ETag, the hash of its own bytes.

import { promisify } from 'node:util'
import { brotliCompress, brotliCompressSync, type BrotliOptions, constants, gzip, gzipSync } from 'node:zlib'
import { negotiate } from '@fastify/accept-negotiator'
import { LRUCache } from 'lru-cache'
import { strongEtag } from './conditional.ts'

export type ContentCoding = 'br' | 'gzip'

/** Preference when a client accepts both equally: brotli is smaller for HTML. */
const CODINGS: readonly ContentCoding[] = ['br', 'gzip']

export interface EncodedBody {
  body: Buffer
  etag: string
}

/** The compressed representations an entry has; empty when compressing would not pay. */
export type Encodings = Partial<Record<ContentCoding, EncodedBody>>

/** Below this many bytes the headers outweigh what compression saves (nginx's gzip_min_length idea). */
export const MIN_COMPRESSIBLE_BYTES = 256

/** Whether an entry is offered coded (and so says Vary: Accept-Encoding), its codings ready or not. */
export function isCompressible(body: Buffer): boolean {
  return body.length >= MIN_COMPRESSIBLE_BYTES
}

const gzipAsync = promisify(gzip)
const brotliAsync = promisify(brotliCompress)

/**
 * A window just larger than the body. Brotli's default (22 bits) allocates a 4 MiB ring buffer and its
 * hash tables per call; V8 counts that native memory as external, and at 8 renders in flight it set off a
 * full GC every ~11 misses (bench/RESULTS.md, cold misses). Fitted, the output is the same within a byte
 * or two and the CPU per body about a seventh.
 */
export function brotliWindowBits(length: number): number {
  return Math.min(constants.BROTLI_MAX_WINDOW_BITS, Math.max(constants.BROTLI_MIN_WINDOW_BITS, Math.ceil(Math.log2(length + 16))))
}

/**
 * Up to this size a body is compressed on the event loop: both codings of a 3 KB page take 0.15 ms of CPU
 * there, against 0.36 ms through the thread pool's stream machinery (and a full GC every few hundred
 * misses from its buffers); 32 KiB takes about half a millisecond. Larger bodies go to the thread pool.
 */
export const SYNC_COMPRESS_MAX_BYTES = 32 * 1024

/**
 * gzip level 6 and brotli quality 5, once per render. On pages of 3 KB of prose both give the bytes level
 * 9 gives (1,605 and 1,489 on average) for 0.08 + 0.11 ms of CPU against 0.13 + 0.16; on 20 KB, brotli 5
 * is 0.2% larger than 9. Brotli 10-11 cost 10-80x more for a few percent, and a miss is on a request's
 * path (bench/RESULTS.md, cold misses).
 */
export async function compressBody(body: Buffer): Promise<Encodings> {
  if (!isCompressible(body)) return {}
  const gzipOptions = { level: 6 }
  const brotliOptions: BrotliOptions = {
    params: {
      [constants.BROTLI_PARAM_QUALITY]: 5,
      [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT,
      [constants.BROTLI_PARAM_SIZE_HINT]: body.length,
      [constants.BROTLI_PARAM_LGWIN]: brotliWindowBits(body.length),
    },
  }
  const [gz, br] =
    body.length <= SYNC_COMPRESS_MAX_BYTES
      ? [gzipSync(body, gzipOptions), brotliCompressSync(body, brotliOptions)]
      : await Promise.all([gzipAsync(body, gzipOptions), brotliAsync(body, brotliOptions)])
  const encodings: Encodings = {}
  // A coding that does not make the bytes smaller is not offered.
  if (br.length < body.length) encodings.br = { body: br, etag: strongEtag(br) }
  if (gz.length < body.length) encodings.gzip = { body: gz, etag: strongEtag(gz) }
  return encodings
}

export function hasEncodings(encodings: Encodings): boolean {
  return encodings.br !== undefined || encodings.gzip !== undefined
}

/** Distinct Accept-Encoding values are few (each browser and CDN sends one); bounded all the same. */
const accepted = new LRUCache<string, readonly ContentCoding[]>({ max: 1024 })
const NONE: readonly ContentCoding[] = Object.freeze([])

/**
 * The codings a request accepts, most preferred first (q-values honoured, `q=0` refuses, `*` counts);
 * empty for none or no header. Parsed once per distinct header value.
 */
export function acceptedCodings(header: string | string[] | undefined): readonly ContentCoding[] {
  if (header === undefined || header === '') return NONE
  const value = Array.isArray(header) ? header.join(',') : header
  let codings = accepted.get(value)
  if (codings === undefined) {
    const first = negotiate(value, [...CODINGS])
    const rest = first === null ? null : negotiate(value, CODINGS.filter((c) => c !== first))
    codings = Object.freeze([first, rest].filter((c): c is ContentCoding => c !== null))
    accepted.set(value, codings)
  }
  return codings
}

/** The first accepted coding the entry has, or undefined for the identity bytes. */
export function chooseCoding(encodings: Encodings, accepts: readonly ContentCoding[]): ContentCoding | undefined {
  for (const coding of accepts) if (encodings[coding] !== undefined) return coding
  return undefined
}
