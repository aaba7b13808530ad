// The production OpenAI client code against a local server that speaks the embeddings API.

import t from 'tap'
import { embedAll, planBatches, padForStorage, MAX_INPUTS_PER_REQUEST } from '../../../src/embeddings/embedder.ts'
import { OpenAIEmbedder, type OpenAIEmbedderOptions } from '../../../src/embeddings/openai-embedder.ts'
import { DomainError } from '../../../src/errors.ts'
import { startFakeOpenAI } from '../../support/fake-openai.ts'

const fake = await startFakeOpenAI()
t.teardown(() => fake.close())

const embedder = (options: Partial<OpenAIEmbedderOptions> = {}) =>
  new OpenAIEmbedder({ apiKey: 'sk-test-key', baseURL: fake.baseURL, model: 'text-embedding-3-small', dimensions: 1536, timeoutMs: 2000, maxRetries: 2, ...options })

const norm = (v: number[]) => Math.sqrt(v.reduce((s, x) => s + x * x, 0))

t.beforeEach(() => {
  fake.requests.length = 0
  fake.script = []
})

t.test('success: one request, normalized vectors in input order, the documented request body', async (t) => {
  const vectors = await embedder().embed(['payroll for dentists', 'crm for law firms'])
  t.equal(vectors.length, 2)
  t.equal(vectors[0]!.length, 1536)
  t.ok(Math.abs(norm(vectors[0]!) - 1) < 1e-9)
  t.equal(fake.requests.length, 1)
  const [request] = fake.requests
  t.equal(request!.authorization, 'Bearer sk-test-key')
  t.same(request!.body, { model: 'text-embedding-3-small', input: ['payroll for dentists', 'crm for law firms'], dimensions: 1536, encoding_format: 'float' })
})

t.test('429 then success: retried after Retry-After', async (t) => {
  fake.script = ['429']
  const vectors = await embedder().embed(['x'])
  t.equal(vectors.length, 1)
  t.equal(fake.requests.length, 2)
  const waited = fake.requests[1]!.at - fake.requests[0]!.at
  t.ok(waited >= 900, `waited ${waited} ms for Retry-After: 1`)
})

t.test('repeated 500s: bounded retries, then a clear error', async (t) => {
  fake.script = ['500', '500', '500', '500']
  const error = await embedder({ maxRetries: 2 }).embed(['x']).catch((err: unknown) => err)
  t.ok(error instanceof DomainError)
  t.equal((error as DomainError).code, 'UNAVAILABLE')
  t.match((error as Error).message, /the embedding provider failed: 500/)
  t.equal(fake.requests.length, 3, '1 call + 2 retries')
})

t.test('a hang past the timeout fails instead of waiting forever', async (t) => {
  fake.script = ['hang']
  const started = Date.now()
  const error = await embedder({ timeoutMs: 300, maxRetries: 0 }).embed(['x']).catch((err: unknown) => err)
  t.ok(Date.now() - started < 3000, 'gave up near the timeout')
  t.equal((error as DomainError).code, 'UNAVAILABLE')
  t.match((error as Error).message, /timed out/i)
})

t.test('wrong dimension: a clear error naming both sizes', async (t) => {
  fake.script = ['wrong-dimensions']
  const error = await embedAll(embedder(), ['x']).catch((err: unknown) => err)
  t.equal((error as DomainError).code, 'UNPROCESSABLE')
  t.match((error as Error).message, /returned 768-dimensional vectors but EMBEDDING_DIMENSIONS is 1536/)
})

t.test('the breaker fails fast while the provider keeps failing', async (t) => {
  const flaky = embedder({ maxRetries: 0, breakerResetMs: 60_000 })
  fake.script = ['500', '500', '500', '500', '500', '500']
  for (let i = 0; i < 3; i++) await flaky.embed(['x']).catch(() => undefined)
  t.ok(flaky.circuitOpen, 'open after repeated failures')
  const before = fake.requests.length
  const error = await flaky.embed(['x']).catch((err: unknown) => err)
  t.equal(fake.requests.length, before, 'no request while open')
  t.match((error as Error).message, /keeps failing/)
})

t.test('a 4xx other than 429 is the caller’s problem, not an outage', async (t) => {
  const error = await new OpenAIEmbedder({ apiKey: 'k', baseURL: fake.baseURL.replace('/v1', '/nope'), model: 'm', dimensions: 1536, timeoutMs: 2000, maxRetries: 0 }).embed(['x']).catch((err: unknown) => err)
  t.equal((error as DomainError).code, 'UNPROCESSABLE')
  t.same(await embedder().embed([]), [], 'nothing to embed, no request')
})

t.test('batches stay within 2,048 inputs and 300,000 tokens', async (t) => {
  t.same(planBatches(Array.from({ length: 5000 }, () => 'a b c')).map((b) => b.end - b.start), [2048, 2048, 904])
  const long = 'x'.repeat(24_000) // ~8,000 tokens each by the pessimistic estimate
  const sizes = planBatches(Array.from({ length: 100 }, () => long)).map((b) => b.end - b.start)
  t.ok(sizes.every((n) => n * 8000 <= 300_000), `token-bound batches: ${sizes.join(', ')}`)
  t.equal(sizes.reduce((a, b) => a + b, 0), 100)
  t.same(planBatches([]), [])

  const vectors = await embedAll(embedder(), Array.from({ length: MAX_INPUTS_PER_REQUEST + 52 }, (_, i) => `text ${i}`))
  t.equal(vectors.length, 2100)
  t.same(fake.requests.map((r) => r.body.input.length), [2048, 52])
})

t.test('shorter vectors are zero-padded for storage without changing cosine', async (t) => {
  const padded = padForStorage([0.6, 0.8])
  t.equal(padded.length, 1536)
  t.same(padded.slice(0, 2), [0.6, 0.8])
  t.throws(() => padForStorage(new Array(2000).fill(0)), /do not fit/)
})
