// FNV-1a 32-bit: a stable hash for spreading things deterministically (TTL jitter, demo weights,
// the local embedder's feature buckets, sitemap validators). Stable across processes and releases,
// unlike anything seeded; not for security.

export function fnv1a32(text: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash >>> 0
}
