// The nearest variant within a segment is the true nearest: 5,000 variants over 8 segments from
// real-looking copy, compared with an exact scan, both as the planner chooses and with the filtered
// HNSW index forced (iterative scan), where "nearest overall, then filtered" would fail.

import t, { type Test } from 'tap'
import { sql } from 'kysely'
import { migrateToLatest, openDatabase } from '../../../src/db/database.ts'
import { LocalEmbedder } from '../../../src/embeddings/embedder.ts'
import { localEmbedding } from '../../../src/embeddings/local-embedder.ts'
import { ingestPages, ingestSegments, ingestVariants } from '../../../src/ingest/ingest-service.ts'
import { pageEmbeddingText } from '../../../src/embeddings/embedding-text.ts'
import { findNearestVariant } from '../../../src/pages/page-repository.ts'
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

const variants = Array.from({ length: 5000 }, (_, i) => {
  const segment = SEGMENTS[i % SEGMENTS.length]!
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
  }
})

t.test('load: 8 segments, 5,000 variants, 60 landing pages, through the ingest path', async (t) => {
  await ingestSegments(db, SEGMENTS.map((slug, i) => ({ slug, is_default: i === 0 })))
  const result = await ingestVariants(db, embedder, variants)
  t.match(result, { received: 5000, inserted: 5000, embedded: 5000 })
  const pages = Array.from({ length: 60 }, (_, i) => ({
    path: `/lp/${i}`,
    kind: 'landing',
    title: `Landing ${i}`,
    intent_text: `${pick(PRODUCTS, `qp${i}`)} to ${pick(BENEFITS, `qb${i}`)} for ${pick(AUDIENCES[pick(SEGMENTS, `qs${i}`)]!, `qa${i}`)}`,
  }))
  t.match(await ingestPages(db, embedder, pages, 'https://www.example.test'), { inserted: 60 })
})

const cosineDistance = (a: number[], b: number[]): number => 1 - a.reduce((s, v, i) => s + v * (b[i] ?? 0), 0)

async function recall(t: Test, label: string): Promise<void> {
  const pages = await db.selectFrom('pages').select(['id', 'intent_text', 'title', 'meta_description']).execute()
  const ids = new Map((await db.selectFrom('content_variants').select(['id', 'variant_key']).execute()).map((r) => [r.variant_key, Number(r.id)]))
  const vectors = variants.map((v) => ({ id: ids.get(v.key)!, segment: v.segment, vector: localEmbedding([v.headline, v.subhead, ...v.features].join('. '), 1536) }))
  let hits = 0
  let total = 0
  let empty = 0
  for (const page of pages) {
    const query = localEmbedding(pageEmbeddingText({ intent_text: page.intent_text, title: page.title, meta_description: page.meta_description }), 1536)
    for (const segment of SEGMENTS) {
      const exact = vectors.filter((v) => v.segment === segment).map((v) => ({ id: v.id, d: cosineDistance(query, v.vector) })).sort((a, b) => a.d - b.d)
      const found = await findNearestVariant(db, Number(page.id), segment)
      total++
      if (found === undefined) {
        empty++
        continue
      }
      t.equal(found.segment, segment) || t.fail('never another segment')
      // float4 storage can swap near-ties: a hit is the exact nearest or one at the same distance.
      const foundDistance = exact.find((e) => e.id === found.id)!.d
      if (found.id === exact[0]!.id || foundDistance - exact[0]!.d < 1e-6) hits++
    }
  }
  const rate = hits / total
  t.equal(empty, 0, `${label}: never empty when the segment has variants`)
  t.ok(rate >= 0.98, `${label}: recall@1 ${rate.toFixed(4)} over ${total} page x segment queries`)
}

t.test('recall@1 as the planner chooses', async (t) => {
  await recall(t, 'default plan')
})

t.test('recall@1 with the filtered HNSW index forced (iterative scan)', async (t) => {
  // One pooled connection is forced onto the index path; the embedded server shares one session anyway.
  await sql`SET enable_sort = off`.execute(db)
  await sql`SET enable_seqscan = off`.execute(db)
  const page = await db.selectFrom('pages').select('id').executeTakeFirstOrThrow()
  const plan = await sql<{ 'QUERY PLAN': string }>`EXPLAIN SELECT id FROM content_variants v WHERE v.segment = 'smb' AND v.vector_version = (SELECT id FROM embedding_versions WHERE active)
    ORDER BY v.embedding <=> (SELECT intent_embedding FROM pages WHERE id = ${Number(page.id)}) LIMIT 1`.execute(db)
  t.match(plan.rows.map((r) => r['QUERY PLAN']).join('\n'), /content_variants_embedding_hnsw/, 'the HNSW index is used')
  try {
    await recall(t, 'HNSW + iterative scan')
  } finally {
    await sql`RESET enable_sort`.execute(db)
    await sql`RESET enable_seqscan`.execute(db)
  }
})
