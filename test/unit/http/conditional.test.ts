import t from 'tap'
import { isNotModified, strongEtag } from '../../../src/http/conditional.ts'

const etag = strongEtag('hello')
const lastModified = new Date('2026-01-02T03:04:05.678Z')

t.test('strong ETag from the bytes', async (t) => {
  t.match(etag, /^"[A-Za-z0-9_-]{27}"$/)
  t.equal(strongEtag(Buffer.from('hello')), etag, 'same bytes, same tag')
  t.not(strongEtag('hello!'), etag, 'other bytes, other tag')
})

t.test('conditional GET decisions', async (t) => {
  const table: Array<[string, { ifNoneMatch?: string; ifModifiedSince?: string }, boolean]> = [
    ['no validators', {}, false],
    ['matching ETag', { ifNoneMatch: etag }, true],
    ['weak form of the ETag', { ifNoneMatch: `W/${etag}` }, true],
    ['ETag in a list', { ifNoneMatch: `"other", ${etag}` }, true],
    ['star', { ifNoneMatch: '*' }, true],
    ['other ETag', { ifNoneMatch: '"other"' }, false],
    ['other ETag wins over a matching date', { ifNoneMatch: '"other"', ifModifiedSince: lastModified.toUTCString() }, false],
    ['same second', { ifModifiedSince: 'Fri, 02 Jan 2026 03:04:05 GMT' }, true],
    ['later date', { ifModifiedSince: 'Sat, 03 Jan 2026 00:00:00 GMT' }, true],
    ['earlier date', { ifModifiedSince: 'Fri, 02 Jan 2026 03:04:04 GMT' }, false],
    ['garbage date', { ifModifiedSince: 'yesterday-ish' }, false],
    ['empty headers', { ifNoneMatch: '', ifModifiedSince: '' }, false],
  ]
  for (const [name, headers, expected] of table) t.equal(isNotModified(headers, etag, lastModified), expected, name)
})
