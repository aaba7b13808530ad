// One interface for every embedding provider, and the batching that keeps each request within the
// provider's limits (OpenAI: at most 2,048 inputs and 300,000 tokens per request).

import { createHash } from 'node:crypto'
import { DomainError } from '../errors.ts'
import { LOCAL_EMBEDDING_MODEL, localEmbedding } from './local-embedder.ts'

export interface Embedder {
  /** 'local' is lexical (hashed word n-grams), not semantic; 'openai' is any OpenAI-compatible API. */
  readonly provider: 'local' | 'openai'
  readonly model: string
  readonly dimensions: number
  /** One L2-normalized vector per text, in order. */
  embed(texts: readonly string[]): Promise<number[][]>
}

export const STORED_DIMENSIONS = 1536
export const MAX_INPUTS_PER_REQUEST = 2048
export const MAX_TOKENS_PER_REQUEST = 300_000
/** text-embedding-3-* accept at most 8,192 tokens per input. */
export const MAX_TOKENS_PER_INPUT = 8192

/** A deliberately pessimistic token estimate (English averages ~4 characters per token). */
export function estimateTokens(text: string): number {
  return Math.ceil(text.length / 3)
}

/** Splits texts into consecutive batches within the input and token limits. */
export function planBatches(texts: readonly string[], maxInputs = MAX_INPUTS_PER_REQUEST, maxTokens = MAX_TOKENS_PER_REQUEST): Array<{ start: number; end: number }> {
  const batches: Array<{ start: number; end: number }> = []
  let start = 0
  let tokens = 0
  for (let i = 0; i < texts.length; i++) {
    const cost = estimateTokens(texts[i] ?? '')
    if (i > start && (i - start >= maxInputs || tokens + cost > maxTokens)) {
      batches.push({ start, end: i })
      start = i
      tokens = 0
    }
    tokens += cost
  }
  if (start < texts.length) batches.push({ start, end: texts.length })
  return batches
}

/** Embeds any number of texts, batch by batch, checking every vector's dimension. */
export async function embedAll(embedder: Embedder, texts: readonly string[]): Promise<number[][]> {
  const vectors: number[][] = []
  for (const { start, end } of planBatches(texts)) {
    const batch = await embedder.embed(texts.slice(start, end))
    if (batch.length !== end - start) {
      throw new DomainError('UNPROCESSABLE', `the embedding provider returned ${batch.length} vectors for ${end - start} inputs`)
    }
    for (const vector of batch) {
      if (vector.length !== embedder.dimensions) {
        throw new DomainError(
          'UNPROCESSABLE',
          `the embedding provider returned ${vector.length}-dimensional vectors but EMBEDDING_DIMENSIONS is ${embedder.dimensions} (model ${embedder.model}); set EMBEDDING_DIMENSIONS to what the model returns, or use a model that supports the dimensions parameter`,
        )
      }
      vectors.push(vector)
    }
  }
  return vectors
}

/**
 * Vectors of fewer than 1536 dimensions are stored zero-padded in the vector(1536) columns: padding
 * changes neither norms nor dot products, so cosine distances are exactly those of the original vectors.
 */
export function padForStorage(vector: readonly number[]): number[] {
  if (vector.length > STORED_DIMENSIONS) throw new DomainError('UNPROCESSABLE', `vectors of ${vector.length} dimensions do not fit the vector(${STORED_DIMENSIONS}) columns`)
  if (vector.length === STORED_DIMENSIONS) return vector as number[]
  return [...vector, ...new Array<number>(STORED_DIMENSIONS - vector.length).fill(0)]
}

/** Identifies a vector: the same text embedded by the same model at the same size gives the same hash. */
export function embeddingHash(model: string, dimensions: number, text: string): string {
  return createHash('sha256').update(`${model}\n${dimensions}\n${text}`).digest('hex')
}

export class LocalEmbedder implements Embedder {
  readonly provider = 'local' as const
  readonly model = LOCAL_EMBEDDING_MODEL
  readonly dimensions: number
  constructor(dimensions = STORED_DIMENSIONS) {
    this.dimensions = dimensions
  }
  async embed(texts: readonly string[]): Promise<number[][]> {
    return texts.map((text) => localEmbedding(text, this.dimensions))
  }
}
