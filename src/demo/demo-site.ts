// The demo site loaded on the first start of an empty embedded database: 540 programmatic-SEO pages
// over 3 verticals with spread crawl weights, 4 segments, and 3 landing pages with a variant per segment.

import { type Kysely, sql } from 'kysely'
import type { Database } from '../db/schema.ts'
import { fnv1a32 } from '../hash.ts'
import { embeddingHash } from '../embeddings/embedder.ts'
import { LOCAL_EMBEDDING_MODEL, localEmbedding } from '../embeddings/local-embedder.ts'
import { toPgVector } from '../db/pg-vector.ts'
import type { VariantInput } from '../ingest/validation.ts'
import { sanitizeBodyHtml } from '../render/sanitize.ts'

export const EMBEDDING_DIMENSIONS = 1536

export const DEMO_SEGMENTS = [
  { slug: 'general', description: 'Everyone without a known segment', utm_sources: [] as string[], is_default: true },
  { slug: 'enterprise', description: 'Large companies, procurement and security reviews', utm_sources: ['linkedin'], is_default: false },
  { slug: 'smb', description: 'Small businesses buying on price and speed', utm_sources: ['google', 'bing'], is_default: false },
  { slug: 'developer', description: 'Engineers evaluating APIs and integrations', utm_sources: ['github', 'hackernews'], is_default: false },
]

const VERTICALS = {
  crm: { name: 'CRM', noun: 'customer relationship management software', verb: 'track every lead and close more deals' },
  payroll: { name: 'Payroll', noun: 'payroll software', verb: 'pay your team on time and stay compliant' },
  helpdesk: { name: 'Help desk', noun: 'help desk software', verb: 'answer every customer ticket faster' },
} as const
type Vertical = keyof typeof VERTICALS

const INDUSTRIES = ['dentists', 'law-firms', 'restaurants', 'real-estate', 'plumbers', 'accountants', 'gyms', 'clinics', 'agencies', 'retailers', 'schools', 'nonprofits']
const CITIES = ['austin', 'boston', 'chicago', 'denver', 'miami', 'seattle', 'portland', 'atlanta', 'phoenix', 'dallas', 'detroit', 'nashville', 'san-diego', 'new-york', 'los-angeles']

const titleCase = (slug: string): string => slug.split('-').map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join(' ')

/** Spread, skewed crawl weights (most pages get little search demand, a few get a lot), fixed per path. */
export function demoCrawlWeight(path: string): number {
  const unit = fnv1a32(`weight:${path}`) / 0xffffffff
  return Math.round(unit ** 2.5 * 1000) / 1000
}

interface DemoPage {
  path: string
  kind: 'landing' | 'seo'
  title: string
  meta_description: string
  body_html: string
  intent_text: string
  vertical: string
  template: string
  crawl_weight: number
}

export function demoPages(): DemoPage[] {
  const pages: DemoPage[] = []
  for (const [vertical, v] of Object.entries(VERTICALS) as Array<[Vertical, (typeof VERTICALS)[Vertical]]>) {
    pages.push({
      path: `/${vertical}`,
      kind: 'landing',
      title: `${v.name} that fits how you work`,
      meta_description: `${v.name}: ${v.verb}.`,
      body_html: sanitizeBodyHtml(`<p>Our ${v.noun} helps you ${v.verb}.</p>`),
      intent_text: `${v.noun} ${v.name} ${v.verb}`,
      vertical,
      template: 'landing',
      crawl_weight: 1,
    })
    for (const industry of INDUSTRIES) {
      for (const city of CITIES) {
        const path = `/${vertical}/${industry}/${city}`
        const who = titleCase(industry)
        const where = titleCase(city)
        pages.push({
          path,
          kind: 'seo',
          title: `${v.name} for ${who} in ${where}`,
          meta_description: `Compare ${v.noun} for ${who.toLowerCase()} in ${where}: pricing, features and local support.`,
          body_html: sanitizeBodyHtml(
            `<p>${who} in ${where} use ${v.noun} to ${v.verb}.</p>` +
              `<h2>What ${who.toLowerCase()} in ${where} need</h2>` +
              `<ul><li>Set-up in a day</li><li>Support in your time zone</li><li>Pricing that scales with your team</li></ul>` +
              `<p>See also <a href="/${vertical}">${v.name} overview</a>.</p>`,
          ),
          intent_text: `${v.noun} for ${industry.replace('-', ' ')} in ${city.replace('-', ' ')}`,
          vertical,
          template: 'seo',
          crawl_weight: demoCrawlWeight(path),
        })
      }
    }
  }
  return pages
}

const SEGMENT_VOICE: Record<string, { headline: (n: string) => string; subhead: string; features: string[]; cta: string; proof: string }> = {
  general: {
    headline: (n) => `${n} that just works`,
    subhead: 'Start free, no credit card needed.',
    features: ['Simple set-up', 'Friendly support', 'Fair pricing'],
    cta: 'Start free',
    proof: 'Trusted by 10,000 teams.',
  },
  enterprise: {
    headline: (n) => `${n} for the enterprise: SSO, audit logs and a 99.99% SLA`,
    subhead: 'SOC 2 Type II, data residency and a named account team.',
    features: ['SAML single sign-on', 'Audit logs and retention controls', 'Dedicated success manager'],
    cta: 'Talk to sales',
    proof: 'Chosen by 40 of the Fortune 500.',
  },
  smb: {
    headline: (n) => `${n} for small businesses, live in 10 minutes`,
    subhead: 'One flat monthly price, cancel any time.',
    features: ['No set-up fee', 'Mobile app included', 'Phone support'],
    cta: 'Try it free for 14 days',
    proof: '4.8 stars from 2,000 small business owners.',
  },
  developer: {
    headline: (n) => `${n} with a real API: webhooks, SDKs and sandbox keys`,
    subhead: 'REST and GraphQL, idempotent writes, OpenAPI spec.',
    features: ['Typed SDKs for TypeScript, Go and Python', 'Webhooks with retries', 'Free sandbox'],
    cta: 'Read the API docs',
    proof: 'Stars on GitHub from 5,000 developers.',
  },
}

/** A demo variant: what ingest accepts (VariantInput), keyed by variant_key as the table stores it. */
export function demoVariants(): Array<Omit<VariantInput, 'key' | 'metadata' | 'record' | 'vertical' | 'page'> & { variant_key: string; page: string }> {
  const variants = []
  for (const [vertical, v] of Object.entries(VERTICALS)) {
    for (const segment of DEMO_SEGMENTS) {
      const voice = SEGMENT_VOICE[segment.slug]
      if (voice === undefined) continue
      const headline = voice.headline(v.name)
      variants.push({
        variant_key: `demo-${vertical}-${segment.slug}`,
        segment: segment.slug,
        // Each landing page's own copy: /crm never shows the payroll product's headline.
        page: `/${vertical}`,
        headline,
        subhead: voice.subhead,
        features: voice.features,
        cta_label: voice.cta,
        cta_url: `/${vertical}`,
        social_proof: voice.proof,
        // The embedded text names the vertical, so the nearest variant of a segment is its vertical's.
        text: `${v.noun} ${v.name} ${v.verb} ${headline} ${voice.subhead}`,
      })
    }
  }
  return variants
}

export interface SeedResult {
  seeded: boolean
  pages: number
  variants: number
}

/** Loads the demo site when the database has no pages. Idempotent: every insert is ON CONFLICT DO NOTHING. */
export async function seedDemoSite(db: Kysely<Database>, publicBaseUrl: string): Promise<SeedResult> {
  const existing = await db.selectFrom('pages').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()
  if (Number(existing.n) > 0) return { seeded: false, pages: 0, variants: 0 }

  const pages = demoPages()
  const variants = demoVariants()
  await db.transaction().execute(async (trx) => {
    await trx.insertInto('segments').values(DEMO_SEGMENTS).onConflict((oc) => oc.doNothing()).execute()

    let version = await trx.selectFrom('embedding_versions').select('id').where('active', '=', true).executeTakeFirst()
    if (version === undefined) {
      version = await trx
        .insertInto('embedding_versions')
        .values({ model: LOCAL_EMBEDDING_MODEL, dimensions: EMBEDDING_DIMENSIONS, active: true })
        .returning('id')
        .executeTakeFirstOrThrow()
    }
    const versionId = version.id

    // Multi-row inserts in chunks: set-based, and each statement stays a few MB of vector text.
    for (let i = 0; i < pages.length; i += 100) {
      const chunk = pages.slice(i, i + 100).map((p) => ({
        ...p,
        canonical_url: `${publicBaseUrl}${p.path}`,
        intent_embedding: toPgVector(localEmbedding(p.intent_text, EMBEDDING_DIMENSIONS)),
        intent_hash: embeddingHash(LOCAL_EMBEDDING_MODEL, EMBEDDING_DIMENSIONS, p.intent_text),
        embedding_version: versionId,
      }))
      await trx.insertInto('pages').values(chunk).onConflict((oc) => oc.column('path').doNothing()).execute()
    }
    const landing = await trx.selectFrom('pages').select(['id', 'path']).where('kind', '=', 'landing').execute()
    const pageIds = new Map(landing.map((p) => [p.path, Number(p.id)]))
    const rows = variants.map(({ text, features, page, ...v }) => ({
      ...v,
      page_id: pageIds.get(page)!,
      vertical: null,
      features: JSON.stringify(features),
      metadata: JSON.stringify({ source: 'demo' }),
      embedding: toPgVector(localEmbedding(text, EMBEDDING_DIMENSIONS)),
      vector_version: versionId,
      content_hash: embeddingHash(LOCAL_EMBEDDING_MODEL, EMBEDDING_DIMENSIONS, text),
      embedding_text: text,
    }))
    await trx.insertInto('content_variants').values(rows).onConflict((oc) => oc.columns(['variant_key', 'vector_version']).doNothing()).execute()
    // Keeps the planner's view of the fresh tables honest for the first requests.
    await sql`ANALYZE pages, content_variants`.execute(trx)
  })
  return { seeded: true, pages: pages.length, variants: variants.length }
}
