// The embedding provider used by ingest: OpenAI-compatible with OPENAI_API_KEY, else the local one.

import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { Embedder } from '../src/embeddings/embedder.ts'
import { createEmbedder } from '../src/embeddings/create-embedder.ts'
import { CIRCUIT_GAUGE, CIRCUIT_GAUGE_VALUE, type CircuitState } from '../src/circuit-state.ts'

declare module 'fastify' {
  interface FastifyInstance {
    embedder: Embedder
  }
}

export default fp(
  async (app: FastifyInstance) => {
    const embedder = createEmbedder(app.config)
    app.decorate('embedder', embedder)
    // The OpenAI-compatible provider has a circuit breaker; the local one cannot fail that way.
    const breaker = embedder as { circuitState?: CircuitState }
    if (breaker.circuitState !== undefined) app.metrics.registerCollector({ ...CIRCUIT_GAUGE, read: () => [{ labels: { breaker: 'embeddings' }, value: CIRCUIT_GAUGE_VALUE[breaker.circuitState!] }] })
    app.log.info(
      { provider: embedder.provider, model: embedder.model, dimensions: embedder.dimensions },
      embedder.provider === 'local' ? 'embeddings: local hashed n-grams (lexical, not semantic); set OPENAI_API_KEY for real embeddings' : 'embeddings: OpenAI-compatible API',
    )
  },
  { name: 'embedder', dependencies: ['config', 'metrics'] },
)
