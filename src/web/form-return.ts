/**
 * Where a form goes back to. Every form a page renders carries a hidden `back` field with that
 * page's own path (added next to its CSRF field, see withBackFields), so:
 * - a refused form redirects back to its page with the reason as a flash (POST-redirect-GET),
 *   and the address bar never shows the POST URL, which a reload would answer with "Not found";
 * - Cancel and the like return to the page they were pressed on. The Referer cannot tell: the
 *   server's own referrer policy (helmet: no-referrer) strips it.
 * htmx requests say their page in HX-Current-URL instead, which covers forms in polled fragments.
 * Only a same-origin path is followed, so a crafted form cannot send the browser elsewhere.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { routeClass } from './auth.js';
import type { HttpProblem } from './errors.js';
import { setFlash } from './flash.js';
import { escapeHtml } from './html.js';

export const BACK_FIELD = 'back';

const BASE = 'http://netclone.invalid';

/** A same-origin path with its query ("/hosts?q=lab"), or null for anything else. */
export function safeBack(value: unknown): string | null {
  if (typeof value !== 'string' || value.length === 0 || value.length > 1000) return null;
  // "//evil", "/\evil" and "https://evil" all leave the origin; control characters have no place in a path.
  if (!value.startsWith('/') || value.startsWith('//') || value.includes('\\') || [...value].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f)) return null;
  let url: URL;
  try {
    url = new URL(value, BASE);
  } catch {
    return null;
  }
  if (url.origin !== BASE) return null;
  const path = url.pathname + url.search;
  // Going "back" to a log-in or log-out would end the session or ask for the password again.
  if (/^\/(login|logout|setup)(\/|\?|$)/.test(path)) return null;
  return path;
}

/** The page a form was sent from: its `back` field, else (htmx) the page htmx says it is on. */
export function backOf(req: FastifyRequest): string | null {
  const body = req.body as Record<string, unknown> | null | undefined;
  const fromField = body && typeof body === 'object' ? safeBack(body[BACK_FIELD]) : null;
  if (fromField) return fromField;
  const current = req.headers['hx-current-url'];
  if (typeof current !== 'string') return null;
  try {
    const url = new URL(current);
    // Only a page of this server: the Host the browser used for this very request.
    if (url.host !== req.headers.host) return null;
    return safeBack(url.pathname + url.search);
  } catch {
    return null;
  }
}

/**
 * The page's URL without the fields a GET form carries along from the page's own forms (a form
 * sent with method GET, like "Check first", repeats the CSRF and back fields in its query): the
 * back path stays the page, not a page that nests its previous back path.
 */
function pageUrl(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const params = new URLSearchParams(url.slice(q + 1));
  params.delete(BACK_FIELD);
  params.delete('_csrf');
  const rest = params.toString();
  return rest ? `${url.slice(0, q)}?${rest}` : url.slice(0, q);
}

/**
 * The page as sent, with a `back` field after each CSRF field: every form has one, so the page's
 * path reaches every form without each page function knowing its own URL. Only GET pages: a page
 * rendered in answer to a POST is at the POST's URL, which is no place to go back to.
 */
export function withBackFields(page: string, req: FastifyRequest, csrfFieldHtml: string): string {
  if (req.method !== 'GET') return page;
  const back = safeBack(pageUrl(req.url));
  if (!back) return page;
  return page.split(csrfFieldHtml).join(`${csrfFieldHtml}<input type="hidden" name="${BACK_FIELD}" value="${escapeHtml(back)}">`);
}

/**
 * A page form that was refused (4xx): back to its page with the reason as a flash, instead of a
 * page at the POST URL. htmx shows the reason in #flash itself; it must not push the POST URL.
 * Returns the reply when it answered, null when the caller renders the problem as before.
 */
export function returnRefusedForm(req: FastifyRequest, reply: FastifyReply, problem: HttpProblem): FastifyReply | null {
  if (req.method !== 'POST' || problem.status >= 500 || routeClass(req) !== 'page') return null;
  if (req.headers['hx-request'] === 'true') {
    reply.header('HX-Push-Url', 'false');
    return null;
  }
  const back = backOf(req);
  if (!back || !setFlash(req, problem.message, 'error')) return null;
  return reply.redirect(back, 303);
}
