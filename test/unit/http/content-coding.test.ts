import t from 'tap'
import { brotliCompressSync, brotliDecompressSync, constants, gunzipSync } from 'node:zlib'
import { randomBytes } from 'node:crypto'
import { acceptedCodings, brotliWindowBits, chooseCoding, compressBody, MIN_COMPRESSIBLE_BYTES } from '../../../src/http/content-coding.ts'
import { decodeEntry, encodeEntry } from '../../../src/cache/redis-l2.ts'
import { type CachedResponse, entryBytes, ResponseCache } from '../../../src/cache/response-cache.ts'

const html = (bytes: number): Buffer => {
  let text = '<!doctype html><title>t</title>'
  for (let i = 0; text.length < bytes; i++) text += `<p class="row">Handle invoices and payroll for dental teams, plan ${i}</p>\n`
  return Buffer.from(text.slice(0, bytes))
}

t.test('Accept-Encoding: q-values, refusals and wildcards, most preferred first', async (t) => {
  const cases: Array<[string | undefined, string[]]> = [
    [undefined, []],
    ['', []],
    ['identity', []],
    ['gzip', ['gzip']],
    ['gzip, deflate', ['gzip']],
    ['gzip, deflate, br', ['br', 'gzip']],
    ['br, gzip', ['br', 'gzip']],
    ['gzip, br;q=0.5', ['gzip', 'br']],
    ['br;q=0, gzip', ['gzip']],
    ['gzip;q=0, br;q=0', []],
    ['*', ['br', 'gzip']],
    ['deflate, compress', []],
    ['GZIP', []], // tokens are matched as sent; browsers and CDNs send lower case
  ]
  for (const [header, expected] of cases) t.same(acceptedCodings(header), expected, JSON.stringify(header))
  t.equal(acceptedCodings('br, gzip'), acceptedCodings('br, gzip'), 'parsed once per distinct value')
  t.same(acceptedCodings(['gzip', 'br']), ['br', 'gzip'], 'a repeated header is one list')
})

t.test('compressed once: gzip and brotli bytes that decode to the identity bytes, each with its own strong ETag', async (t) => {
  const body = html(20_000)
  const encodings = await compressBody(body)
  t.same(gunzipSync(encodings.gzip!.body), body)
  t.same(brotliDecompressSync(encodings.br!.body), body)
  t.ok(encodings.br!.body.length < body.length / 4 && encodings.gzip!.body.length < body.length / 4, `br ${encodings.br!.body.length}, gzip ${encodings.gzip!.body.length} bytes for ${body.length}`)
  t.match(encodings.gzip!.etag, /^"[A-Za-z0-9_-]{27}"$/)
  t.not(encodings.gzip!.etag, encodings.br!.etag)
  t.same(await compressBody(html(MIN_COMPRESSIBLE_BYTES - 1)), {}, 'too small to pay')
  t.same(await compressBody(randomBytes(4096)), {}, 'a coding that does not make the bytes smaller is not offered')
  t.equal(chooseCoding(encodings, ['gzip', 'br']), 'gzip')
  t.equal(chooseCoding(encodings, []), undefined)
  t.equal(chooseCoding({ gzip: encodings.gzip! }, ['br', 'gzip']), 'gzip', 'the next accepted coding the entry has')
})

const entry = async (bytes: number, compressed: boolean): Promise<CachedResponse> => {
  const body = html(bytes)
  const now = Date.now()
  return {
    status: 200,
    body,
    encodings: compressed ? await compressBody(body) : {},
    headers: { 'content-type': 'text/html; charset=utf-8' },
    notModifiedHeaders: {},
    etag: '"e"',
    lastModified: new Date(1_700_000_000_000),
    perSegment: false,
    freshUntil: now + 60_000,
    swrUntil: now + 120_000,
    staleUntil: now + 180_000,
    renderMs: 3,
    renderedAt: now,
    tags: ['p-1'],
  }
}

t.test('the L2 layout carries every coding as raw bytes, and refuses a truncated entry', async (t) => {
  const original = await entry(10_000, true)
  const decoded = decodeEntry(encodeEntry(original))!
  t.same(decoded.body, original.body)
  t.same(decoded.encodings.br!.body, original.encodings.br!.body)
  t.same(decoded.encodings.gzip!.body, original.encodings.gzip!.body)
  t.equal(decoded.encodings.gzip!.etag, original.encodings.gzip!.etag)
  t.same(decoded.lastModified, original.lastModified)
  const raw = encodeEntry(original)
  t.equal(decodeEntry(raw.subarray(0, raw.length - 1)), undefined, 'a short read is a miss, not a corrupt body')
  t.same(decodeEntry(encodeEntry(await entry(500, false)))!.encodings, {})
})

t.test("L1's byte bound counts every coding", async (t) => {
  // 1 MB cache: an entry may take a tenth of it. 60 KB of identity bytes fit; with their codings they do not.
  const plain = await entry(60_000, false)
  const compressed = await entry(60_000, true)
  compressed.encodings.gzip!.body = Buffer.concat([compressed.encodings.gzip!.body, Buffer.alloc(30_000)])
  compressed.encodings.br!.body = Buffer.concat([compressed.encodings.br!.body, Buffer.alloc(30_000)])
  t.ok(entryBytes(compressed) > 120_000)
  const cache = new ResponseCache(1_000_000)
  cache.set('plain', plain, Date.now() + 60_000)
  cache.set('compressed', compressed, Date.now() + 60_000)
  t.ok(cache.get('plain'), 'the identity bytes alone fit')
  t.equal(cache.get('compressed'), undefined, 'with its codings the entry is over the per-entry bound')
})

t.test("brotli's window fits the body: the same size out as the default 4 MiB window, without allocating it", async (t) => {
  t.equal(brotliWindowBits(300), 10, 'the smallest window brotli allows')
  t.equal(brotliWindowBits(3_000), 12)
  t.equal(brotliWindowBits(200_000), 18)
  t.equal(brotliWindowBits(64 << 20), constants.BROTLI_MAX_WINDOW_BITS)
  for (const size of [300, 2_000, 20_000, 200_000]) {
    const body = html(size)
    const { br } = await compressBody(body)
    const unfitted = brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 5, [constants.BROTLI_PARAM_MODE]: constants.BROTLI_MODE_TEXT } })
    t.same(brotliDecompressSync(br!.body), body, `${size} B decodes`)
    t.ok(br!.body.length <= unfitted.length + 4, `${size} B: ${br!.body.length} bytes fitted, ${unfitted.length} with the default window`)
  }
})
