// robots.txt: the configured Disallow rules for every user agent and the absolute sitemap index URL.

export function robotsTxt(publicBaseUrl: string, disallow: readonly string[]): string {
  const rules = disallow.length === 0 ? ['Disallow:'] : disallow.map((path) => `Disallow: ${path}`)
  return ['User-agent: *', ...rules, '', `Sitemap: ${publicBaseUrl}/sitemap.xml`, ''].join('\n')
}
