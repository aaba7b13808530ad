// pgvector's text input format: how a vector travels to PostgreSQL in a parameter.

/** `[v1,v2,...]` with enough digits to round-trip a float4 (the precision pgvector stores). */
export function toPgVector(vector: readonly number[]): string {
  return `[${vector.map((v) => (v === 0 ? '0' : v.toPrecision(7))).join(',')}]`
}
