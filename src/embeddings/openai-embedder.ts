// Embeddings from OpenAI or any OpenAI-compatible server, through the openai SDK: it retries 429 and
// 5xx with backoff honouring Retry-After (bounded by maxRetries) and enforces the timeout; a circuit
// breaker (opossum) then fails fast while the provider keeps failing, instead of queueing more waits.

import OpenAI from 'openai'
import CircuitBreaker from 'opossum'
import { type CircuitState, circuitState } from '../circuit-state.ts'
import { DomainError } from '../errors.ts'
import { l2Normalize } from './local-embedder.ts'
import type { Embedder } from './embedder.ts'

export interface OpenAIEmbedderOptions {
  apiKey: string
  baseURL?: string | undefined
  model: string
  dimensions: number
  timeoutMs: number
  maxRetries: number
  /** Consecutive-failure window of the breaker; tests shorten it. */
  breakerResetMs?: number
}

export class OpenAIEmbedder implements Embedder {
  readonly provider = 'openai' as const
  readonly model: string
  readonly dimensions: number
  private readonly breaker: CircuitBreaker<[readonly string[]], number[][]>

  constructor(options: OpenAIEmbedderOptions) {
    this.model = options.model
    this.dimensions = options.dimensions
    const client = new OpenAI({ apiKey: options.apiKey, baseURL: options.baseURL, timeout: options.timeoutMs, maxRetries: options.maxRetries })
    const call = async (texts: readonly string[]): Promise<number[][]> => {
      const response = await client.embeddings.create({
        model: this.model,
        input: [...texts],
        // text-embedding-3-* shorten natively; older models reject the parameter, so send it only when it changes something.
        ...(this.dimensions === 1536 && !this.model.startsWith('text-embedding-3') ? {} : { dimensions: this.dimensions }),
        encoding_format: 'float',
      })
      const ordered = [...response.data].sort((a, b) => a.index - b.index)
      return ordered.map((d) => l2Normalize(d.embedding))
    }
    this.breaker = new CircuitBreaker(call, {
      timeout: false, // the SDK's own timeout and retries bound each call
      errorThresholdPercentage: 50,
      volumeThreshold: 3,
      resetTimeout: options.breakerResetMs ?? 30_000,
    })
  }

  async embed(texts: readonly string[]): Promise<number[][]> {
    if (texts.length === 0) return []
    try {
      return await this.breaker.fire(texts)
    } catch (err) {
      if (this.breaker.opened) {
        throw new DomainError('UNAVAILABLE', `the embedding provider keeps failing; not calling it again for a while (last error: ${describe(err)})`, { cause: err })
      }
      if (err instanceof OpenAI.APIError && err.status !== undefined && err.status >= 400 && err.status < 500 && err.status !== 429) {
        throw new DomainError('UNPROCESSABLE', `the embedding provider rejected the request (${err.status}): ${err.message}`, { cause: err })
      }
      throw new DomainError('UNAVAILABLE', `the embedding provider failed: ${describe(err)}`, { cause: err })
    }
  }

  get circuitOpen(): boolean {
    return this.breaker.opened
  }

  get circuitState(): CircuitState {
    return circuitState(this.breaker)
  }
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
