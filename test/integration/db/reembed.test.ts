// Re-embedding with another model and size while pages are served and content is written: every
// answer comes from one version (the old one until the switch, the new one after), nothing is lost.

import t from 'tap'
import { buildTestApp } from '../../helper.ts'
import { startFakeOpenAI } from '../../support/fake-openai.ts'
import { LocalEmbedder } from '../../../src/embeddings/embedder.ts'
import { localEmbedding } from '../../../src/embeddings/local-embedder.ts'
import { OpenAIEmbedder } from '../../../src/embeddings/openai-embedder.ts'
import { reembed } from '../../../src/embeddings/reembed.ts'
import { ingestVariants } from '../../../src/ingest/ingest-service.ts'
import { pageEmbeddingText } from '../../../src/embeddings/embedding-text.ts'

const fake = await startFakeOpenAI()
t.teardown(() => fake.close())
const newEmbedder = () => new OpenAIEmbedder({ apiKey: 'sk-test', baseURL: fake.baseURL, model: 'text-embedding-3-small', dimensions: 512, timeoutMs: 5000, maxRetries: 1 })
const SEGMENTS = ['general', 'enterprise', 'smb', 'developer']

t.test('switch under load: answers never mix versions; concurrent writes are carried over', async (t) => {
  // The version switch is one big transaction: a loaded CI machine must not time it out. Nor may a render
  // there overrun the budget: the default segment's rendering would stand in for the variant under test.
  const app = await buildTestApp(t, { REDIS_URL: 'off', DB_STATEMENT_TIMEOUT_MS: '60000', RENDER_BUDGET_MS: '60000' })
  const { db } = app.database
  const landing = await db.selectFrom('pages').select(['id', 'path', 'vertical', 'intent_text', 'title', 'meta_description']).where('kind', '=', 'landing').execute()

  /** The exact nearest variant id per (path, segment) in the page's scope (its own, else its vertical's), in the embedding space of `dimensions`. */
  async function expected(dimensions: number): Promise<Map<string, number>> {
    const variants = await db.selectFrom('content_variants').select(['id', 'segment', 'page_id', 'vertical', 'embedding_text']).where('vector_version', '=', (eb) => eb.selectFrom('embedding_versions').select('id').where('active', '=', true)).execute()
    const answers = new Map<string, number>()
    for (const page of landing) {
      const query = localEmbedding(pageEmbeddingText(page), dimensions)
      for (const segment of SEGMENTS) {
        let best: { id: number; score: number } | undefined
        const own = variants.filter((x) => x.segment === segment && Number(x.page_id) === Number(page.id))
        for (const v of own.length > 0 ? own : variants.filter((x) => x.segment === segment && x.vertical === page.vertical)) {
          const vector = localEmbedding(v.embedding_text, dimensions)
          const score = vector.reduce((s, x, i) => s + x * query[i]!, 0)
          if (best === undefined || score > best.score) best = { id: Number(v.id), score }
        }
        answers.set(`${page.path}|${segment}`, best!.id)
      }
    }
    return answers
  }
  async function served(): Promise<Map<string, number>> {
    app.pageCache.clearLocal()
    const answers = new Map<string, number>()
    for (const page of landing) {
      for (const segment of SEGMENTS) {
        const res = await app.inject({ url: page.path, headers: { 'x-segment': segment } })
        answers.set(`${page.path}|${segment}`, Number(/data-variant="(\d+)"/.exec(res.body)?.[1]))
      }
    }
    return answers
  }

  const extra = { key: 'late-enterprise-payroll', segment: 'enterprise', headline: 'Payroll software for the enterprise: pay your team on time and stay compliant, globally', cta_url: '/payroll', page: '/payroll' }
  let checks = 0
  let wrote = false
  const progress = await reembed(db, newEmbedder(), {
    batchSize: 50,
    onBatch: async () => {
      // Mid-run, content changes in the serving version; answers must still be the old version's.
      if (!wrote) {
        wrote = true
        await ingestVariants(db, new LocalEmbedder(), [extra], { purgeTargets: [] })
      }
      const want = await expected(1536)
      const got = await served()
      t.same(got, want, `batch ${++checks}: every answer is the serving version's exact nearest`)
    },
  })
  t.ok(checks >= 5, `${checks} checks while building`)
  t.ok(progress.switched)
  t.ok(progress.variantsEmbedded >= 13, 'the variant written mid-run was embedded too')
  t.ok(progress.pagesEmbedded >= 543)

  const versions = await db.selectFrom('embedding_versions').selectAll().orderBy('id').execute()
  t.match(versions, [{ active: false }, { model: 'text-embedding-3-small', dimensions: 512, active: true }])
  const newId = versions[1]!.id
  t.same(await db.selectFrom('pages').select('path').where((eb) => eb.or([eb('embedding_version', 'is', null), eb('embedding_version', '<>', newId)])).execute(), [], 'every page vector is of the new version')
  t.same(await db.selectFrom('content_variants').select('id').where('vector_version', '<>', newId).execute(), [], 'old variant rows are gone')
  t.same(await db.selectFrom('page_embedding_staging').select('page_id').execute(), [], 'staging emptied')
  t.ok(await db.selectFrom('content_variants').select('id').where('variant_key', '=', extra.key).executeTakeFirst(), 'the mid-run write survived the switch')
  t.same(await served(), await expected(512), 'after the switch every answer is the new version’s exact nearest')

  const again = await reembed(db, newEmbedder())
  t.match(again, { switched: false, variantsEmbedded: 0, pagesEmbedded: 0 }, 'a second run has nothing to do')
  await t.rejects(ingestVariants(db, new LocalEmbedder(), [extra], { purgeTargets: [] }), /active embedding version is text-embedding-3-small \(512 dimensions\)/)
})

t.test('an interrupted build resumes without redoing finished work', async (t) => {
  const app = await buildTestApp(t, { REDIS_URL: 'off' })
  const { db } = app.database
  const built = await reembed(db, newEmbedder(), { batchSize: 100, buildOnly: true })
  t.notOk(built.switched)
  t.equal((await db.selectFrom('embedding_versions').select('model').where('active', '=', true).executeTakeFirstOrThrow()).model, 'local-hashed-ngrams-v1', 'still serving the old version')
  const requestsBefore = fake.requests.length
  const resumed = await reembed(db, newEmbedder(), { batchSize: 100 })
  t.match(resumed, { switched: true, variantsEmbedded: 0, pagesEmbedded: 0 })
  t.equal(fake.requests.length, requestsBefore, 'no provider calls for finished work')
})
