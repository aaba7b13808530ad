import t from 'tap'
import { escapeHtml, html, trustedHtml } from '../../../src/render/html.ts'
import { renderLandingPage, renderNotFound, renderSeoPage, safeHref } from '../../../src/render/page-templates.ts'
import { sanitizeBodyHtml } from '../../../src/render/sanitize.ts'
import type { PageRow } from '../../../src/pages/page-repository.ts'

const hostile = `"><script>alert('x')</script><img src=x onerror=alert(1)>&`

t.test('escapeHtml escapes every character that can break out of text or an attribute', async (t) => {
  t.equal(escapeHtml(`<a href="x" title='y'>&\``), '&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&#96;')
})

t.test('html escapes values, nests its own output, and passes trusted markup through', async (t) => {
  const inner = html`<b>${'<i>'}</b>`
  t.equal(html`<p>${inner}${[html`<br>`, '<br>']}${null}${undefined}${3}</p>`.value, '<p><b>&lt;i&gt;</b><br>&lt;br&gt;3</p>')
  t.equal(html`${trustedHtml('<em>ok</em>')}`.toString(), '<em>ok</em>')
})

const page: PageRow = {
  id: 1,
  path: '/x',
  kind: 'seo',
  title: hostile,
  metaDescription: hostile,
  canonicalUrl: 'https://www.example.test/x?a="b"',
  bodyHtml: sanitizeBodyHtml(`<p>ok</p>${hostile}`),
  vertical: 'crm',
  template: 'seo',
  crawlWeight: 0.5,
  updatedAt: new Date(0),
}

t.test('page templates escape every interpolated value', async (t) => {
  for (const [name, out] of [
    ['seo', renderSeoPage(page)],
    ['landing without variant', renderLandingPage({ ...page, kind: 'landing' }, undefined)],
    [
      'landing with a hostile variant',
      renderLandingPage({ ...page, kind: 'landing' }, {
        id: 9, segment: 'smb', headline: hostile, subhead: hostile, features: [hostile, hostile], ctaLabel: hostile, ctaUrl: 'javascript:alert(1)', socialProof: hostile, updatedAt: new Date(0),
      }),
    ],
    ['not found', renderNotFound('https://www.example.test', '/<script>')],
  ] as const) {
    t.notMatch(out, /<script>/i, `${name}: no script tag`)
    t.notMatch(out, /<img/i, `${name}: no live img tag (its onerror stays inert text)`)
    t.notMatch(out, /javascript:/i, `${name}: no javascript: URL`)
    t.match(out, /^<!doctype html>/, `${name}: a full document`)
  }
  const seo = renderSeoPage(page)
  t.match(seo, '<title>&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;')
  t.match(seo, '<link rel="canonical" href="https://www.example.test/x?a=&quot;b&quot;">')
  t.match(seo, '<meta property="og:title" content="&quot;&gt;&lt;script&gt;')
  t.match(seo, '<meta property="og:url" content="https://www.example.test/x?a=&quot;b&quot;">')
})

t.test('bodies are sanitized at write time to a structural allowlist', async (t) => {
  t.equal(sanitizeBodyHtml('<p onclick="x()">hi <a href="javascript:x()">a</a> <a href="https://ok.example/">b</a></p><script>x()</script><iframe src="https://e"></iframe>'),
    '<p>hi <a>a</a> <a href="https://ok.example/">b</a></p>')
  t.equal(sanitizeBodyHtml('<h2>Title</h2><ul><li>one</li></ul>'), '<h2>Title</h2><ul><li>one</li></ul>')
})

t.test('CTA links: same-site paths and https only', async (t) => {
  t.equal(safeHref('/signup'), '/signup')
  t.equal(safeHref('https://app.example.test/x'), 'https://app.example.test/x')
  t.equal(safeHref('//evil.example'), '#')
  t.equal(safeHref('javascript:alert(1)'), '#')
  t.equal(safeHref('data:text/html,x'), '#')
})
