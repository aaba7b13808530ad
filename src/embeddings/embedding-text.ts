// What a page's intent embedding is computed from: shared by ingest (which embeds new and changed
// pages) and re-embed (which embeds every page under a new model), so both hash and embed the same text.

export interface PageEmbeddingFields {
  intent_text: string
  title: string
  meta_description: string
}

/** The intent text when the page has one, else its title and meta description. */
export function pageEmbeddingText(page: PageEmbeddingFields): string {
  return page.intent_text !== '' ? page.intent_text : `${page.title}. ${page.meta_description}`
}
