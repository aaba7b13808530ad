// Deterministic local embedder for development and tests: hashed word unigrams and bigrams,
// signed feature hashing, L2-normalized. It is lexical, not semantic: texts that share words are near.

import { fnv1a32 } from '../hash.ts'

export const LOCAL_EMBEDDING_MODEL = 'local-hashed-ngrams-v1'

export function tokenize(text: string): string[] {
  return text.toLowerCase().normalize('NFKD').replace(/[\u0300-\u036f]/g, '').match(/[a-z0-9]+/g) ?? []
}

export function l2Normalize(vector: Float64Array | number[]): number[] {
  let sum = 0
  for (const v of vector) sum += v * v
  const norm = Math.sqrt(sum)
  return Array.from(vector, (v) => (norm === 0 ? 0 : v / norm))
}

export function localEmbedding(text: string, dimensions: number): number[] {
  const vector = new Float64Array(dimensions)
  const words = tokenize(text)
  const add = (feature: string, weight: number): void => {
    const hash = fnv1a32(feature)
    const index = hash % dimensions
    // One more bit of the hash picks the sign, so collisions cancel out on average instead of piling up.
    vector[index] = (vector[index] ?? 0) + ((hash >>> 31) === 1 ? -weight : weight)
  }
  for (let i = 0; i < words.length; i++) {
    add(`1:${words[i]}`, 1)
    if (i + 1 < words.length) add(`2:${words[i]} ${words[i + 1]}`, 0.5)
  }
  if (words.length === 0) vector[0] = 1 // a defined direction for empty text, so cosine distance stays finite
  return l2Normalize(vector)
}
