// The embedding provider used by ingest: OpenAI-compatible with OPENAI_API_KEY, else the local one.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { Embedder } from '../src/embeddings/embedder.ts'
import { createEmbedder } from '../src/embeddings/create-embedder.ts'

declare module 'fastify' {
  interface FastifyInstance {
    embedder: Embedder
  }
}

export default fp(
  async (app: FastifyInstance) => {
    const embedder = createEmbedder(app.config)
    app.decorate('embedder', embedder)
    app.log.info(
      { provider: embedder.provider, model: embedder.model, dimensions: embedder.dimensions },
      embedder.provider === 'local' ? 'embeddings: local hashed n-grams (lexical, not semantic); set OPENAI_API_KEY for real embeddings' : 'embeddings: OpenAI-compatible API',
    )
  },
  { name: 'embedder', dependencies: ['config'] },
)
