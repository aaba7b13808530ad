// The simulated visitors of `npm run bench:experiments`: a seeded stream (who is new, who comes back with
// which earlier cookie jar, the uniform draw that decides a conversion) and the browser each one is:
// GET the landing page through Varnish with its cookie jar, keep the vo_bucket cookie Varnish sets, load
// the beacon once per jar (the browser then has it cached), and send what src/experiments/beacon.ts
// sends: a `view`, and a `cta_click` when the draw falls under the shown variant's true rate.

import { seededRandom } from '../src/experiments/allocation.ts'

/** One page view of the stream; identical for every side run with the same seed and count. */
export interface VisitorPlan {
  index: number
  /** The cookie jar (the browser): the index of the page view that opened it. */
  jar: number
  returning: boolean
  /** Uniform in [0, 1): the visitor converts when this is under the true rate of the variant it is shown. */
  draw: number
}

/**
 * The stream. Each page view takes exactly three numbers from mulberry32(seed), whatever it turns out to
 * be, so the same seed gives the same stream for any side. A returning visitor reuses the jar of an
 * earlier page view picked uniformly (so a jar that came back before is likelier to come back again), at
 * least `minGap` page views back, so that with `minGap` >= the requests in flight its previous visit has
 * (almost always) finished and its cookie is in the jar.
 */
export function visitorStream(seed: number, visitors: number, returningShare: number, minGap: number): VisitorPlan[] {
  const random = seededRandom(seed)
  const plans: VisitorPlan[] = []
  for (let index = 0; index < visitors; index++) {
    const comesBack = random()
    const pick = random()
    const draw = random()
    const pool = index - minGap + 1
    const returning = pool > 0 && comesBack < returningShare
    const jar = returning ? plans[Math.floor(pick * pool)]!.jar : index
    plans.push({ index, jar, returning, draw })
  }
  return plans
}

/** What one page view saw and sent. */
export interface PageView {
  index: number
  jar: number
  returning: boolean
  /** The jar held a vo_bucket cookie when the page was asked for. */
  hadCookie: boolean
  /** The visitor's bucket after the answer (its cookie, or the one Varnish set). */
  bucket: number | undefined
  /** Varnish set a vo_bucket cookie on this answer. */
  cookieSet: boolean
  status: number
  /** data-variant of the hero; undefined when the page showed none. */
  variant: number | undefined
  /** The hero is under experiment for the visitor's segment (data-experiment): the beacon runs. */
  experiment: boolean
  /** Varnish's X-Varnish header: two ids (this request's and the object's) on a hit. */
  xVarnish: string
  hit: boolean
  /** The VCL's own X-Edge-Cache (HIT, MISS, STALE, PASS). */
  edge: string
  /** The `view` event was accepted (202). */
  viewSent: boolean
  /** The draw converted and the `cta_click` was accepted (202). */
  converted: boolean
  /** The draw converted (whether or not the event got through). */
  wouldConvert: boolean
  /** ms since the visitors started. */
  at: number
  error?: string
}

export interface VisitorRun {
  views: PageView[]
  elapsedMs: number
  beacon: { requests: number; hits: number; failures: number }
  eventFailures: string[]
}

export interface VisitorOptions {
  /** Varnish, e.g. http://127.0.0.1:6081 */
  baseUrl: string
  path: string
  segment: string
  userAgent: string
  plans: readonly VisitorPlan[]
  /** True conversion rate per variant id; a variant not in it converts never. */
  rates: ReadonlyMap<number, number>
  concurrency: number
  /** Page view i starts no earlier than i * durationMs / plans.length after the start. */
  durationMs: number
  beaconPath: string
  onProgress?: (done: number, total: number) => void
}

interface Jar {
  cookies: Map<string, string>
  beaconCached: boolean
}

const HERO = /<section class="hero"([^>]*)>/
const attribute = (attrs: string, name: string): string | undefined => new RegExp(`\\s${name}="([^"]*)"`).exec(attrs)?.[1]

/** The hero's data attributes, as the beacon reads them. */
export function readHero(html: string): { variant: number | undefined; segment: string | undefined; page: string | undefined; experiment: boolean } {
  const attrs = HERO.exec(html)?.[1] ?? ''
  const variant = attribute(attrs, 'data-variant')
  return { variant: variant === undefined ? undefined : Number(variant), segment: attribute(attrs, 'data-segment'), page: attribute(attrs, 'data-page'), experiment: /\sdata-experiment(\s|=|$)/.test(attrs) }
}

const cookieHeader = (jar: Jar): string | undefined => (jar.cookies.size === 0 ? undefined : [...jar.cookies].map(([k, v]) => `${k}=${v}`).join('; '))

function storeCookies(jar: Jar, setCookies: readonly string[]): void {
  for (const line of setCookies) {
    const [pair] = line.split(';')
    const at = pair!.indexOf('=')
    if (at > 0) jar.cookies.set(pair!.slice(0, at).trim(), pair!.slice(at + 1).trim())
  }
}

export async function runVisitors(options: VisitorOptions): Promise<VisitorRun> {
  const { baseUrl, path, segment, userAgent, plans, rates, concurrency, durationMs, beaconPath } = options
  const jars = new Map<number, Jar>()
  const views: PageView[] = new Array(plans.length)
  const beacon = { requests: 0, hits: 0, failures: 0 }
  const eventFailures: string[] = []
  const slotMs = plans.length === 0 ? 0 : durationMs / plans.length
  const started = performance.now()
  let next = 0
  let done = 0

  /** What navigator.sendBeacon sends: the JSON as text/plain, with the site's cookies and the browser's User-Agent. */
  const sendEvent = async (jar: Jar, event: Record<string, unknown>): Promise<boolean> => {
    const headers: Record<string, string> = { 'content-type': 'text/plain;charset=UTF-8', 'user-agent': userAgent }
    const cookie = cookieHeader(jar)
    if (cookie !== undefined) headers.cookie = cookie
    try {
      const res = await fetch(`${baseUrl}/events`, { method: 'POST', headers, body: JSON.stringify(event), signal: AbortSignal.timeout(20_000) })
      const text = await res.text()
      if (res.status === 202) return true
      if (eventFailures.length < 20) eventFailures.push(`${event.type}: ${res.status} ${text.slice(0, 200)}`)
      return false
    } catch (err) {
      if (eventFailures.length < 20) eventFailures.push(`${event.type}: ${err instanceof Error ? err.message : String(err)}`)
      return false
    }
  }

  const visit = async (plan: VisitorPlan): Promise<PageView> => {
    let jar = jars.get(plan.jar)
    if (jar === undefined) jars.set(plan.jar, (jar = { cookies: new Map(), beaconCached: false }))
    const hadCookie = jar.cookies.has('vo_bucket')
    const view: PageView = { index: plan.index, jar: plan.jar, returning: plan.returning, hadCookie, bucket: undefined, cookieSet: false, status: 0, variant: undefined, experiment: false, xVarnish: '', hit: false, edge: '', viewSent: false, converted: false, wouldConvert: false, at: performance.now() - started }
    const headers: Record<string, string> = {
      'user-agent': userAgent,
      accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
      'accept-language': 'en-US,en;q=0.5',
      'x-segment': segment,
    }
    const cookie = cookieHeader(jar)
    if (cookie !== undefined) headers.cookie = cookie
    let html: string
    try {
      const res = await fetch(`${baseUrl}${path}`, { headers, signal: AbortSignal.timeout(20_000) })
      html = await res.text()
      view.status = res.status
      view.xVarnish = res.headers.get('x-varnish') ?? ''
      view.hit = view.xVarnish.trim().split(/\s+/).length === 2
      view.edge = res.headers.get('x-edge-cache') ?? ''
      const setCookies = res.headers.getSetCookie()
      view.cookieSet = setCookies.some((c) => c.startsWith('vo_bucket='))
      storeCookies(jar, setCookies)
    } catch (err) {
      view.error = err instanceof Error ? err.message : String(err)
      return view
    }
    const bucketText = jar.cookies.get('vo_bucket')
    view.bucket = bucketText !== undefined && /^\d+$/.test(bucketText) ? Number(bucketText) : undefined
    if (view.status !== 200) {
      view.error = `status ${view.status}`
      return view
    }
    const hero = readHero(html)
    view.variant = hero.variant
    view.experiment = hero.experiment
    if (!hero.experiment || hero.variant === undefined) return view
    if (!jar.beaconCached) {
      // The page's <script src> once per browser: cached a day by it afterwards (Cache-Control: max-age=86400).
      beacon.requests++
      try {
        const res = await fetch(`${baseUrl}${beaconPath}`, { headers: { 'user-agent': userAgent, ...(cookieHeader(jar) === undefined ? {} : { cookie: cookieHeader(jar)! }) }, signal: AbortSignal.timeout(20_000) })
        await res.arrayBuffer()
        if (res.status === 200) {
          jar.beaconCached = true
          if ((res.headers.get('x-varnish') ?? '').trim().split(/\s+/).length === 2) beacon.hits++
        } else beacon.failures++
      } catch {
        beacon.failures++
      }
    }
    // The beacon's event: { type, ts } then path, segment, variant and, with a vo_bucket cookie, bucket.
    const base: Record<string, unknown> = { path: hero.page, segment: hero.segment, variant: hero.variant }
    if (view.bucket !== undefined) base.bucket = view.bucket
    view.viewSent = await sendEvent(jar, { type: 'view', ts: Date.now(), ...base })
    view.wouldConvert = plan.draw < (rates.get(hero.variant) ?? 0)
    if (view.wouldConvert) view.converted = await sendEvent(jar, { type: 'cta_click', ts: Date.now(), ...base })
    return view
  }

  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++
      if (i >= plans.length) return
      const due = started + i * slotMs
      const wait = due - performance.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
      views[i] = await visit(plans[i]!)
      done++
      options.onProgress?.(done, plans.length)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return { views, elapsedMs: performance.now() - started, beacon, eventFailures }
}
