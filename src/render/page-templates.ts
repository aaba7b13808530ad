// HTML templates for every page kind. Values are escaped by `html`; only page bodies, sanitized at
// write time, are inserted as markup.

import type { PageLink, PageRow, RelatedLink, VariantRow } from '../pages/page-repository.ts'
import { html, type SafeHtml, trustedHtml } from './html.ts'

interface Head {
  title: string
  description: string
  canonicalUrl: string
  ogType: string
  robots?: string
}

function layout(head: Head, main: SafeHtml): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${head.title}</title>
<meta name="description" content="${head.description}">
<link rel="canonical" href="${head.canonicalUrl}">
<meta name="robots" content="${head.robots ?? 'index, follow'}">
<meta property="og:type" content="${head.ogType}">
<meta property="og:title" content="${head.title}">
<meta property="og:description" content="${head.description}">
<meta property="og:url" content="${head.canonicalUrl}">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}a{color:#0b57d0}.cta{display:inline-block;padding:.6rem 1.2rem;background:#0b57d0;color:#fff;border-radius:.3rem;text-decoration:none}</style>
</head>
<body>
<header><nav><a href="/">Home</a></nav></header>
<main>
${main}
</main>
</body>
</html>
`.value
}

export function renderSeoPage(page: PageRow, related: readonly RelatedLink[] = []): string {
  return layout(
    { title: page.title, description: page.metaDescription, canonicalUrl: page.canonicalUrl, ogType: 'article' },
    html`<article>
<h1>${page.title}</h1>
${trustedHtml(page.bodyHtml)}
</article>
${
  related.length === 0
    ? ''
    : html`<aside class="related">
<h2>Related</h2>
<ul>
${related.map((r) => html`<li><a href="${r.path}">${r.title}</a></li>\n`)}</ul>
</aside>`
}`,
  )
}

/** The first-party beacon a page under experiment loads (routes/beacon.ts serves it). */
export const BEACON_PATH = '/assets/vo-beacon.js'

/**
 * `experiment`: the page is under experiment for this segment; the hero then names its page and the
 * beacon script reports views and CTA clicks with the variant shown (and the visitor's bucket, read
 * from the CDN's cookie by the script).
 */
export function renderLandingPage(page: PageRow, variant: VariantRow | undefined, experiment = false): string {
  if (variant === undefined) {
    // A segment without a variant gets the page's own content, never another segment's.
    return layout(
      { title: page.title, description: page.metaDescription, canonicalUrl: page.canonicalUrl, ogType: 'website' },
      html`<section class="hero">
<h1>${page.title}</h1>
${trustedHtml(page.bodyHtml)}
</section>`,
    )
  }
  return layout(
    { title: page.title, description: page.metaDescription, canonicalUrl: page.canonicalUrl, ogType: 'website' },
    html`<section class="hero" data-variant="${variant.id}" data-segment="${variant.segment}"${experiment ? html` data-page="${page.path}" data-experiment` : ''}>
<h1>${variant.headline}</h1>
<p class="subhead">${variant.subhead}</p>
<ul class="features">
${variant.features.map((f) => html`<li>${f}</li>\n`)}</ul>
<p><a class="cta" href="${safeHref(variant.ctaUrl)}">${variant.ctaLabel}</a></p>
<blockquote class="social-proof">${variant.socialProof}</blockquote>
</section>
<section class="about">
${trustedHtml(page.bodyHtml)}
</section>${experiment ? html`
<script src="${BEACON_PATH}" defer></script>` : ''}`,
  )
}

/** Only same-site paths and https links survive; anything else (javascript:, data:) becomes "#". */
export function safeHref(url: string): string {
  if (/^\/(?!\/)/.test(url) || /^https:\/\//i.test(url)) return url
  return '#'
}

export function renderNotFound(canonicalBase: string, path: string): string {
  return layout(
    { title: 'Page not found', description: 'This page does not exist.', canonicalUrl: `${canonicalBase}${path || '/'}`, ogType: 'website', robots: 'noindex' },
    html`<h1>Page not found</h1>
<p>${path === '' ? 'There is no page at this address.' : html`There is no page at <code>${path}</code>.`} <a href="/">See every page from the home page.</a></p>`,
  )
}

export function renderSiteIndex(canonicalBase: string, links: readonly PageLink[]): string {
  const landing = links.filter((l) => l.kind === 'landing')
  const verticals = [...new Set(links.filter((l) => l.kind === 'seo').map((l) => l.vertical))]
  return layout(
    {
      title: 'variant-origin demo site',
      description: 'Segment-personalized landing pages and programmatic SEO pages served by variant-origin.',
      canonicalUrl: `${canonicalBase}/`,
      ogType: 'website',
    },
    html`<h1>variant-origin demo site</h1>
<h2>Landing pages</h2>
<p>Each renders the variant nearest to its intent for your segment (send <code>X-Segment</code> or the <code>user_segment</code> cookie).</p>
<ul>
${landing.map((l) => html`<li><a href="${l.path}">${l.title}</a></li>\n`)}</ul>
${verticals.map(
  (vertical) => html`<h2>${vertical}</h2>
<ul>
${links.filter((l) => l.kind === 'seo' && l.vertical === vertical).map((l) => html`<li><a href="${l.path}">${l.title}</a> <small>(crawl weight ${l.crawlWeight.toFixed(2)})</small></li>\n`)}</ul>
`,
)}`,
  )
}
