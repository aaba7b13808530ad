// Crawlers by user agent: they get no experiment bucket at the edge (the VCL has the same pattern) and
// their events never count for an experiment. A visitor a crawler-like string hides is only ever
// served the current best variant.

/** Case-insensitive, as in the generated VCL (src/cdn/varnish-vcl.ts). */
export const CRAWLER_USER_AGENT = 'bot|crawl|spider|slurp|facebookexternalhit|preview|lighthouse|headless'

const CRAWLER = new RegExp(CRAWLER_USER_AGENT, 'i')

/** No user agent at all counts as one: no browser sends none (the VCL gives such a request no bucket either). */
export function isCrawler(userAgent: string | undefined): boolean {
  return userAgent === undefined || userAgent.trim() === '' || CRAWLER.test(userAgent)
}
