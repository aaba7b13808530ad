// Bucket allocation for multi-armed-bandit experiments: Thompson sampling over Beta posteriors gives each
// variant its probability of being the best, a floor share keeps every variant learning, and buckets are
// reassigned so that as few as possible change (each changed bucket is a CDN purge). Pure functions: the
// caller reads the counts and writes the assignment; randomness is injected so a step can be replayed.

export interface ArmStats {
  variantId: number
  views: number
  conversions: number
}

/** mulberry32: a deterministic PRNG from a 32-bit seed (the seed is taken modulo 2^32); floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) | 0
    let t = Math.imul(state ^ (state >>> 15), 1 | state)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A uniform in (0, 1]: safe to take the log of. */
const openUniform = (random: () => number): number => 1 - random()

/** Box-Muller; one normal per two uniforms keeps it stateless across callers sharing `random`. */
function sampleNormal(random: () => number): number {
  return Math.sqrt(-2 * Math.log(openUniform(random))) * Math.cos(2 * Math.PI * random())
}

/** Marsaglia-Tsang for shape >= 1. */
function sampleGammaAtLeastOne(shape: number, random: () => number): number {
  const d = shape - 1 / 3
  const c = 1 / Math.sqrt(9 * d)
  for (;;) {
    const x = sampleNormal(random)
    let v = 1 + c * x
    if (v <= 0) continue
    v = v * v * v
    const u = openUniform(random)
    if (u < 1 - 0.0331 * x * x * x * x) return d * v
    if (Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v
  }
}

/**
 * log of a Gamma(shape, 1) draw. Shape < 1 boosts: Gamma(a) = Gamma(a + 1) * U^(1/a), kept in log space
 * because U^(1/a) underflows to 0 for small shapes and a Beta of two zeros is NaN.
 */
function sampleLogGamma(shape: number, random: () => number): number {
  if (shape >= 1) return Math.log(sampleGammaAtLeastOne(shape, random))
  return Math.log(sampleGammaAtLeastOne(shape + 1, random)) + Math.log(openUniform(random)) / shape
}

/** One Beta(a, b) draw as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b). */
export function sampleBeta(a: number, b: number, random: () => number): number {
  if (!(a > 0 && b > 0 && Number.isFinite(a) && Number.isFinite(b))) throw new RangeError(`Beta shapes must be finite and positive, got (${a}, ${b})`)
  if (a >= 1 && b >= 1) {
    const x = sampleGammaAtLeastOne(a, random)
    return x / (x + sampleGammaAtLeastOne(b, random))
  }
  const logX = sampleLogGamma(a, random)
  const logY = sampleLogGamma(b, random)
  return 1 / (1 + Math.exp(logY - logX))
}

function checkedArms(arms: readonly ArmStats[]): Array<{ variantId: number; a: number; b: number }> {
  const seen = new Set<number>()
  return arms.map(({ variantId, views, conversions }) => {
    if (!Number.isFinite(views) || views < 0) throw new RangeError(`variant ${variantId}: views must be a finite number >= 0, got ${views}`)
    if (!Number.isFinite(conversions) || conversions < 0) throw new RangeError(`variant ${variantId}: conversions must be a finite number >= 0, got ${conversions}`)
    // Two rows for one variant would silently overwrite each other in the result.
    if (seen.has(variantId)) throw new RangeError(`variant ${variantId} appears twice`)
    seen.add(variantId)
    // Conversions are counted apart from views (and can arrive first): more than views means all of them.
    const successes = Math.min(conversions, views)
    return { variantId, a: 1 + successes, b: 1 + views - successes }
  })
}

/**
 * P(variant is best) per arm: Monte Carlo over Beta(1 + conversions, 1 + views - conversions), with ties
 * within a draw split evenly. `random` defaults to Math.random; pass seededRandom(...) to replay a step.
 */
export function probabilityBest(arms: readonly ArmStats[], options: { draws?: number; random?: () => number } = {}): Map<number, number> {
  const posteriors = checkedArms(arms)
  const draws = options.draws ?? 10_000
  if (!Number.isInteger(draws) || draws < 1) throw new RangeError(`draws must be an integer >= 1, got ${draws}`)
  const random = options.random ?? Math.random
  const result = new Map<number, number>()
  if (posteriors.length === 0) return result
  if (posteriors.length === 1) return result.set(posteriors[0]!.variantId, 1)
  const wins = new Float64Array(posteriors.length)
  const sample = new Float64Array(posteriors.length)
  for (let draw = 0; draw < draws; draw++) {
    let best = -Infinity
    let tied = 0
    for (let i = 0; i < posteriors.length; i++) {
      const { a, b } = posteriors[i]!
      const x = sampleBeta(a, b, random)
      sample[i] = x
      if (x > best) {
        best = x
        tied = 1
      } else if (x === best) tied++
    }
    for (let i = 0; i < posteriors.length; i++) if (sample[i] === best) wins[i]! += 1 / tied
  }
  for (let i = 0; i < posteriors.length; i++) result.set(posteriors[i]!.variantId, wins[i]! / draws)
  return result
}

/**
 * Target shares: the probabilities (normalized), every arm raised to at least `minShare` and the others
 * scaled to fill the rest, repeated until no scaled arm falls under the floor, so arms above the floor
 * keep their relative proportions. All-zero probabilities mean no information: equal shares.
 */
export function targetShares(pBest: ReadonlyMap<number, number>, minShare: number): Map<number, number> {
  if (!Number.isFinite(minShare) || minShare < 0 || minShare > 1) throw new RangeError(`minShare must be in [0, 1], got ${minShare}`)
  const shares = new Map<number, number>()
  const n = pBest.size
  if (n === 0) return shares
  let total = 0
  for (const [variantId, p] of pBest) {
    if (!Number.isFinite(p) || p < 0) throw new RangeError(`variant ${variantId}: probability must be a finite number >= 0, got ${p}`)
    total += p
  }
  if (minShare * n >= 1 || total === 0) {
    for (const variantId of pBest.keys()) shares.set(variantId, 1 / n)
    return shares
  }
  // With minShare * n < 1 the largest free arm always stays above the floor, so the free set never empties.
  const floored = new Set<number>()
  for (;;) {
    let freeTotal = 0
    for (const [variantId, p] of pBest) if (!floored.has(variantId)) freeTotal += p
    const remaining = 1 - floored.size * minShare
    let lifted = false
    for (const [variantId, p] of pBest) {
      if (floored.has(variantId)) continue
      if ((p / freeTotal) * remaining < minShare) {
        floored.add(variantId)
        lifted = true
      }
    }
    if (lifted) continue
    for (const [variantId, p] of pBest) shares.set(variantId, floored.has(variantId) ? minShare : (p / freeTotal) * remaining)
    return shares
  }
}

function checkedBuckets(buckets: number): void {
  if (!Number.isInteger(buckets) || buckets < 0) throw new RangeError(`buckets must be an integer >= 0, got ${buckets}`)
}

/**
 * Buckets per variant: largest-remainder rounding of shares * buckets (shares normalized), then every arm
 * with a share > 0 gets at least one bucket when there are enough buckets for all of them, taken from the
 * arm with the most (ties: the one most over its exact quota, then the lowest variantId). Ties in the
 * remainders go to the lowest variantId, so equal inputs give equal counts.
 */
export function bucketCounts(shares: ReadonlyMap<number, number>, buckets: number): Map<number, number> {
  checkedBuckets(buckets)
  let total = 0
  for (const [variantId, share] of shares) {
    if (!Number.isFinite(share) || share < 0) throw new RangeError(`variant ${variantId}: share must be a finite number >= 0, got ${share}`)
    total += share
  }
  const counts = new Map<number, number>()
  if (buckets === 0) {
    for (const variantId of shares.keys()) counts.set(variantId, 0)
    return counts
  }
  if (total === 0) throw new RangeError(`no variant has a share > 0: ${buckets} buckets cannot be allocated`)
  const arms = [...shares].map(([variantId, share]) => {
    const quota = (share / total) * buckets
    return { variantId, share, quota, count: Math.floor(quota) }
  })
  const positive = arms.filter((arm) => arm.share > 0)
  let left = buckets - arms.reduce((sum, arm) => sum + arm.count, 0)
  const byRemainder = [...positive].sort((x, y) => y.quota - y.count - (x.quota - x.count) || x.variantId - y.variantId)
  // Floating error in the quotas can leave more than one pass would hand out; never less than 0.
  for (let i = 0; left > 0; i = (i + 1) % byRemainder.length, left--) byRemainder[i]!.count++
  if (buckets >= positive.length) {
    const starved = positive.filter((arm) => arm.count === 0).sort((x, y) => x.variantId - y.variantId)
    for (const arm of starved) {
      // Pigeonhole: while an arm has 0 and buckets >= arms, some arm has >= 2.
      const donor = [...positive].sort((x, y) => y.count - x.count || y.count - y.quota - (x.count - x.quota) || x.variantId - y.variantId)[0]!
      donor.count--
      arm.count++
    }
  }
  for (const arm of arms) counts.set(arm.variantId, arm.count)
  return counts
}

/**
 * The new bucket -> variantId array. A bucket keeps its variant while that variant is within its count
 * (its lowest-numbered buckets are kept); surplus, unassigned and retired buckets are the only ones that
 * move, filled in ascending bucket order by the short variants in ascending variantId. Every moved bucket
 * is needed to fill a shortfall, so the number of changes is the minimum.
 */
export function assignBuckets(current: ReadonlyArray<number | null | undefined>, counts: ReadonlyMap<number, number>, buckets: number): number[] {
  checkedBuckets(buckets)
  let total = 0
  for (const [variantId, count] of counts) {
    if (!Number.isInteger(count) || count < 0) throw new RangeError(`variant ${variantId}: count must be an integer >= 0, got ${count}`)
    total += count
  }
  if (total !== buckets) throw new RangeError(`counts sum to ${total}, not to ${buckets} buckets`)
  const allocation = new Array<number>(buckets)
  const kept = new Map<number, number>()
  const free: number[] = []
  // `current` may be shorter (new buckets) or longer (fewer buckets now) than `buckets`.
  for (let bucket = 0; bucket < buckets; bucket++) {
    const variantId = current[bucket]
    const have = variantId === null || variantId === undefined ? 0 : (kept.get(variantId) ?? 0)
    if (variantId !== null && variantId !== undefined && have < (counts.get(variantId) ?? 0)) {
      allocation[bucket] = variantId
      kept.set(variantId, have + 1)
    } else free.push(bucket)
  }
  let next = 0
  for (const variantId of [...counts.keys()].sort((x, y) => x - y)) {
    for (let short = counts.get(variantId)! - (kept.get(variantId) ?? 0); short > 0; short--) allocation[free[next++]!] = variantId
  }
  return allocation
}

/** z for a two-sided 95% interval. */
const Z95 = 1.959963984540054

/**
 * Wilson score interval for conversions / views: unlike the normal approximation it stays inside [0, 1]
 * and is not [0, 0] at zero conversions. No views: [0, 1] (nothing known). Conversions above views are
 * clamped to views.
 */
export function rateInterval95(conversions: number, views: number): [low: number, high: number] {
  if (!Number.isFinite(views) || views < 0) throw new RangeError(`views must be a finite number >= 0, got ${views}`)
  if (!Number.isFinite(conversions) || conversions < 0) throw new RangeError(`conversions must be a finite number >= 0, got ${conversions}`)
  if (views === 0) return [0, 1]
  const successes = Math.min(conversions, views)
  const p = successes / views
  const z2 = Z95 * Z95
  const denominator = 1 + z2 / views
  const center = (p + z2 / (2 * views)) / denominator
  const half = (Z95 / denominator) * Math.sqrt((p * (1 - p)) / views + z2 / (4 * views * views))
  // The bounds at 0 and all conversions are exactly 0 and 1; keep floating error from saying otherwise.
  return [successes === 0 ? 0 : Math.max(0, center - half), successes === views ? 1 : Math.min(1, center + half)]
}

/** One reallocation step: probabilities, shares, counts, assignment, and the buckets that changed variant. */
export function reallocate(input: {
  arms: readonly ArmStats[]
  current: ReadonlyArray<number | null | undefined>
  buckets: number
  minShare: number
  random?: () => number
  draws?: number
}): { pBest: Map<number, number>; shares: Map<number, number>; allocation: number[]; changed: number[] } {
  if (input.arms.length === 0) throw new RangeError('an experiment needs at least one variant to allocate buckets to')
  const options: { draws?: number; random?: () => number } = {}
  if (input.draws !== undefined) options.draws = input.draws
  if (input.random !== undefined) options.random = input.random
  const pBest = probabilityBest(input.arms, options)
  const shares = targetShares(pBest, input.minShare)
  const allocation = assignBuckets(input.current, bucketCounts(shares, input.buckets), input.buckets)
  const changed: number[] = []
  for (let bucket = 0; bucket < allocation.length; bucket++) if (allocation[bucket] !== input.current[bucket]) changed.push(bucket)
  return { pBest, shares, allocation, changed }
}
