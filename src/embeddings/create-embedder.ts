// Picks the embedding provider from the configuration: OpenAI (or compatible) with a key, else local.

import type { Config } from '../config.ts'
import { type Embedder, LocalEmbedder } from './embedder.ts'
import { OpenAIEmbedder } from './openai-embedder.ts'

export type EmbedderSettings = Pick<Config, 'openaiApiKey' | 'openaiBaseUrl' | 'embeddingModel' | 'embeddingDimensions' | 'embeddingTimeoutMs' | 'embeddingMaxRetries'>

export function createEmbedder(settings: EmbedderSettings): Embedder {
  if (settings.openaiApiKey === undefined) return new LocalEmbedder(settings.embeddingDimensions)
  return new OpenAIEmbedder({
    apiKey: settings.openaiApiKey,
    baseURL: settings.openaiBaseUrl,
    model: settings.embeddingModel,
    dimensions: settings.embeddingDimensions,
    timeoutMs: settings.embeddingTimeoutMs,
    maxRetries: settings.embeddingMaxRetries,
  })
}
