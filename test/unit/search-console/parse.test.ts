import t from 'tap'
import { aggregateByPath, parseCsv, parsePerformanceCsv, urlToPagePath, validateDateRange, validateSearchAnalyticsRows } from '../../../src/search-console/parse.ts'

t.test('date range', async (t) => {
  t.same(validateDateRange('2026-10-01', '2026-10-31'), [])
  t.same(validateDateRange('2026-10-01', '2026-10-01'), [])
  t.same(validateDateRange('2026-02-30', 20261031), [
    { record: -1, field: 'startDate', message: 'must be a date YYYY-MM-DD' },
    { record: -1, field: 'endDate', message: 'must be a date YYYY-MM-DD' },
  ])
  t.same(validateDateRange('2026-10-31', '2026-10-01'), [{ record: -1, field: 'endDate', message: 'must not be before startDate' }])
})

t.test('Search Analytics rows: every problem with its row index and field', async (t) => {
  const good = { keys: ['https://www.example.test/a'], clicks: 3, impressions: 100, ctr: 0.03, position: 4.2 }
  t.same(validateSearchAnalyticsRows([good]), { rows: [{ url: 'https://www.example.test/a', clicks: 3, impressions: 100, ctr: 0.03, position: 4.2 }], problems: [] })
  const { problems } = validateSearchAnalyticsRows([
    good,
    { keys: ['/relative'], clicks: -1, impressions: 'many', ctr: 2, position: 1 },
    'nope',
    { keys: ['https://a.test/x', 'query'], clicks: 1, impressions: 1, ctr: 1, position: 1, extra: true },
    { keys: ['https://a.test/y'], clicks: 5, impressions: 2, ctr: 1, position: 1 },
    { keys: ['ftp://a.test/y'], clicks: 0, impressions: 0, ctr: 0 },
  ])
  t.same(problems, [
    { record: 1, field: 'keys', message: '"/relative" is not an absolute http(s) URL' },
    { record: 1, field: 'clicks', message: 'must be a number >= 0, got -1' },
    { record: 1, field: 'impressions', message: 'must be a number >= 0, got "many"' },
    { record: 1, field: 'ctr', message: 'must be a number from 0 to 1, got 2' },
    { record: 2, field: '(row)', message: 'must be a JSON object' },
    { record: 3, field: 'extra', message: 'is not a Search Analytics row field (keys, clicks, impressions, ctr, position)' },
    { record: 3, field: 'keys', message: 'must be [page URL] (query the API with dimensions ["page"])' },
    { record: 4, field: 'clicks', message: '5 clicks exceed 2 impressions' },
    { record: 5, field: 'keys', message: '"ftp://a.test/y" is not an absolute http(s) URL' },
    { record: 5, field: 'position', message: 'must be a number >= 0, got nothing' },
  ])
})

t.test('RFC 4180 CSV: BOM, quotes, doubled quotes, commas and newlines in quotes, CRLF', async (t) => {
  t.same(parseCsv('\ufeffa,b\r\n"x, y","say ""hi"""\n"multi\nline",2\n\n'), [
    ['a', 'b'],
    ['x, y', 'say "hi"'],
    ['multi\nline', '2'],
  ])
  t.same(parseCsv('a,b\n1,2'), [['a', 'b'], ['1', '2']], 'no final newline')
  t.same(parseCsv(''), [])
})

t.test('the Performance report export', async (t) => {
  const csv = '\ufeffTop pages,Clicks,Impressions,CTR,Position\r\nhttps://www.example.test/a,"1,234",50000,2.47%,3.1\r\nhttps://www.example.test/b,0,12,0%,40\r\n'
  t.same(parsePerformanceCsv(csv), {
    rows: [
      { url: 'https://www.example.test/a', clicks: 1234, impressions: 50000, ctr: 0.0247, position: 3.1 },
      { url: 'https://www.example.test/b', clicks: 0, impressions: 12, ctr: 0, position: 40 },
    ],
    problems: [],
  })
  const bad = parsePerformanceCsv('Top pages,Clicks,Impressions,CTR,Position\nnot-a-url,1,x,3.2,1\nhttps://a.test/c,9,3,10%,2\n')
  t.same(bad.problems, [
    { record: 0, field: 'Top pages', message: 'line 2: "not-a-url" is not an absolute http(s) URL' },
    { record: 0, field: 'Impressions', message: 'line 2: "x" is not a number >= 0' },
    { record: 0, field: 'CTR', message: 'line 2: "3.2" is not a percentage such as 3.2%' },
    { record: 1, field: 'Clicks', message: 'line 3: 9 clicks exceed 3 impressions' },
  ])
  const missing = parsePerformanceCsv('Page,Clicks,Impressions\nhttps://a.test/x,1,2\n')
  t.same(missing.problems.map((p) => p.field), ['ctr', 'position'])
  t.match(missing.problems[0]!.message, /column missing from the header/)
  t.same(parsePerformanceCsv('').problems.length, 5)
})

t.test('URLs map to canonical page paths; rows of one path add up', async (t) => {
  t.equal(urlToPagePath('https://www.example.test/CRM/Dentists/?utm_source=x#top'), '/crm/dentists')
  t.equal(urlToPagePath('http://example.test/'), '/')
  t.equal(urlToPagePath('https://www.example.test/%C3%9Cber'), undefined)
  const { pages, unmatchable } = aggregateByPath([
    { url: 'https://www.example.test/a', clicks: 10, impressions: 100, ctr: 0.1, position: 2 },
    { url: 'http://example.test/a/', clicks: 30, impressions: 300, ctr: 0.1, position: 6 },
    { url: 'https://www.example.test/b', clicks: 0, impressions: 0, ctr: 0, position: 7 },
    { url: 'https://www.example.test/%C3%9Cber', clicks: 1, impressions: 2, ctr: 0.5, position: 1 },
  ])
  t.same(pages, [
    { path: '/a', clicks: 40, impressions: 400, ctr: 0.1, position: 5 },
    { path: '/b', clicks: 0, impressions: 0, ctr: 0, position: 7 },
  ])
  t.same(unmatchable, ['https://www.example.test/%C3%9Cber'])
})

t.test('a URL the database cannot store (NUL, an unpaired surrogate) is named by row, in rows and in the CSV', async (t) => {
  const row = (url: string) => ({ keys: [url], clicks: 1, impressions: 2, ctr: 0.5, position: 1 })
  const api = validateSearchAnalyticsRows([row('https://www.example.test/a'), row('https://www.example.test/a\u0000b'), row('https://www.example.test/\ud800')])
  t.same(api.problems.map((p) => [p.record, p.field]), [[1, 'keys'], [2, 'keys']])
  t.match(api.problems[0]!.message, /^the page URL contains a NUL character \(U\+0000\) at position 26/)
  t.match(api.problems[1]!.message, /^the page URL contains an unpaired UTF-16 surrogate \(\\ud800\)/)
  const csv = parsePerformanceCsv('"Top pages","Clicks","Impressions","CTR","Position"\nhttps://www.example.test/a,1,2,50%,1\nhttps://www.example.test/a\u0000,1,2,50%,1\n')
  t.same(csv.problems.map((p) => [p.record, p.field]), [[1, 'Top pages']])
  t.match(csv.problems[0]!.message, /^line 3: the URL contains a NUL character/)
})
