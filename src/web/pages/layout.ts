import { html, type HtmlValue, type SafeHtml } from '../html.js';

export interface PageFrame {
  readonly title: string;
  /** Which nav entry is current. */
  readonly section: 'dashboard' | 'hosts' | 'groups' | 'schedules' | 'images' | 'tasks' | 'settings' | 'none';
  readonly csrf: string;
  readonly username: string | null;
  readonly body: HtmlValue;
  /** Shown above the content, e.g. after a redirect ("Host renamed"). */
  readonly notice?: string | null;
  /** An error notice: why the form the technician just sent was refused. */
  readonly noticeKind?: 'notice' | 'error';
}

// Errors (4xx) are swapped into #flash by the server's HX-Retarget header; this makes htmx swap them at all.
const HTMX_CONFIG = JSON.stringify({
  includeIndicatorStyles: false,
  allowEval: false,
  allowScriptTags: false,
  historyCacheSize: 0,
  responseHandling: [
    { code: '204', swap: false },
    { code: '[23]..', swap: true },
    { code: '[45]..', swap: true, error: true },
  ],
});

const NAV: ReadonlyArray<[PageFrame['section'], string, string]> = [
  ['dashboard', '/', 'Dashboard'],
  ['hosts', '/hosts', 'Hosts'],
  ['groups', '/groups', 'Groups'],
  ['schedules', '/schedules', 'Schedules'],
  ['images', '/images', 'Images'],
  ['tasks', '/tasks', 'Tasks'],
  ['settings', '/settings', 'Settings'],
];

export function page(frame: PageFrame): SafeHtml {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content="${HTMX_CONFIG}">
<title>${frame.title} · netclone</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/htmx.min.js" defer></script>
</head>
<body hx-boost="true" hx-headers="${JSON.stringify({ 'x-csrf-token': frame.csrf })}">
<header class="top">
  <a class="brand" href="/">netclone</a>
  ${frame.username
    ? html`<nav>${NAV.map(([key, href, label]) => html`<a href="${href}"${key === frame.section ? html` aria-current="page"` : ''}>${label}</a>`)}</nav>
  <form method="post" action="/logout" class="logout"><input type="hidden" name="_csrf" value="${frame.csrf}"><button class="link">Log out</button></form>`
    : ''}
</header>
<main>
  <div id="flash" aria-live="polite">${frame.notice ? (frame.noticeKind === 'error' ? html`<p class="error" role="alert">${frame.notice}</p>` : html`<p class="notice">${frame.notice}</p>`) : ''}</div>
  ${frame.body}
</main>
</body>
</html>`;
}

/** A hidden CSRF field for plain forms (they work without JavaScript too). */
export function csrfField(csrf: string): SafeHtml {
  return html`<input type="hidden" name="_csrf" value="${csrf}">`;
}

export function errorFragment(message: string): SafeHtml {
  return html`<p class="error" role="alert">${message}</p>`;
}

export function emptyState(message: HtmlValue): SafeHtml {
  return html`<div class="empty">${message}</div>`;
}
