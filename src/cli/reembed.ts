// `npm run reembed -- --model M --dimensions D [--batch 500] [--build-only]`
// Builds a new embedding version for every page and variant in resumable batches, then makes it the
// active version in one transaction. Interrupted, it resumes on the next run. Model
// local-hashed-ngrams-v1 uses the local embedder; any other model the OpenAI-compatible API
// (OPENAI_API_KEY, OPENAI_BASE_URL). Afterwards set EMBEDDING_MODEL / EMBEDDING_DIMENSIONS on the
// origins to the same, so that ingest embeds with the active model.

import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { loadConfig } from '../config.ts'
import { type Embedder, LocalEmbedder, STORED_DIMENSIONS } from '../embeddings/embedder.ts'
import { LOCAL_EMBEDDING_MODEL } from '../embeddings/local-embedder.ts'
import { OpenAIEmbedder } from '../embeddings/openai-embedder.ts'
import { reembed } from '../embeddings/reembed.ts'
import { runCli, withDatabase } from './run-cli.ts'

const log = pino({ level: process.env.LOG_LEVEL ?? 'info' })

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { model: { type: 'string' }, dimensions: { type: 'string' }, batch: { type: 'string', default: '500' }, 'build-only': { type: 'boolean', default: false } },
  })
  const dimensions = Number(values.dimensions)
  const batchSize = Number(values.batch)
  if (values.model === undefined || !Number.isInteger(dimensions) || dimensions < 1 || dimensions > STORED_DIMENSIONS || !Number.isInteger(batchSize) || batchSize < 1) {
    process.stderr.write(`usage: npm run reembed -- --model MODEL --dimensions 1..${STORED_DIMENSIONS} [--batch N] [--build-only]\n`)
    return 2
  }
  const config = loadConfig()
  let embedder: Embedder
  if (values.model === LOCAL_EMBEDDING_MODEL) embedder = new LocalEmbedder(dimensions)
  else if (config.openaiApiKey === undefined) {
    process.stderr.write(`variant-origin reembed: model ${values.model} needs OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server); the local model is ${LOCAL_EMBEDDING_MODEL}\n`)
    return 2
  } else {
    embedder = new OpenAIEmbedder({ apiKey: config.openaiApiKey, baseURL: config.openaiBaseUrl, model: values.model, dimensions, timeoutMs: config.embeddingTimeoutMs, maxRetries: config.embeddingMaxRetries })
  }
  const progress = await withDatabase(config, log, (db) => reembed(db, embedder, { batchSize, log, buildOnly: values['build-only'] }))
  process.stdout.write(`${JSON.stringify(progress)}\n`)
  return 0
}

runCli('reembed', main)
