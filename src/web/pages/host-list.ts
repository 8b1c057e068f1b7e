/** The hosts list's search form, match count and export links (the table itself is hosts.ts hostsTable). */
import { html, type SafeHtml } from '../html.js';
import { HOST_STATES, hostFilterQuery, isFiltered, type HostFilter } from '../host-filter.js';

function options(values: readonly string[], selected: string, any: string): SafeHtml {
  return html`<option value="">${any}</option>${values.map((v) => html`<option value="${v}"${v === selected ? ' selected' : ''}>${v}</option>`)}`;
}

/**
 * A plain GET form (works without JavaScript); with htmx it swaps only the list as the technician
 * types and keeps the address bar on /hosts?… so reload and bookmarks show the same list.
 */
export function hostFilterForm(f: HostFilter, choices: { models: readonly string[]; groups: readonly string[] }): SafeHtml {
  return html`<form method="get" action="/hosts" class="card row-form filter" role="search"
 hx-get="/hosts" hx-select="#hosts-list" hx-target="#hosts-list" hx-swap="outerHTML" hx-push-url="true"
 hx-trigger="input changed delay:300ms from:find input, change from:find select, submit">
<label>Search <input type="search" name="q" value="${f.q}" placeholder="name, MAC, model, serial, group" autocomplete="off" spellcheck="false"></label>
<label>Model <select name="model">${options(choices.models, f.model, 'any')}</select></label>
<label>Group <select name="group">${options(choices.groups, f.group, 'any')}</select></label>
<label>State <select name="state">${options(HOST_STATES, f.state, 'any')}</select></label>
<button>Filter</button>${isFiltered(f) ? html`<a href="/hosts">clear</a>` : ''}
</form>`;
}

/** What the filter matched and the exports of it; wraps the table so one swap updates both. */
export function hostList(f: HostFilter, shown: number, total: number, table: SafeHtml): SafeHtml {
  const query = hostFilterQuery(f);
  const filtered = isFiltered(f);
  return html`<div id="hosts-list">
<p class="hint list-meta">${filtered ? `${shown} of ${total} PCs match.` : `${total} PC${total === 1 ? '' : 's'}.`}
 Export as CSV: <a href="/api/v1/hosts.csv${query}" download>inventory${filtered ? ' of these PCs' : ''}</a> · <a href="/api/v1/tasks.csv" download>task history</a></p>
${table}
</div>`;
}
