// The VCL generated from the segments table: the committed deploy/varnish/default.vcl is its output for
// the demo data, byte for byte, and the segment-dependent parts follow the origin's own rules
// (buildSegmentDirectory): the default, the fallback without one, and utm sources two segments claim.

import t from 'tap'
import { readFile } from 'node:fs/promises'
import { CRAWLER_USER_AGENT, DEFAULT_EXPERIMENT_BUCKETS, renderVarnishVcl, VARNISH_VCL_COMMAND, type VclSegment } from '../../../src/cdn/varnish-vcl.ts'
import { DEMO_SEGMENTS } from '../../../src/demo/demo-site.ts'
import { DomainError } from '../../../src/errors.ts'
import { buildSegmentDirectory, resolveSegment } from '../../../src/segments/segment-resolution.ts'
import { VCL_PATH, vclFor } from '../../support/varnish.ts'

const demo: VclSegment[] = DEMO_SEGMENTS.map((s) => ({ slug: s.slug, utmSources: s.utm_sources, isDefault: s.is_default }))

/** The body of vo_resolve_segment: where every segment-dependent line lives. */
const resolveSub = (vcl: string): string => /^sub vo_resolve_segment \{\n[\s\S]*?\n\}\n/m.exec(vcl)?.[0] ?? ''
const allowlists = (vcl: string): string[] => [...resolveSub(vcl).matchAll(/"\(\?i\)\^\\s\*\(([^)]*)\)\\s\*\$"/g)].map((m) => m[1]!)
const utmBranches = (vcl: string): Array<[string, string]> =>
  [...resolveSub(vcl).matchAll(/x-vo-utm ~ "\^\\s\*\(([^)]*)\)\\s\*\$"\) \{\n\s*set req\.http\.X-Segment = "([^"]*)";/g)].map((m) => [m[1]!, m[2]!])
const defaultOf = (vcl: string): string | undefined => /\n    set req\.http\.X-Segment = "([^"]*)";\n\}\n$/.exec(resolveSub(vcl))?.[1]

t.test('deploy/varnish/default.vcl is the generated VCL for the demo segments, byte for byte', async (t) => {
  const committed = await readFile(VCL_PATH, 'utf8')
  t.equal(
    committed,
    renderVarnishVcl(demo),
    `deploy/varnish/default.vcl is generated, not edited by hand (the template is src/cdn/varnish-vcl.ts): regenerate it from the demo data, on a fresh embedded database, with\n  DATABASE_URL= DATA_DIR=memory:// ${VARNISH_VCL_COMMAND.replace('npm run', 'npm run -s')} > deploy/varnish/default.vcl`,
  )
  t.same(allowlists(committed), ['developer|enterprise|general|smb', 'developer|enterprise|general|smb'], 'header and cookie allowlists, by slug')
  t.same(utmBranches(committed), [['github|hackernews', 'developer'], ['linkedin', 'enterprise'], ['bing|google', 'smb']])
  t.equal(defaultOf(committed), 'general')
  t.match(committed, `# GENERATED from the segments table by \`${VARNISH_VCL_COMMAND}\``, 'it says it is generated, and how')
  t.notMatch(committed, /DEMO_SEGMENTS/, 'no hand-kept list of the demo segments any more')
  t.doesNotThrow(() => vclFor(committed, '127.0.0.1', 8080), 'the backend lines the tests rewrite are there')
})

t.test('segments with utm sources and no default: the first row is the default, as at the origin', async (t) => {
  // listSegments order (by slug); none marked default.
  const rows: VclSegment[] = [
    { slug: 'agency', utmSources: [], isDefault: false },
    { slug: 'partners', utmSources: ['PartnerStack', 'news.ycombinator.com'], isDefault: false },
  ]
  const vcl = renderVarnishVcl(rows)
  t.same(allowlists(vcl), ['agency|partners', 'agency|partners'])
  t.same(utmBranches(vcl), [['news\\.ycombinator\\.com|partnerstack', 'partners']], 'lower case, sorted, dots escaped')
  t.equal(defaultOf(vcl), 'agency')
  t.equal(defaultOf(vcl), buildSegmentDirectory(rows).defaultSlug)
  t.match(vcl, /^# Segments: agency \(default\), partners\.$/m)
  t.match(vcl, /# `agency`, so a made-up value can never create a cache entry/)
  t.notMatch(vcl, /"general"/, 'no segment the table does not have')
})

t.test('no segments at all: the origin\'s fallback, general, and no utm rules', async (t) => {
  const vcl = renderVarnishVcl([])
  t.same(allowlists(vcl), ['general', 'general'])
  t.same(utmBranches(vcl), [])
  t.notMatch(resolveSub(vcl), /utm_source=/, 'no utm block')
  t.match(resolveSub(vcl), /# No segment has utm_sources/)
  t.equal(defaultOf(vcl), 'general')
})

t.test('a utm source two segments claim goes where the origin sends it; the order of equal data does not matter', async (t) => {
  const rows: VclSegment[] = [
    { slug: 'alpha', utmSources: ['shared', 'a-only'], isDefault: false },
    { slug: 'beta', utmSources: ['shared'], isDefault: true },
  ]
  const origin = resolveSegment(buildSegmentDirectory(rows), { utmSource: 'shared' }).segment
  t.equal(origin, 'beta')
  t.same(utmBranches(renderVarnishVcl(rows)), [['a-only', 'alpha'], ['shared', 'beta']])
  t.equal(defaultOf(renderVarnishVcl(rows)), 'beta', 'the marked default wins over the first row')
  t.equal(renderVarnishVcl([...demo].reverse()), renderVarnishVcl(demo), 'rows in another order, same bytes')
})

t.test('values the VCL cannot hold are refused, never written into it', async (t) => {
  t.throws(() => renderVarnishVcl([{ slug: 'bad"slug', utmSources: [], isDefault: true }]), DomainError)
  t.throws(() => renderVarnishVcl([{ slug: 'ok', utmSources: ['evil")'], isDefault: true }]), /utm_source "evil\\"\)" is not one the VCL can hold/)
  t.throws(() => renderVarnishVcl([{ slug: 'ok', utmSources: ['x'.repeat(65)], isDefault: true }]), { code: 'CONFLICT' })
})

/** A sub's body, `sub name {` to its closing brace at the start of a line. */
const sub = (vcl: string, name: string): string => new RegExp(String.raw`^sub ${name} \{\n[\s\S]*?\n\}\n`, 'm').exec(vcl)?.[0] ?? ''

t.test('experiment buckets: the count is the random range and the cookie bound; nothing else depends on it', async (t) => {
  const committed = await readFile(VCL_PATH, 'utf8')
  t.equal(DEFAULT_EXPERIMENT_BUCKETS, 20, 'config.experimentBuckets defaults to 20 too')
  t.equal(renderVarnishVcl(demo, { experimentBuckets: 20 }), committed, 'the committed file is the default, 20 buckets')
  const four = renderVarnishVcl(demo, { experimentBuckets: 4 })
  const assign = sub(four, 'vo_assign_bucket')
  t.match(assign, 'set req.http.X-Bucket = std.integer(real=std.random(0, 4));', 'a random REAL in [0, 4), rounded down')
  t.match(assign, 'std.integer(req.http.x-vo-cookie-bucket, 4) < 4)', 'a cookie counts only below the count')
  t.match(four, /^# Experiment buckets: 4 \(EXPERIMENT_BUCKETS\)\.$/m)
  t.match(four, /a random one \(0\.\.3\)/)
  t.match(sub(committed, 'vo_assign_bucket'), 'std.random(0, 20)')
  const changed = committed.split('\n').filter((line, i) => line !== four.split('\n')[i])
  t.equal(changed.length, 6, 'only the lines that name the count differ')
  t.ok(changed.every((line) => /20|0\.\.19/.test(line)), changed.join('\n'))

  for (const bad of [1, 0, -4, 1001, 2.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => renderVarnishVcl(demo, { experimentBuckets: bad }), new RangeError(`experimentBuckets (EXPERIMENT_BUCKETS) must be an integer from 2 to 1000, not ${bad}`), `${bad} buckets`)
  }
  t.doesNotThrow(() => renderVarnishVcl(demo, { experimentBuckets: 2 }))
  t.match(sub(renderVarnishVcl(demo, { experimentBuckets: 1000 }), 'vo_assign_bucket'), 'std.random(0, 1000)')
})

t.test('experiment buckets: assigned on cacheable page requests only, kept across restarts, never chosen by the client', async (t) => {
  const vcl = await readFile(VCL_PATH, 'utf8')
  const recv = sub(vcl, 'vcl_recv')
  const at = (needle: string): number => {
    const index = recv.indexOf(needle)
    t.not(index, -1, `vcl_recv has ${needle}`)
    return index
  }
  t.ok(at('return (pass);\n    }\n    if (req.http.Authorization)') < at('call vo_assign_bucket;'), 'after events, the admin API and other passes')
  t.ok(at('if (req.http.Authorization) {\n        return (pass);') < at('call vo_assign_bucket;'))
  t.ok(at('call vo_assign_bucket;') < at('unset req.http.Cookie;'), 'before the cookies go')
  t.match(recv, /if \(req\.restarts == 0\) \{\n\s*call vo_assign_bucket;\n\s*\}/, 'a restart keeps the bucket of the first pass')
  t.match(recv, /if \(req\.restarts == 0\) \{\n(\s*#.*\n)*\s*unset req\.http\.x-vo-bucket-new;/, 'a client cannot send the marker')
  const assign = sub(vcl, 'vo_assign_bucket')
  t.match(assign, /^sub vo_assign_bucket \{\n    unset req\.http\.X-Bucket;/, 'a client-sent X-Bucket goes first')
  t.match(assign, `if (req.http.User-Agent !~ "\\S" || req.http.User-Agent ~ "(?i)${CRAWLER_USER_AGENT}") {\n`, 'crawlers and requests without a User-Agent get no bucket')
  t.ok(assign.indexOf('User-Agent') > assign.indexOf('vo_bucket'), 'after the cookie: a valid cookie counts for any User-Agent')
  t.equal(vcl.split(CRAWLER_USER_AGENT).length, 2, 'the crawler pattern appears once')
  t.match(sub(vcl, 'vcl_backend_fetch'), 'unset bereq.http.x-vo-bucket-new;', 'the marker stays at the edge; X-Bucket goes to the origin')
  t.notMatch(sub(vcl, 'vcl_backend_fetch'), /unset bereq\.http\.X-Bucket/i)
  const deliver = sub(vcl, 'vcl_deliver')
  t.match(deliver, 'if (req.http.x-vo-bucket-new && (resp.status == 200 || resp.status == 304)) {')
  t.match(deliver, 'header.append(resp.http.Set-Cookie, "vo_bucket=" + req.http.X-Bucket + "; Path=/; Max-Age=2592000; SameSite=Lax");')
  t.ok(deliver.indexOf('header.append(resp.http.Set-Cookie') > deliver.indexOf('set resp.http.Set-Cookie = "user_segment='), 'appended after the utm cookie, which would replace it')
  t.match(vcl, /^import header;$/m)
  t.notMatch(vcl, /(resp|beresp|obj)\.http\.Vary/i, 'Vary is the origin\'s, untouched')
  t.notMatch(sub(vcl, 'vcl_hash'), /Bucket/i, 'the bucket reaches the key through Vary only')
})

t.test('the crawler pattern: search engines, link previews and headless browsers, not browsers', async (t) => {
  const crawler = new RegExp(CRAWLER_USER_AGENT, 'i')
  for (const ua of [
    'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)',
    'Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)',
    'Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)',
    'facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)',
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36',
    'Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse',
    'Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)',
    'Baiduspider+(+http://www.baidu.com/search/spider.htm)',
    'Screaming Frog SEO Spider/19.0',
    'Slack-LinkExpanding 1.0 (+https://api.slack.com/robots) Slackbot',
    'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15 (Applebot/0.1)',
    'Google-PageRenderer Google (+https://developers.google.com/+/web/snippet/) preview',
  ]) t.match(ua, crawler, ua)
  for (const ua of [
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36',
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1',
    'Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0',
  ]) t.notMatch(ua, crawler, ua)
})
