// The variant a page shows is the true nearest within its scope: 5,000 variants over 8 segments from
// real-looking copy, each belonging to one of 60 landing pages or to one of 6 verticals, compared with
// an exact scan of that scope. Never another page's variant, never another segment's; a page's own
// variants before its vertical's; a page with nothing in scope is the same for every segment. The page
// and its variant also come in one statement, whose scope check runs by index, and only when needed.

import t, { type Test } from 'tap'
import { type CompiledQuery, Kysely, PostgresDialect, sql } from 'kysely'
import { migrateToLatest, openDatabase } from '../../../src/db/database.ts'
import type { Database } from '../../../src/db/schema.ts'
import { LocalEmbedder } from '../../../src/embeddings/embedder.ts'
import { localEmbedding } from '../../../src/embeddings/local-embedder.ts'
import { ingestPages, ingestSegments, ingestVariants } from '../../../src/ingest/ingest-service.ts'
import { pageEmbeddingText } from '../../../src/embeddings/embedding-text.ts'
import { findPageVariant, findPublishedPage, findPublishedPageWithVariant } from '../../../src/pages/page-repository.ts'
import { fnv1a32 } from '../../../src/hash.ts'

const handle = await openDatabase({ databaseUrl: process.env.TEST_DATABASE_URL, dataDir: 'memory://', dbPoolMax: 1, dbConnectTimeoutMs: 10_000, dbStatementTimeoutMs: 120_000 }, { error: () => {} })
t.teardown(() => handle.close())
const { db } = handle
await migrateToLatest(db)
const embedder = new LocalEmbedder()

const SEGMENTS = ['enterprise', 'smb', 'developer', 'agency', 'nonprofit', 'education', 'healthcare', 'retail']
const PRODUCTS = ['CRM', 'payroll', 'help desk', 'invoicing', 'scheduling', 'inventory', 'email marketing', 'analytics', 'expense tracking', 'recruiting']
const BENEFITS = ['close more deals', 'pay your team on time', 'answer tickets faster', 'get paid sooner', 'fill every appointment slot', 'never run out of stock', 'grow your list', 'see what drives revenue', 'stop chasing receipts', 'hire the right people']
const TONES = ['built for', 'trusted by', 'loved by', 'designed around', 'made simple for']
const AUDIENCES: Record<string, string[]> = {
  enterprise: ['global teams', 'procurement', 'security reviews', 'SSO and audit logs'],
  smb: ['small businesses', 'owners', 'a flat monthly price', 'set-up in minutes'],
  developer: ['developers', 'an open API', 'webhooks', 'typed SDKs'],
  agency: ['agencies', 'client workspaces', 'white-label reports', 'many brands'],
  nonprofit: ['nonprofits', 'donors', 'volunteers', 'grant reporting'],
  education: ['schools', 'teachers', 'students', 'term planning'],
  healthcare: ['clinics', 'patients', 'HIPAA compliance', 'care teams'],
  retail: ['shops', 'point of sale', 'seasonal staff', 'foot traffic'],
}
const pick = <T>(items: readonly T[], seed: string): T => items[fnv1a32(seed) % items.length]!

const VERTICALS = ['v0', 'v1', 'v2', 'v3', 'v4', 'v5']
const PAGES = 60
/** Pages 54-59 get no variants of their own: they show their vertical's, except page 59 (v5, a vertical with none): nothing. */
const OWN_VARIANT_PAGES = 54
const verticalOf = (page: number): string => VERTICALS[page % VERTICALS.length]!
const NONE = { options: { purgeTargets: [] } }

const variants = Array.from({ length: 5000 }, (_, i) => {
  const segment = SEGMENTS[i % SEGMENTS.length]!
  // Four in five belong to a page, the rest to a vertical (v5 has none: its pages show their own content).
  const scope = i % 5 === 0 ? { vertical: VERTICALS[(i / 5) % 5]! } : { page: `/lp/${fnv1a32(`page${i}`) % OWN_VARIANT_PAGES}` }
  const product = pick(PRODUCTS, `p${i}`)
  const benefit = pick(BENEFITS, `b${i}`)
  const audience = pick(AUDIENCES[segment]!, `a${i}`)
  const extra = pick(AUDIENCES[segment]!, `e${i}`)
  return {
    key: `v-${i}`,
    segment,
    headline: `${product} ${pick(TONES, `t${i}`)} ${audience}`,
    subhead: `${benefit[0]!.toUpperCase()}${benefit.slice(1)} with ${product} for ${extra}.`,
    features: [`${product} reports`, `${pick(BENEFITS, `f${i}`)}`],
    cta_label: 'Start',
    cta_url: '/start',
    ...scope,
  }
})

t.test('load: 8 segments, 60 landing pages in 6 verticals, 5,000 variants, through the ingest path', async (t) => {
  await ingestSegments(db, SEGMENTS.map((slug, i) => ({ slug, is_default: i === 0 })), NONE.options)
  const pages = Array.from({ length: PAGES }, (_, i) => ({
    path: `/lp/${i}`,
    kind: 'landing',
    title: `Landing ${i}`,
    vertical: verticalOf(i),
    intent_text: `${pick(PRODUCTS, `qp${i}`)} to ${pick(BENEFITS, `qb${i}`)} for ${pick(AUDIENCES[pick(SEGMENTS, `qs${i}`)]!, `qa${i}`)}`,
  }))
  t.match(await ingestPages(db, embedder, pages, 'https://www.example.test', NONE.options), { inserted: PAGES })
  const result = await ingestVariants(db, embedder, variants, NONE.options)
  t.match(result, { received: 5000, inserted: 5000, embedded: 5000 })
  t.equal(result.affectedPaths.length, PAGES - 1, 'every page with a variant in scope (the v5 page without own variants has none)')
})

const cosineDistance = (a: number[], b: number[]): number => 1 - a.reduce((s, v, i) => s + v * (b[i] ?? 0), 0)

async function recall(t: Test, label: string): Promise<void> {
  const pages = await db.selectFrom('pages').select(['id', 'path', 'vertical', 'intent_text', 'title', 'meta_description']).orderBy('id').execute()
  const rows = await db.selectFrom('content_variants').select(['id', 'variant_key', 'page_id', 'vertical']).execute()
  const byKey = new Map(rows.map((r) => [r.variant_key, r]))
  const vectors = variants.map((v) => {
    const row = byKey.get(v.key)!
    return { id: Number(row.id), segment: v.segment, pageId: row.page_id === null ? null : Number(row.page_id), vertical: row.vertical, vector: localEmbedding([v.headline, v.subhead, ...v.features].join('. '), 1536) }
  })
  let hits = 0
  let total = 0
  const wrong: string[] = []
  let ownFirst = 0
  let fromVertical = 0
  let nothingInScope = 0
  for (const page of pages) {
    const query = localEmbedding(pageEmbeddingText({ intent_text: page.intent_text, title: page.title, meta_description: page.meta_description }), 1536)
    const pageId = Number(page.id)
    const inScope = vectors.filter((v) => v.pageId === pageId || v.vertical === page.vertical)
    for (const segment of SEGMENTS) {
      const own = inScope.filter((v) => v.segment === segment && v.pageId === pageId)
      const candidates = own.length > 0 ? own : inScope.filter((v) => v.segment === segment)
      const exact = candidates.map((v) => ({ id: v.id, d: cosineDistance(query, v.vector) })).sort((a, b) => a.d - b.d)
      const { variant: found, perSegment } = await findPageVariant(db, { id: pageId, vertical: page.vertical }, segment)
      // The one-statement lookup (page row and variant) answers the same as the two.
      const together = await findPublishedPageWithVariant(db, page.path, segment)
      if (together === undefined || together.page.id !== pageId || together.variant?.id !== found?.id || together.perSegment !== perSegment) {
        wrong.push(`${page.path} ${segment}: in one statement variant ${together?.variant?.id} (perSegment ${together?.perSegment}), in two ${found?.id} (${perSegment})`)
      }
      total++
      if (perSegment !== inScope.length > 0) wrong.push(`${page.path}: perSegment ${perSegment} with ${inScope.length} variants in scope`)
      if (exact.length === 0) {
        if (found !== undefined) wrong.push(`${page.path} ${segment}: nothing in scope, yet variant ${found.id} shown`)
        else if (inScope.length === 0) nothingInScope++
        hits++
        continue
      }
      if (found === undefined) {
        wrong.push(`${page.path} ${segment}: a variant is in scope but none was found`)
        continue
      }
      if (found.segment !== segment) wrong.push(`${page.path} ${segment}: variant ${found.id} of segment ${found.segment}`)
      if (candidates.find((c) => c.id === found.id) === undefined) {
        wrong.push(`${page.path} ${segment}: variant ${found.id} is not in this page's scope (or an own variant was passed over)`)
        continue
      }
      if (own.length > 0) ownFirst++
      else fromVertical++
      // float4 storage can swap near-ties: a hit is the exact nearest or one at the same distance.
      const foundDistance = exact.find((e) => e.id === found.id)!.d
      if (found.id === exact[0]!.id || foundDistance - exact[0]!.d < 1e-6) hits++
    }
  }
  t.same(wrong, [], `${label}: never another page's, segment's or scope's variant`)
  t.equal(hits, total, `${label}: recall@1 ${(hits / total).toFixed(4)} over ${total} page x segment queries (exact within the scope)`)
  t.ok(ownFirst > 0 && fromVertical > 0, `own variants (${ownFirst}) and vertical fallbacks (${fromVertical}) both exercised`)
  t.equal(nothingInScope, SEGMENTS.length, 'the one page with nothing in scope is the same for every segment')
}

t.test('recall@1 as the planner chooses', async (t) => {
  await recall(t, 'default plan')
})

t.test('the lookup reads the scope by index, with no vector index to approximate it', async (t) => {
  await sql`ANALYZE content_variants`.execute(db)
  await sql`SET enable_seqscan = off`.execute(db)
  try {
    const page = await db.selectFrom('pages').select(['id', 'vertical']).executeTakeFirstOrThrow()
    const plan = await sql<{ 'QUERY PLAN': string }>`EXPLAIN SELECT id FROM content_variants v
      WHERE (v.page_id = ${Number(page.id)} OR v.vertical = ${page.vertical}) AND v.segment = 'smb' AND v.vector_version = 1`.execute(db)
    const text = plan.rows.map((r) => r['QUERY PLAN']).join('\n')
    t.match(text, /content_variants_page_scope/, 'the page scope index')
    t.match(text, /content_variants_vertical_scope/, 'the vertical scope index')
    const hnsw = await sql<{ indexname: string }>`select indexname from pg_indexes where tablename = 'content_variants' and indexdef ilike '%hnsw%'`.execute(db)
    t.same(hnsw.rows, [], 'no approximate index on variants')
    await recall(t, 'index scans only')
  } finally {
    await sql`RESET enable_seqscan`.execute(db)
  }
})

t.test('the miss reads the page and its variant in one statement, the scope check by index and only when needed', async (t) => {
  await sql`ANALYZE`.execute(db)
  // The statements the repository sends, from a second kysely over the same pool (never destroyed: the pool is the handle's).
  const sent: CompiledQuery[] = []
  const logged = new Kysely<Database>({ dialect: new PostgresDialect({ pool: handle.pool }), log: (event) => void sent.push(event.query) })
  const plan = async (query: CompiledQuery): Promise<string[]> => {
    const result = await handle.pool.query(`EXPLAIN (ANALYZE, COSTS OFF) ${query.sql}`, [...query.parameters])
    return result.rows.map((r: Record<string, string>) => r['QUERY PLAN']!)
  }
  // Scans of content_variants other than the lateral's (alias v): the scope probes.
  const probes = (lines: string[]) => lines.filter((l) => / on content_variants( content_variants_\d+)? \(/.test(l))

  const withOwn = await db.selectFrom('content_variants as v').innerJoin('pages as p', 'p.id', 'v.page_id').select(['p.path', 'v.segment']).orderBy('v.id').executeTakeFirstOrThrow()
  sent.length = 0
  const found = await findPublishedPageWithVariant(logged, withOwn.path, withOwn.segment)
  t.equal(sent.length, 1, 'one statement for the page and its variant')
  t.ok(found?.variant !== undefined && found.perSegment, 'a variant of its own')
  const foundPlan = await plan(sent[0]!)
  t.equal(probes(foundPlan).length, 2, 'two scope probes in the plan')
  t.ok(probes(foundPlan).every((l) => l.includes('never executed')), 'a variant found: the scope check never runs', { plan: foundPlan })
  t.notMatch(foundPlan.join('\n'), /Seq Scan on content_variants/, 'no sequential scan of the variants')

  // The page with nothing in scope (v5, no variants of its own): both probes run, by index.
  const empty = await findPublishedPage(db, `/lp/${PAGES - 1}`)
  sent.length = 0
  t.same(await findPageVariant(logged, empty!, 'smb'), { variant: undefined, perSegment: false }, 'nothing in scope')
  const emptyPlan = await plan(sent[0]!)
  t.ok(probes(emptyPlan).every((l) => !l.includes('never executed')), 'nothing found: both probes run')
  t.notMatch(emptyPlan.join('\n'), /Seq Scan on content_variants/, 'by index, not by scanning the table')

  // A segment with no variant, on a page with none of its own whose vertical has 200 (the vertical given
  // as a constant, which the planner has statistics for): both probes, by index, never a table scan.
  const dense = await db.selectFrom('pages').select(['id', 'path', 'vertical']).where('vertical', '=', 'v0').orderBy('id', 'desc').executeTakeFirstOrThrow()
  sent.length = 0
  t.same(await findPageVariant(logged, { id: Number(dense.id), vertical: dense.vertical }, 'no-such-segment'), { variant: undefined, perSegment: true }, 'no variant for the segment, yet per segment')
  const densePlan = await plan(sent[0]!)
  t.notMatch(densePlan.join('\n'), /Seq Scan on content_variants/, 'a vertical given as a constant: by index too')

  // Any other page: no variant and one entry for every segment; a draft or an unknown path: nothing.
  await ingestPages(db, embedder, [
    { path: '/seo/v0/page', kind: 'seo', title: 'An SEO page', vertical: 'v0', intent_text: 'CRM reports for global teams' },
    { path: '/lp/draft', kind: 'landing', title: 'A draft', vertical: 'v0', status: 'draft' },
  ], 'https://www.example.test', NONE.options)
  try {
    const seo = await findPublishedPageWithVariant(db, '/seo/v0/page', 'enterprise')
    t.match(seo, { page: { path: '/seo/v0/page', kind: 'seo', vertical: 'v0' }, variant: undefined, perSegment: false }, 'an SEO page: the page alone')
    t.same(seo?.page, await findPublishedPage(db, '/seo/v0/page'), 'the same page row as findPublishedPage')
    t.equal(await findPublishedPageWithVariant(db, '/lp/draft', 'enterprise'), undefined, 'a draft is not published')
    t.equal(await findPublishedPageWithVariant(db, '/lp/none', 'enterprise'), undefined, 'an unknown path')
  } finally {
    await db.deleteFrom('pages').where('path', 'in', ['/seo/v0/page', '/lp/draft']).execute()
  }
})
