// Bandit allocation: Thompson-sampling probabilities from a fixed seed, floored target shares, bucket
// counts by largest remainder, and a reassignment that moves only the buckets it must.

import t from 'tap'
import fc from 'fast-check'
import {
  type ArmStats,
  assignBuckets,
  bucketCounts,
  probabilityBest,
  rateInterval95,
  reallocate,
  sampleBeta,
  seededRandom,
  targetShares,
} from '../../../src/experiments/allocation.ts'

const SEED = 20261203
const arm = (variantId: number, views: number, conversions: number): ArmStats => ({ variantId, views, conversions })
const sum = (values: Iterable<number>): number => [...values].reduce((a, b) => a + b, 0)
const tally = (allocation: ReadonlyArray<number | null | undefined>): Map<number, number> => {
  const counts = new Map<number, number>()
  for (const v of allocation) if (v !== null && v !== undefined) counts.set(v, (counts.get(v) ?? 0) + 1)
  return counts
}
/** The fewest buckets any assignment must change: each variant can keep at most min(count, held now). */
const minimumChanges = (current: ReadonlyArray<number | null | undefined>, counts: ReadonlyMap<number, number>, buckets: number): number => {
  const held = tally(current.slice(0, buckets))
  return sum([...counts].map(([v, count]) => Math.max(0, count - Math.min(count, held.get(v) ?? 0))))
}
const changedBuckets = (before: ReadonlyArray<number | null | undefined>, after: readonly number[]): number[] => after.flatMap((v, b) => (v === before[b] ? [] : [b]))

t.test('seededRandom: the same seed replays the same floats in [0, 1), another seed does not', async (t) => {
  const a = seededRandom(SEED)
  const b = seededRandom(SEED)
  const first = Array.from({ length: 1000 }, a)
  t.same(Array.from({ length: 1000 }, b), first, 'same seed, same sequence')
  t.not(seededRandom(SEED + 1)(), first[0], 'a different seed starts elsewhere')
  t.ok(first.every((x) => x >= 0 && x < 1), 'every value is in [0, 1)')
  const mean = sum(first) / first.length
  t.ok(Math.abs(mean - 0.5) < 0.03, `mean of 1000 draws is ${mean.toFixed(4)}`)
})

t.test('sampleBeta: the mean of 50k draws is within 1% of a / (a + b), including shapes below 1', async (t) => {
  const random = seededRandom(SEED)
  for (const [a, b] of [
    [0.5, 3],
    [1, 1],
    [30, 970],
    [3, 0.5],
  ] as const) {
    let total = 0
    for (let i = 0; i < 50_000; i++) total += sampleBeta(a, b, random)
    const mean = total / 50_000
    const expected = a / (a + b)
    t.ok(Math.abs(mean - expected) / expected < 0.01, `Beta(${a}, ${b}): mean ${mean.toFixed(5)}, expected ${expected.toFixed(5)}`)
  }
  const tiny = Array.from({ length: 2000 }, () => sampleBeta(0.01, 0.01, random))
  t.ok(tiny.every((x) => x >= 0 && x <= 1), 'tiny shapes never give NaN (their gamma draws underflow outside log space)')
  t.ok(tiny.some((x) => x < 0.01) && tiny.some((x) => x > 0.99), 'tiny shapes put their mass at both ends')
  for (const [a, b] of [
    [0, 1],
    [1, -1],
    [Number.NaN, 1],
    [1, Number.POSITIVE_INFINITY],
  ] as const) {
    t.throws(() => sampleBeta(a, b, random), RangeError, `Beta(${a}, ${b}) is refused`)
  }
})

t.test('probabilityBest: no data splits evenly, a clear winner takes it, symmetric arms split evenly', async (t) => {
  for (const n of [2, 3, 4]) {
    const arms = Array.from({ length: n }, (_, i) => arm(i + 1, 0, 0))
    const p = probabilityBest(arms, { draws: 20_000, random: seededRandom(SEED) })
    t.equal(p.size, n)
    for (const [variantId, share] of p) t.ok(Math.abs(share - 1 / n) < 0.02, `${n} arms without data: variant ${variantId} gets ${share.toFixed(4)}`)
    t.ok(Math.abs(sum(p.values()) - 1) < 1e-9, `${n} arms: probabilities sum to 1`)
  }

  const rates = probabilityBest([arm(1, 2000, 40), arm(2, 2000, 80), arm(3, 2000, 160)], { random: seededRandom(SEED) })
  t.ok(rates.get(3)! > 0.99, `the 8% arm is best with probability ${rates.get(3)}`)
  const pair = probabilityBest([arm(1, 2000, 40), arm(2, 2000, 80)], { random: seededRandom(SEED) })
  t.ok(pair.get(2)! > 0.99, `without the 8% arm, the 4% arm is best with probability ${pair.get(2)}`)
  t.ok(Math.abs(sum(rates.values()) - 1) < 1e-9, 'probabilities sum to 1')

  const symmetric = probabilityBest([arm(7, 1000, 50), arm(9, 1000, 50)], { draws: 20_000, random: seededRandom(SEED) })
  t.ok(Math.abs(symmetric.get(7)! - 0.5) < 0.02 && Math.abs(symmetric.get(9)! - 0.5) < 0.02, `identical arms: ${symmetric.get(7)} and ${symmetric.get(9)}`)

  // A constant source makes identical posteriors draw identical values every time: every draw is a tie.
  const tied = probabilityBest([arm(1, 10, 1), arm(2, 10, 1), arm(3, 10, 1)], { draws: 100, random: () => 0.5 })
  t.ok([...tied.values()].every((p) => Math.abs(p - 1 / 3) < 1e-12), `a tie within a draw is split evenly: ${[...tied.values()].join(', ')}`)

  t.same([...probabilityBest([arm(5, 100, 3)], { random: seededRandom(SEED) })], [[5, 1]], 'a single arm gets 1')
  t.equal(probabilityBest([]).size, 0, 'no arms, no probabilities')
  t.same(probabilityBest([arm(1, 50, 2), arm(2, 50, 9)], { random: seededRandom(SEED) }), probabilityBest([arm(1, 50, 2), arm(2, 50, 9)], { random: seededRandom(SEED) }), 'the same seed gives the same probabilities')
  t.same(probabilityBest([arm(1, 50, 2), arm(2, 10, 15)], { random: seededRandom(SEED) }), probabilityBest([arm(1, 50, 2), arm(2, 10, 10)], { random: seededRandom(SEED) }), 'conversions above views count as views')
  t.same([...probabilityBest([arm(1, 10, 1), arm(2, 10, 1)], { random: Math.random }).keys()], [1, 2], 'results keep the order of the arms')
})

t.test('probabilityBest: bad counts throw a RangeError naming the variant', async (t) => {
  for (const [bad, what] of [
    [arm(42, -1, 0), 'negative views'],
    [arm(42, 10, -1), 'negative conversions'],
    [arm(42, Number.NaN, 0), 'NaN views'],
    [arm(42, 10, Number.POSITIVE_INFINITY), 'infinite conversions'],
  ] as const) {
    t.throws(() => probabilityBest([arm(1, 10, 1), bad]), { name: 'RangeError', message: /variant 42/ }, what)
  }
  t.throws(() => probabilityBest([arm(3, 10, 1), arm(3, 20, 2)]), { name: 'RangeError', message: /variant 3/ }, 'a variant listed twice')
  t.throws(() => probabilityBest([arm(1, 10, 1), arm(2, 10, 1)], { draws: 0 }), RangeError, 'zero draws')
  t.throws(() => probabilityBest([arm(1, 10, 1), arm(2, 10, 1)], { draws: 1.5 }), RangeError, 'a fractional number of draws')
})

t.test('targetShares: floors respected, the rest keep their proportions, the total is 1', async (t) => {
  const shares = targetShares(new Map([[1, 0.98], [2, 0.015], [3, 0.005]]), 0.05)
  t.same([...shares.keys()], [1, 2, 3])
  t.ok(Math.abs(shares.get(1)! - 0.9) < 1e-12 && shares.get(2) === 0.05 && shares.get(3) === 0.05, `two arms lifted to the floor: ${JSON.stringify([...shares])}`)
  t.ok(Math.abs(sum(shares.values()) - 1) < 1e-9, 'shares sum to 1')

  // Lifting arm 3 shrinks the rest enough to push arm 2 under the floor too: the floor is applied until stable.
  const cascade = targetShares(new Map([[1, 0.9], [2, 0.06], [3, 0.04]]), 0.1)
  t.equal(cascade.get(2), 0.1, 'an arm pushed under the floor by another lift is lifted too')
  t.equal(cascade.get(3), 0.1)
  t.ok(Math.abs(cascade.get(1)! - 0.8) < 1e-12, `the free arm takes the rest: ${cascade.get(1)}`)

  const p = new Map([[1, 0.5], [2, 0.3], [3, 0.17], [4, 0.03]])
  const proportional = targetShares(p, 0.05)
  t.equal(proportional.get(4), 0.05, 'the arm under the floor is lifted')
  t.ok(Math.abs(proportional.get(1)! / proportional.get(2)! - 0.5 / 0.3) < 1e-12, 'arms above the floor keep their ratio (1 to 2)')
  t.ok(Math.abs(proportional.get(2)! / proportional.get(3)! - 0.3 / 0.17) < 1e-12, 'arms above the floor keep their ratio (2 to 3)')
  t.ok(Math.abs(sum(proportional.values()) - 1) < 1e-9, 'shares sum to 1')

  fc.assert(
    fc.property(fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 12 }), fc.double({ min: 0, max: 0.5, noNaN: true }), (weights, minShare) => {
      const total = sum(weights)
      const pBest = new Map(weights.map((w, i) => [i, total === 0 ? 1 / weights.length : w / total]))
      const result = targetShares(pBest, minShare)
      if (Math.abs(sum(result.values()) - 1) > 1e-9) throw new Error(`sum ${sum(result.values())}`)
      const floor = Math.min(minShare, 1 / weights.length)
      for (const [v, share] of result) if (share < floor - 1e-12) throw new Error(`variant ${v} under the floor: ${share}`)
    }),
    { numRuns: 500, seed: SEED },
  )
  t.pass('500 generated cases: every share at the floor or above, total 1')

  t.same([...targetShares(new Map([[1, 0.9], [2, 0.1], [3, 0]]), 0.4)], [[1, 1 / 3], [2, 1 / 3], [3, 1 / 3]], 'minShare * arms > 1: equal shares')
  t.same([...targetShares(new Map([[1, 0], [2, 0]]), 0.05)], [[1, 0.5], [2, 0.5]], 'all-zero probabilities: equal shares')
  t.same([...targetShares(new Map([[1, 0.7], [2, 0.3], [3, 0]]), 0)], [[1, 0.7], [2, 0.3], [3, 0]], 'no floor: the probabilities as they are')
  t.equal(targetShares(new Map(), 0.05).size, 0, 'no arms, no shares')
  t.throws(() => targetShares(new Map([[1, 1]]), -0.1), RangeError, 'a negative floor')
  t.throws(() => targetShares(new Map([[1, 1]]), Number.NaN), RangeError, 'a NaN floor')
  t.throws(() => targetShares(new Map([[1, 1], [2, -0.5]]), 0.05), { name: 'RangeError', message: /variant 2/ }, 'a negative probability')
})

t.test('bucketCounts: largest remainder, at least one bucket per arm, sums to the buckets', async (t) => {
  t.same([...bucketCounts(new Map([[1, 0.9], [2, 0.05], [3, 0.05]]), 20)], [[1, 18], [2, 1], [3, 1]], '20 buckets at 90/5/5')
  t.same([...bucketCounts(new Map([[1, 0.97], [2, 0.02], [3, 0.01]]), 20)], [[1, 18], [2, 1], [3, 1]], 'a starved arm gets a bucket from the arm with the most')
  t.same([...bucketCounts(new Map([[1, 0.5], [2, 0.5]]), 3)], [[1, 2], [2, 1]], 'equal remainders go to the lowest variantId')
  t.same([...bucketCounts(new Map([[2, 0.5], [1, 0.5]]), 3)], [[2, 1], [1, 2]], 'whatever the order of the map')
  t.same([...bucketCounts(new Map([[1, 1 / 3], [2, 1 / 3], [3, 1 / 3]]), 2)], [[1, 1], [2, 1], [3, 0]], 'fewer buckets than arms: no minimum')
  t.same([...bucketCounts(new Map([[1, 0.7], [2, 0.3], [3, 0]]), 10)], [[1, 7], [2, 3], [3, 0]], 'a zero share gets no bucket')
  t.same([...bucketCounts(new Map([[1, 0.6], [2, 0.4]]), 0)], [[1, 0], [2, 0]], 'no buckets: zero each')
  t.same([...bucketCounts(new Map([[1, 3], [2, 1]]), 8)], [[1, 6], [2, 2]], 'shares that do not sum to 1 are normalized')

  fc.assert(
    fc.property(fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: 1, maxLength: 10 }), fc.integer({ min: 1, max: 200 }), (weights, buckets) => {
      if (sum(weights) === 0) weights[0] = 1
      const shares = new Map(weights.map((w, i) => [i + 1, w]))
      const counts = bucketCounts(shares, buckets)
      if (sum(counts.values()) !== buckets) throw new Error(`sum ${sum(counts.values())} for ${buckets}`)
      const positive = weights.filter((w) => w > 0).length
      for (const [v, count] of counts) {
        if (!Number.isInteger(count) || count < 0) throw new Error(`variant ${v}: ${count}`)
        if (buckets >= positive && shares.get(v)! > 0 && count < 1) throw new Error(`variant ${v} starved with ${buckets} buckets`)
        if (shares.get(v) === 0 && count !== 0) throw new Error(`variant ${v} has no share yet ${count} buckets`)
      }
      const total = sum(weights)
      // Largest remainder alone is within 1 of the exact quota; only the one-bucket minimum may move more.
      if (buckets >= positive * 2 && positive === weights.length) {
        for (const [v, count] of counts) {
          const quota = (shares.get(v)! / total) * buckets
          if (Math.abs(count - quota) >= 1 + positive) throw new Error(`variant ${v}: ${count} buckets for a quota of ${quota}`)
        }
      }
    }),
    { numRuns: 1000, seed: SEED },
  )
  t.pass('1000 generated cases: integer counts that sum to the buckets, no positive share starved')

  t.throws(() => bucketCounts(new Map([[1, 0], [2, 0]]), 20), RangeError, 'no share anywhere')
  t.throws(() => bucketCounts(new Map(), 20), RangeError, 'no arms for 20 buckets')
  t.throws(() => bucketCounts(new Map([[1, 1]]), 2.5), RangeError, 'a fractional number of buckets')
  t.throws(() => bucketCounts(new Map([[1, 1], [2, Number.NaN]]), 20), { name: 'RangeError', message: /variant 2/ }, 'a NaN share')
})

t.test('assignBuckets: fills from nothing, moves only surplus buckets, retires a departed variant', async (t) => {
  const fresh = assignBuckets(new Array(20), new Map([[1, 18], [2, 1], [3, 1]]), 20)
  t.same(fresh, [...new Array<number>(18).fill(1), 2, 3], 'all unassigned: filled in bucket order by ascending variantId')

  const current = [1, 1, 2, 2, 1, 2, 3, 3, 1, 2]
  const counts = new Map([[1, 3], [2, 5], [3, 2]])
  const next = assignBuckets(current, counts, 10)
  t.same(next, [1, 1, 2, 2, 1, 2, 3, 3, 2, 2], 'only the surplus bucket of variant 1 moves')
  t.same(changedBuckets(current, next), [8])

  const shrink = assignBuckets([1, 2, 1, 2, 1, 2, 1, 2], new Map([[1, 2], [2, 6]]), 8)
  t.same(shrink, [1, 2, 1, 2, 2, 2, 2, 2], 'a variant keeps its lowest-numbered buckets')

  const departed = assignBuckets([1, 4, 2, 4, 4, 1], new Map([[1, 3], [2, 3]]), 6)
  t.same(departed, [1, 1, 2, 2, 2, 1], 'a variant that left the competition loses all its buckets')
  t.notOk(departed.includes(4))
  t.same(changedBuckets([1, 4, 2, 4, 4, 1], departed), [1, 3, 4])

  t.same(assignBuckets([1, 2], new Map([[1, 2], [2, 2]]), 4), [1, 2, 1, 2], 'more buckets than before: the new ones are filled')
  t.same(assignBuckets([1, 2, 2, 2, 1, 1], new Map([[1, 2], [2, 2]]), 4), [1, 2, 2, 1], 'fewer buckets than before: the rest are ignored')
  t.same(assignBuckets([null, 1, null], new Map([[1, 1], [2, 2]]), 3), [2, 1, 2], 'null is unassigned')
  t.same(assignBuckets(current, counts, 10), next, 'the same input gives the same assignment')

  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 60 }),
      fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 5 }),
      fc.array(fc.option(fc.integer({ min: 1, max: 8 })), { maxLength: 70 }),
      fc.array(fc.nat(), { minLength: 5, maxLength: 5 }),
      (buckets, variantIds, current, weights) => {
        const variants = [...new Set(variantIds)]
        const counts = new Map(variants.map((v) => [v, 0]))
        // Spread `buckets` over the variants by the generated weights.
        for (let b = 0; b < buckets; b++) {
          const v = variants[(weights[b % weights.length]! + b) % variants.length]!
          counts.set(v, counts.get(v)! + 1)
        }
        const allocation = assignBuckets(current, counts, buckets)
        if (allocation.length !== buckets) throw new Error(`length ${allocation.length}`)
        const got = tally(allocation)
        for (const [v, count] of counts) if ((got.get(v) ?? 0) !== count) throw new Error(`variant ${v}: ${got.get(v)} buckets, wanted ${count}`)
        const changed = changedBuckets(current, allocation).length
        const minimum = minimumChanges(current, counts, buckets)
        if (changed !== minimum) throw new Error(`${changed} changed, the minimum is ${minimum}`)
        for (let b = 0; b < buckets; b++) {
          const v = current[b]
          // A bucket that kept its variant: every lower bucket of that variant was kept too.
          if (v !== null && v !== undefined && allocation[b] === v) {
            for (let lower = 0; lower < b; lower++) if (current[lower] === v && allocation[lower] !== v) throw new Error(`bucket ${lower} of ${v} moved while ${b} did not`)
          }
        }
      },
    ),
    { numRuns: 1000, seed: SEED },
  )
  t.pass('1000 generated cases: counts met, changed buckets equal the minimum, lowest-numbered buckets kept')

  t.throws(() => assignBuckets([], new Map([[1, 3]]), 4), RangeError, 'counts that do not sum to the buckets')
  t.throws(() => assignBuckets([], new Map([[1, 1.5], [2, 2.5]]), 4), { name: 'RangeError', message: /variant 1/ }, 'a fractional count')
})

t.test('rateInterval95: the Wilson score interval', async (t) => {
  const close = (actual: readonly number[], expected: readonly number[], message: string): void => {
    t.ok(actual.every((x, i) => Math.abs(x - expected[i]!) < 5e-5), `${message}: [${actual.map((x) => x.toFixed(4)).join(', ')}]`)
  }
  close(rateInterval95(8, 100), [0.0411, 0.15], '8 of 100')
  close(rateInterval95(50, 100), [0.4038, 0.5962], '50 of 100')
  close(rateInterval95(1, 10), [0.0179, 0.4042], '1 of 10')
  close(rateInterval95(160, 2000), [0.0689, 0.0927], '160 of 2000')
  t.same(rateInterval95(0, 0), [0, 1], 'no views: anything is possible')
  const none = rateInterval95(0, 10)
  t.equal(none[0], 0, 'no conversions: the low end is exactly 0')
  t.ok(none[1] > 0.27 && none[1] < 0.28, `no conversions: the high end is not 0 (${none[1]})`)
  t.equal(rateInterval95(10, 10)[1], 1, 'all converted: the high end is exactly 1')
  t.same(rateInterval95(15, 10), rateInterval95(10, 10), 'conversions above views count as views')
  t.throws(() => rateInterval95(-1, 10), RangeError, 'negative conversions')
  t.throws(() => rateInterval95(1, Number.NaN), RangeError, 'NaN views')
})

t.test('reallocate: one step, and `changed` lists exactly the buckets whose variant differs', async (t) => {
  const arms = [arm(1, 2000, 40), arm(2, 2000, 80), arm(3, 2000, 160)]
  const current = Array.from({ length: 20 }, (_, b) => (b % 3) + 1)
  const step = reallocate({ arms, current, buckets: 20, minShare: 0.05, random: seededRandom(SEED) })
  t.same(tally(step.allocation), new Map([[3, 18], [1, 1], [2, 1]]), 'the clear winner gets 18 of 20 buckets, the others the floor')
  t.same(step.changed, changedBuckets(current, step.allocation), 'changed is exactly the buckets whose variant differs')
  t.equal(step.changed.length, minimumChanges(current, tally(step.allocation), 20), 'and no more than must change')
  t.same(step.allocation.slice(0, 4), [1, 2, 3, 3], 'the lowest bucket of each losing variant stays')
  t.ok(Math.abs(sum(step.shares.values()) - 1) < 1e-9 && Math.abs(sum(step.pBest.values()) - 1) < 1e-9, 'shares and probabilities each sum to 1')

  const again = reallocate({ arms, current: step.allocation, buckets: 20, minShare: 0.05, random: seededRandom(SEED + 1) })
  t.same(again.changed, [], 'a settled experiment changes nothing')

  const fresh = reallocate({ arms: [arm(1, 0, 0), arm(2, 0, 0)], current: [], buckets: 20, minShare: 0.05, draws: 2000, random: seededRandom(SEED) })
  t.same(fresh.changed, Array.from({ length: 20 }, (_, b) => b), 'from nothing, every bucket changes')
  t.ok(Math.abs(tally(fresh.allocation).get(1)! - 10) <= 1, `no data: about half each (${tally(fresh.allocation).get(1)} of 20)`)

  const added = reallocate({ arms: [arm(1, 500, 20), arm(2, 500, 21), arm(3, 0, 0)], current: [1, 2, null, 1, 2, 1, 2, 5], buckets: 8, minShare: 0.05, random: seededRandom(SEED) })
  t.same(added.changed, changedBuckets([1, 2, null, 1, 2, 1, 2, 5], added.allocation), 'unassigned and retired buckets count as changed')
  t.ok(added.changed.includes(2) && added.changed.includes(7), 'bucket 2 (unassigned) and bucket 7 (retired variant) changed')
  t.throws(() => reallocate({ arms: [], current: [], buckets: 20, minShare: 0.05 }), RangeError, 'no arms')
})
