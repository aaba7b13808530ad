import t from 'tap'
import { buildSegmentDirectory, readCookie, resolveSegment } from '../../../src/segments/segment-resolution.ts'

const directory = buildSegmentDirectory([
  { slug: 'enterprise', utmSources: ['linkedin'], isDefault: false },
  { slug: 'general', utmSources: [], isDefault: true },
  { slug: 'smb', utmSources: ['google', 'Bing'], isDefault: false },
])

t.test('precedence: header, cookie, utm, default', async (t) => {
  const table = [
    [{ header: 'smb', cookieHeader: 'user_segment=enterprise', utmSource: 'linkedin' }, 'smb', 'header'],
    [{ header: 'nope', cookieHeader: 'user_segment=enterprise', utmSource: 'google' }, 'enterprise', 'cookie'],
    [{ header: undefined, cookieHeader: 'a=b; user_segment=smb', utmSource: 'linkedin' }, 'smb', 'cookie'],
    [{ cookieHeader: 'user_segment=unknown', utmSource: 'linkedin' }, 'enterprise', 'utm'],
    [{ utmSource: 'BING' }, 'smb', 'utm'],
    [{ utmSource: 'twitter' }, 'general', 'default'],
    [{}, 'general', 'default'],
  ] as const
  for (const [input, segment, source] of table) t.same(resolveSegment(directory, input), { segment, source }, JSON.stringify(input))
})

t.test('hostile and malformed values become the default', async (t) => {
  const values = ['', ' ', 'SMB\r\nX: y', 'smb,enterprise', '../smb', 'x'.repeat(100), '\u0000', 'smb; drop table', '%73mb']
  for (const header of values) t.equal(resolveSegment(directory, { header }).segment, 'general', `header ${JSON.stringify(header)}`)
  t.equal(resolveSegment(directory, { header: ['smb', 'enterprise'] }).segment, 'general', 'a repeated header is ambiguous')
  t.equal(resolveSegment(directory, { header: ' SMB ' }).segment, 'smb', 'case and padding are normalized')
  t.equal(resolveSegment(directory, { cookieHeader: 'user_segment=%E0%A4%A' }).segment, 'general', 'undecodable cookie')
  t.equal(resolveSegment(directory, { cookieHeader: `user_segment=${'a'.repeat(9000)}` }).segment, 'general', 'oversized cookie header')
  t.equal(resolveSegment(directory, { utmSource: 'x'.repeat(100) }).segment, 'general')
})

t.test('cookie reading', async (t) => {
  t.equal(readCookie('user_segment="smb"', 'user_segment'), 'smb')
  t.equal(readCookie('broken; user_segment=smb', 'user_segment'), 'smb')
  t.equal(readCookie('xuser_segment=smb', 'user_segment'), undefined)
  t.equal(readCookie(undefined, 'user_segment'), undefined)
})

t.test('directory without rows or default still has a default', async (t) => {
  const empty = buildSegmentDirectory([])
  t.equal(empty.defaultSlug, 'general')
  t.equal(resolveSegment(empty, { header: 'general' }).segment, 'general')
  const noDefault = buildSegmentDirectory([{ slug: 'b', utmSources: [], isDefault: false }])
  t.equal(noDefault.defaultSlug, 'b')
})
