// Validation of ingest records, all of them before anything is written: every problem is reported
// with the record's position and field, so a content pipeline can fix a whole batch in one pass.

import { isCanonicalPagePath } from '../http/url-normalize.ts'
import { estimateTokens, MAX_TOKENS_PER_INPUT } from '../embeddings/embedder.ts'
import type { PageKind, PageStatus } from '../db/schema.ts'
import type { Problem } from '../errors.ts'
import { unstorableJson, unstorableText } from '../storable-text.ts'


export interface PageInput {
  path: string
  kind: PageKind
  title: string
  meta_description: string
  canonical_url: string | undefined
  body_html: string
  intent_text: string
  vertical: string
  template: string
  status: PageStatus
  crawl_weight: number | undefined
}

export interface VariantInput {
  /** The record's position in its batch, for problems found after validation (an unknown page). */
  record: number
  key: string
  segment: string
  /** The landing page the variant belongs to (its path), or undefined when it belongs to a vertical. */
  page: string | undefined
  /** The vertical whose landing pages share the variant, or undefined when it belongs to a page. */
  vertical: string | undefined
  headline: string
  subhead: string
  features: string[]
  cta_label: string
  cta_url: string
  social_proof: string
  metadata: Record<string, unknown>
  /** What the embedding is computed from; defaults to the visible copy. */
  text: string
}

const SLUG = /^[a-z0-9][a-z0-9_-]{0,63}$/
const KEY = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$/
const HTTPS_URL = /^https:\/\/[^/?#\s]+(\/\S*)?$/

class RecordReader {
  readonly problems: Problem[]
  private readonly record: Record<string, unknown>
  private readonly index: number
  constructor(record: Record<string, unknown>, index: number, problems: Problem[]) {
    this.record = record
    this.index = index
    this.problems = problems
  }

  fail(field: string, message: string): void {
    this.problems.push({ record: this.index, field, message })
  }

  string(field: string, options: { required?: boolean; max: number; min?: number; pattern?: RegExp; what?: string; fallback?: string }): string {
    const value = this.record[field]
    if (value === undefined || value === null) {
      if (options.required === true) this.fail(field, 'is required')
      return options.fallback ?? ''
    }
    if (typeof value !== 'string') {
      this.fail(field, `must be a string, got ${Array.isArray(value) ? 'array' : typeof value}`)
      return ''
    }
    // What the database cannot store is reported instead of the field's other checks, and read as absent.
    const unstorable = unstorableText(value)
    if (unstorable !== undefined) {
      this.fail(field, unstorable)
      return ''
    }
    // An empty required field is a missing one (an empty path or kind would only fail in the database).
    if (value === '' && options.required === true) this.fail(field, 'is required')
    else if (value.length < (options.min ?? 0)) this.fail(field, `must be at least ${options.min} characters`)
    else if (value.length > options.max) this.fail(field, `must be at most ${options.max} characters (got ${value.length})`)
    else if (options.pattern !== undefined && !options.pattern.test(value)) this.fail(field, `must be ${options.what ?? `like ${options.pattern}`}`)
    return value
  }
}

function asObject(value: unknown, index: number, problems: Problem[]): Record<string, unknown> | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    problems.push({ record: index, field: '(record)', message: 'must be a JSON object' })
    return undefined
  }
  return value as Record<string, unknown>
}

function unknownFields(record: Record<string, unknown>, allowed: ReadonlySet<string>, reader: RecordReader): void {
  for (const key of Object.keys(record)) if (!allowed.has(key)) reader.fail(key, 'is not a known field')
}

const PAGE_FIELDS = new Set(['path', 'kind', 'title', 'meta_description', 'canonical_url', 'body_html', 'intent_text', 'vertical', 'template', 'status', 'crawl_weight'])

export function validatePages(records: readonly unknown[], publicBaseUrl: string): { pages: PageInput[]; problems: Problem[] } {
  const problems: Problem[] = []
  const pages: PageInput[] = []
  const seen = new Map<string, number>()
  records.forEach((raw, index) => {
    const record = asObject(raw, index, problems)
    if (record === undefined) return
    const r = new RecordReader(record, index, problems)
    unknownFields(record, PAGE_FIELDS, r)
    const path = r.string('path', { required: true, max: 1024 })
    if (path !== '' && !isCanonicalPagePath(path)) r.fail('path', 'must be a canonical path: lower-case a-z 0-9 . _ ~ -, starting with /, no trailing slash, no . or .. segments')
    const previous = seen.get(path)
    if (previous !== undefined) r.fail('path', `duplicates record ${previous} in this batch`)
    seen.set(path, index)
    const kind = r.string('kind', { required: true, max: 10 })
    if (kind !== '' && kind !== 'landing' && kind !== 'seo') r.fail('kind', 'must be "landing" or "seo"')
    const status = r.string('status', { max: 10, fallback: 'published' })
    if (!['published', 'draft', 'archived'].includes(status)) r.fail('status', 'must be "published", "draft" or "archived"')
    // An empty canonical_url is none given: the page points at itself, like a missing one.
    const canonical = record.canonical_url === '' ? '' : r.string('canonical_url', { max: 2048, pattern: HTTPS_URL, what: 'an absolute https URL such as https://www.example.com/path' })
    // A canonical URL names a document: a fragment is not part of it, and sitemaps list it verbatim.
    if (HTTPS_URL.test(canonical) && canonical.includes('#')) r.fail('canonical_url', 'must not contain a fragment (#...)')
    const intent = r.string('intent_text', { max: 20_000 })
    if (estimateTokens(intent) > MAX_TOKENS_PER_INPUT) r.fail('intent_text', `is too long to embed (about ${estimateTokens(intent)} tokens; the limit is ${MAX_TOKENS_PER_INPUT})`)
    let crawlWeight: number | undefined
    const weight = record.crawl_weight
    if (weight !== undefined && weight !== null) {
      if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0 || weight > 1) r.fail('crawl_weight', 'must be a number from 0 to 1')
      else crawlWeight = weight
    }
    const page: PageInput = {
      path,
      kind: kind as PageKind,
      title: r.string('title', { required: true, min: 1, max: 300 }),
      meta_description: r.string('meta_description', { max: 500 }),
      canonical_url: canonical === '' ? undefined : canonical,
      body_html: r.string('body_html', { max: 500_000 }),
      intent_text: intent,
      vertical: r.string('vertical', { max: 64, pattern: SLUG, what: 'a slug: lower-case letters, digits, - and _', fallback: 'general' }),
      template: r.string('template', { max: 64, pattern: SLUG, what: 'a slug: lower-case letters, digits, - and _', fallback: kind === 'landing' ? 'landing' : 'seo' }),
      status: status as PageStatus,
      crawl_weight: crawlWeight,
    }
    if (page.canonical_url === undefined && path !== '') page.canonical_url = `${publicBaseUrl}${path}`
    pages.push(page)
  })
  return { pages, problems }
}

const VARIANT_FIELDS = new Set(['key', 'segment', 'page', 'vertical', 'headline', 'subhead', 'features', 'cta_label', 'cta_url', 'social_proof', 'metadata', 'text'])

/** `knownSegments` undefined skips the segment check (the CLI checks segments against the database per batch). */
export function validateVariants(records: readonly unknown[], knownSegments: ReadonlySet<string> | undefined): { variants: VariantInput[]; problems: Problem[] } {
  const problems: Problem[] = []
  const variants: VariantInput[] = []
  const seen = new Map<string, number>()
  records.forEach((raw, index) => {
    const record = asObject(raw, index, problems)
    if (record === undefined) return
    const r = new RecordReader(record, index, problems)
    unknownFields(record, VARIANT_FIELDS, r)
    const key = r.string('key', { required: true, max: 200, pattern: KEY, what: 'letters, digits, . _ : - (up to 200)' })
    const previous = seen.get(key)
    if (previous !== undefined) r.fail('key', `duplicates record ${previous} in this batch`)
    seen.set(key, index)
    const segment = r.string('segment', { required: true, max: 64 })
    if (segment !== '' && knownSegments !== undefined && !knownSegments.has(segment)) r.fail('segment', `is not a known segment (known: ${[...(knownSegments ?? [])].sort().join(', ')})`)
    // Exactly one scope: the landing page the copy is written for, or a vertical whose landing pages share it.
    const page = r.string('page', { max: 1024 })
    if (page !== '' && !isCanonicalPagePath(page)) r.fail('page', 'must be the canonical path of a landing page, such as /crm')
    const vertical = r.string('vertical', { max: 64, pattern: SLUG, what: 'a vertical slug: lower-case letters, digits, - and _' })
    const given = (value: unknown): boolean => value !== undefined && value !== null && value !== ''
    if (!given(record.page) && !given(record.vertical)) r.fail('page', 'is required: give the landing page this variant belongs to ("page": "/crm"), or "vertical" for copy shared by a vertical\'s landing pages')
    else if (given(record.page) && given(record.vertical)) r.fail('vertical', 'give "page" or "vertical", not both: a variant belongs to one landing page or to one vertical')
    let features: string[] = []
    const rawFeatures = record.features
    if (rawFeatures !== undefined) {
      if (!Array.isArray(rawFeatures) || rawFeatures.length > 12 || rawFeatures.some((f) => typeof f !== 'string' || f.length === 0 || f.length > 200)) {
        r.fail('features', 'must be an array of at most 12 non-empty strings of at most 200 characters')
      } else {
        features = rawFeatures as string[]
        features.forEach((feature, i) => {
          const unstorable = unstorableText(feature)
          if (unstorable !== undefined) r.fail(`features[${i}]`, unstorable)
        })
      }
    }
    const ctaUrl = r.string('cta_url', { max: 2048, fallback: '' })
    if (ctaUrl !== '' && !(/^\/(?!\/)\S*$/.test(ctaUrl) || HTTPS_URL.test(ctaUrl))) r.fail('cta_url', 'must be a path on this site (/signup) or an absolute https URL')
    let metadata: Record<string, unknown> = {}
    if (record.metadata !== undefined) {
      if (typeof record.metadata !== 'object' || record.metadata === null || Array.isArray(record.metadata)) r.fail('metadata', 'must be a JSON object')
      else if (JSON.stringify(record.metadata).length > 10_000) r.fail('metadata', 'must be at most 10,000 characters as JSON')
      else {
        // jsonb refuses \u0000 and unpaired surrogates in any key or string, at any depth.
        const unstorable = unstorableJson(record.metadata, 'metadata')
        if (unstorable !== undefined) r.fail(unstorable.path, unstorable.message)
        else metadata = record.metadata as Record<string, unknown>
      }
    }
    const variant: VariantInput = {
      record: index,
      key,
      segment,
      page: page === '' ? undefined : page,
      vertical: vertical === '' ? undefined : vertical,
      headline: r.string('headline', { required: true, min: 1, max: 300 }),
      subhead: r.string('subhead', { max: 500 }),
      features,
      cta_label: r.string('cta_label', { max: 100 }),
      cta_url: ctaUrl,
      social_proof: r.string('social_proof', { max: 500 }),
      metadata,
      text: r.string('text', { max: 20_000 }),
    }
    if (variant.text === '') variant.text = [variant.headline, variant.subhead, ...variant.features, variant.social_proof].filter((s) => s !== '').join('. ')
    if (estimateTokens(variant.text) > MAX_TOKENS_PER_INPUT) r.fail('text', `is too long to embed (the limit is ${MAX_TOKENS_PER_INPUT} tokens)`)
    variants.push(variant)
  })
  return { variants, problems }
}

export interface SegmentInput {
  slug: string
  description: string
  utm_sources: string[]
  is_default: boolean
}

const SEGMENT_FIELDS = new Set(['slug', 'description', 'utm_sources', 'is_default'])

export function validateSegments(records: readonly unknown[]): { segments: SegmentInput[]; problems: Problem[] } {
  const problems: Problem[] = []
  const segments: SegmentInput[] = []
  const seen = new Map<string, number>()
  records.forEach((raw, index) => {
    const record = asObject(raw, index, problems)
    if (record === undefined) return
    const r = new RecordReader(record, index, problems)
    unknownFields(record, SEGMENT_FIELDS, r)
    const slug = r.string('slug', { required: true, max: 32, pattern: /^[a-z0-9][a-z0-9_-]{0,31}$/, what: 'a slug of up to 32 lower-case letters, digits, - and _' })
    const previous = seen.get(slug)
    if (previous !== undefined) r.fail('slug', `duplicates record ${previous} in this batch`)
    seen.set(slug, index)
    let utm: string[] = []
    if (record.utm_sources !== undefined) {
      if (!Array.isArray(record.utm_sources) || record.utm_sources.some((u) => typeof u !== 'string' || !/^[\w.-]{1,64}$/.test(u))) {
        r.fail('utm_sources', 'must be an array of utm_source values (letters, digits, . _ -)')
      } else utm = (record.utm_sources as string[]).map((u) => u.toLowerCase())
    }
    if (record.is_default !== undefined && typeof record.is_default !== 'boolean') r.fail('is_default', 'must be true or false')
    segments.push({ slug, description: r.string('description', { max: 500 }), utm_sources: utm, is_default: record.is_default === true })
  })
  if (segments.filter((s) => s.is_default).length > 1) problems.push({ record: -1, field: 'is_default', message: 'at most one segment can be the default' })
  return { segments, problems }
}
