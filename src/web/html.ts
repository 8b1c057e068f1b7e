/**
 * HTML templates without a template engine: one tagged template that escapes every
 * interpolated value unless it is already markup built by this module. Forgetting to
 * escape is impossible; marking text as trusted takes a visible `trusted(...)`.
 */
const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"'`]/g, (c) => ESCAPES[c]);
}

export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

export type HtmlValue = SafeHtml | string | number | boolean | null | undefined | readonly HtmlValue[];

function render(value: HtmlValue): string {
  if (value === null || value === undefined || value === false) return '';
  if (value instanceof SafeHtml) return value.value;
  if (Array.isArray(value)) return value.map(render).join('');
  return escapeHtml(String(value));
}

export function html(strings: TemplateStringsArray, ...values: HtmlValue[]): SafeHtml {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1];
  return new SafeHtml(out);
}

/** Markup that is known safe (constants written in this code base), never user data. */
export function trusted(markup: string): SafeHtml {
  return new SafeHtml(markup);
}

/** JSON for an HTML attribute value (hx-headers, hx-vals): escaped like any other text. */
export function jsonAttr(value: unknown): string {
  return JSON.stringify(value);
}
