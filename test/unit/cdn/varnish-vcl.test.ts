// The VCL generated from the segments table: the committed deploy/varnish/default.vcl is its output for
// the demo data, byte for byte, and the segment-dependent parts follow the origin's own rules
// (buildSegmentDirectory): the default, the fallback without one, and utm sources two segments claim.

import t from 'tap'
import { readFile } from 'node:fs/promises'
import { renderVarnishVcl, VARNISH_VCL_COMMAND, type VclSegment } from '../../../src/cdn/varnish-vcl.ts'
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
