// Auto-escaping HTML templates: every interpolated value is escaped unless it was produced by `html`
// itself or explicitly marked as already-sanitized markup with `trustedHtml`.

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' }

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"'`]/g, (ch) => ESCAPES[ch] ?? ch)
}

export class SafeHtml {
  readonly value: string
  constructor(value: string) {
    this.value = value
  }
  toString(): string {
    return this.value
  }
}

/** Marks markup that was sanitized when it was written (page bodies) so it is not escaped again. */
export function trustedHtml(markup: string): SafeHtml {
  return new SafeHtml(markup)
}

type Interpolation = SafeHtml | string | number | null | undefined | readonly Interpolation[]

function render(value: Interpolation): string {
  if (value === null || value === undefined) return ''
  if (value instanceof SafeHtml) return value.value
  if (Array.isArray(value)) return value.map((v: Interpolation) => render(v)).join('')
  return escapeHtml(String(value))
}

export function html(strings: TemplateStringsArray, ...values: Interpolation[]): SafeHtml {
  let out = strings[0] ?? ''
  for (let i = 0; i < values.length; i++) out += render(values[i]) + (strings[i + 1] ?? '')
  return new SafeHtml(out)
}
