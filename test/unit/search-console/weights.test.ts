import t from 'tap'
import { crawlWeightFromSearch, decayedCrawlWeight } from '../../../src/search-console/weights.ts'

t.test('w = min((clicks / impressions) * (1 + impressions / 10000), 1), 0 without impressions', async (t) => {
  t.equal(crawlWeightFromSearch(0, 0), 0)
  t.equal(crawlWeightFromSearch(5, 0), 0, 'clicks without impressions are not a weight')
  t.equal(crawlWeightFromSearch(0, 500), 0)
  t.equal(crawlWeightFromSearch(10, 100), 0.1 * 1.01)
  t.equal(crawlWeightFromSearch(100, 1000), 0.1 * 1.1)
  t.equal(crawlWeightFromSearch(500, 10_000), 0.05 * 2)
  t.ok(Math.abs(crawlWeightFromSearch(3000, 20_000) - 0.45) < 1e-12, '0.15 * 3')
  t.equal(crawlWeightFromSearch(5000, 20_000), 0.75)
  t.equal(crawlWeightFromSearch(9000, 20_000), 1, 'capped at 1')
  t.equal(crawlWeightFromSearch(Number.NaN, 10), 0)
  t.equal(crawlWeightFromSearch(1, Number.POSITIVE_INFINITY), 0)
  t.ok(crawlWeightFromSearch(1, 10) > crawlWeightFromSearch(1, 11), 'a lower click-through rate weighs less at similar reach')
})

t.test('decay: max(floor, w * decay) above the floor; at or under the floor unchanged', async (t) => {
  t.equal(decayedCrawlWeight(0.8, 0.5, 0.05), 0.4)
  t.equal(decayedCrawlWeight(0.08, 0.5, 0.05), 0.05, 'never below the floor')
  t.equal(decayedCrawlWeight(0.05, 0.5, 0.05), 0.05)
  t.equal(decayedCrawlWeight(0.01, 0.5, 0.05), 0.01, 'decay never raises a page')
  t.equal(decayedCrawlWeight(0, 0.5, 0.05), 0, 'a page never seen stays at 0')
  t.equal(decayedCrawlWeight(0.6, 1, 0), 0.6, 'decay 1 keeps weights')
  t.equal(decayedCrawlWeight(0.6, 0, 0), 0, 'decay 0 with floor 0 is the old jump to 0')
  let w = 1
  for (let i = 0; i < 20; i++) w = decayedCrawlWeight(w, 0.5, 0.05)
  t.equal(w, 0.05, 'repeated absence converges on the floor')
})
