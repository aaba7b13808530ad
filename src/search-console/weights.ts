// Crawl weight from Search Console: how much a page earns its crawl (clicks per impression, boosted
// by reach), and how a page that drops out of the data fades instead of falling to 0. Pure functions.

/** Impressions at which the reach boost doubles the click-through rate's contribution. */
export const IMPRESSIONS_SCALE = 10_000

/** w = min((clicks / impressions) * (1 + impressions / 10000), 1); 0 without impressions. */
export function crawlWeightFromSearch(clicks: number, impressions: number): number {
  if (!Number.isFinite(clicks) || !Number.isFinite(impressions) || impressions <= 0 || clicks <= 0) return 0
  return Math.min((clicks / impressions) * (1 + impressions / IMPRESSIONS_SCALE), 1)
}

/**
 * A page missing from an import: w = max(floor, w * decay) while w is above the floor. A weight at or
 * under the floor stays as it is (decay never raises a page, and never-seen pages stay at 0).
 * The import applies the same rule in SQL (search-console-import.ts); a test holds them equal.
 */
export function decayedCrawlWeight(weight: number, decay: number, floor: number): number {
  if (weight <= floor) return weight
  return Math.max(floor, weight * decay)
}
