import t from 'tap'
import { l2Normalize, localEmbedding, tokenize } from '../../../src/embeddings/local-embedder.ts'
import { toPgVector } from '../../../src/db/pg-vector.ts'

const cosine = (a: number[], b: number[]): number => a.reduce((sum, v, i) => sum + v * (b[i] ?? 0), 0)

t.test('deterministic, normalized, lexical', async (t) => {
  const a = localEmbedding('payroll software for dentists', 1536)
  t.equal(a.length, 1536)
  t.same(localEmbedding('payroll software for dentists', 1536), a, 'same text, same vector')
  t.ok(Math.abs(cosine(a, a) - 1) < 1e-9, 'unit length')
  const near = localEmbedding('payroll software for clinics', 1536)
  const far = localEmbedding('help desk tickets answered faster', 1536)
  t.ok(cosine(a, near) > cosine(a, far), 'shared words are nearer')
  t.ok(Math.abs(cosine(localEmbedding('', 8), localEmbedding('', 8)) - 1) < 1e-9, 'empty text still has a direction')
})

t.test('helpers', async (t) => {
  t.same(tokenize('Crème brûlée, 2 ways!'), ['creme', 'brulee', '2', 'ways'])
  t.same(l2Normalize([3, 4]), [0.6, 0.8])
  t.same(l2Normalize([0, 0]), [0, 0])
  t.equal(toPgVector([0, 0.5, -0.25]), '[0,0.5000000,-0.2500000]')
})
