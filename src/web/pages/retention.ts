/**
 * The image page's versions, retention and prune parts, and the store-wide space line (issue 13):
 * per version its date, source PC, size, changed bytes against the previous version, an editable
 * note and a protect toggle; the retention policy form; a dry-run preview of a prune.
 */
import type { ImageDetails } from '../../imaging/image-details.js';
import type { StoreSpace } from '../../imaging/store-space.js';
import { POLICY_KEYS, describePolicy, policyFlag, type RetentionPolicy } from '../../imaging/retention.js';
import type { PruneResult } from '../../domain/retention.js';
import { formatBytes, formatPercent, formatTime } from '../format.js';
import { html, type SafeHtml } from '../html.js';
import { csrfField, emptyState } from './layout.js';

const RULE_LABELS: Readonly<Record<(typeof POLICY_KEYS)[number], string>> = {
  keepLast: 'Last', keepHourly: 'Hourly', keepDaily: 'Daily', keepWeekly: 'Weekly', keepMonthly: 'Monthly',
};

type Version = ImageDetails['versions'][number] & { readonly sourceName?: string | null };

function sourceCell(v: Version): SafeHtml {
  if (!v.sourceMac) return html`<span title="${v.source}">${v.source}</span>`;
  return html`<a href="/hosts/${v.sourceMac}" title="${v.source}">${v.sourceName || v.sourceMac}</a>`;
}

function changedCell(v: Version): SafeHtml {
  if (v.previousVersion === null) return html`<span class="muted" title="first version: all its data is new">${formatBytes(v.changedBytes)} (first)</span>`;
  return html`<span title="${v.changedBytes} bytes of disk in chunks v${v.previousVersion} does not hold; ${formatBytes(v.changedStoredBytes)} new in the store">${formatBytes(v.changedBytes)}</span>`;
}

/** The versions table: newest first, as showImage sorts them. */
export function versionsTable(d: ImageDetails, csrf: string): SafeHtml {
  if (d.versions.length === 0) return emptyState('This image has no versions.');
  const vs = d.versions as readonly Version[];
  return html`<div class="table-wrap"><table class="versions">
<thead><tr><th>Version</th><th>Captured</th><th>From</th><th>Data / stored</th><th>Changed</th><th>Note</th><th>Protection</th></tr></thead>
<tbody>${vs.map((v) => html`<tr id="v${v.version}">
<td>v${v.version}</td><td>${formatTime(v.created)}</td><td>${sourceCell(v)}</td>
<td title="disk size ${formatBytes(v.size)}${v.dataBytes ? `; compression saves ${formatPercent(v.dataBytes - v.storedBytes, v.dataBytes)}` : ''}">${formatBytes(v.dataBytes)}<br><span class="muted">${formatBytes(v.storedBytes)} stored</span></td><td>${changedCell(v)}</td>
<td><form method="post" action="/images/${d.name}/versions/${v.version}/note" class="inline note-form">${csrfField(csrf)}<input name="note" value="${v.note}" maxlength="500" size="14" aria-label="Note for version ${v.version}" placeholder="add a note"> <button class="small">Save</button></form></td>
<td><form method="post" action="/images/${d.name}/versions/${v.version}/protect" class="inline">${csrfField(csrf)}<input type="hidden" name="protected" value="${v.protected ? '0' : '1'}">${v.protected ? html`<span class="badge state-done">protected</span><br>` : ''}<button class="small">${v.protected ? 'Unprotect' : 'Protect'}</button></form>
${v.protected ? '' : html`<br><form method="post" action="/images/${d.name}/versions/${v.version}/delete" class="inline" hx-confirm="Delete version ${v.version} of ${d.name}? This cannot be undone.">${csrfField(csrf)}<button class="danger small">Delete v${v.version}</button></form>`}</td>
</tr>`)}</tbody></table></div>`;
}

function policyInputs(p: RetentionPolicy | null): SafeHtml {
  return html`${POLICY_KEYS.map((k) => html`<label>${RULE_LABELS[k]} <input type="number" name="${k}" min="0" max="100000" step="1" inputmode="numeric" value="${p?.[k] ?? ''}" aria-label="${policyFlag(k)}"></label>`)}`;
}

/** The stored policy, its form, the dry-run preview button, and the preview when one was asked for. */
export function retentionSection(d: ImageDetails, csrf: string, preview: PruneResult | null): SafeHtml {
  const policy = d.retention;
  return html`<section class="card" id="retention"><h2>Retention</h2>
<p>${policy ? html`Policy: <strong>${describePolicy(policy)}</strong>, applied after each capture.` : html`No policy: the newest versions up to the configured keep-versions stay at each capture.`}
<span class="muted">Protected versions, versions a task uses and the newest version are always kept. Periods are the server's local time.</span></p>
<form method="post" action="/images/${d.name}/retention" class="row-form retention-form">${csrfField(csrf)}${policyInputs(preview?.policy ?? policy)}
<button name="do" value="save">Save policy</button><button name="do" value="preview" class="secondary">Preview prune</button></form>
${preview ? prunePreview(d.name, preview, csrf) : ''}
</section>`;
}

function prunePreview(name: string, r: PruneResult, csrf: string): SafeHtml {
  const going = r.decisions.filter((x) => !x.keep);
  return html`<div class="prune-preview" id="prune-preview"><h3>Dry run: ${describePolicy(r.policy)}</h3>
<div class="table-wrap"><table><thead><tr><th>Version</th><th>Captured</th><th></th><th>Why</th></tr></thead><tbody>
${r.decisions.map((x) => html`<tr><td>v${x.version}</td><td>${formatTime(x.created)}</td><td>${x.keep ? html`<span class="badge state-done">keep</span>` : html`<span class="badge state-failed">remove</span>`}</td><td>${x.keep ? x.reasons.map((y) => y.text).join(', ') : html`<span class="muted">no rule keeps it</span>`}</td></tr>`)}
</tbody></table></div>
${going.length === 0 ? html`<p>Nothing would be removed.</p>` : html`<form method="post" action="/images/${name}/prune" class="inline" hx-confirm="Remove ${going.length} version(s) of ${name}? This cannot be undone.">${csrfField(csrf)}${POLICY_KEYS.filter((k) => r.policy[k]).map((k) => html`<input type="hidden" name="${k}" value="${r.policy[k] ?? ''}">`)}<button class="danger">Remove ${going.length} version${going.length === 1 ? '' : 's'} now</button></form>`}
</div>`;
}

/** "The store holds X on disk for Y of version data": one line for the dashboard and the images list. */
export function storeSpaceLine(s: StoreSpace | null): SafeHtml {
  if (!s) return html`<p class="muted">The store's space could not be counted; see the server log.</p>`;
  if (s.versionCount === 0) return html`<p class="muted">The store holds no versions yet.</p>`;
  return html`<p class="store-space">The store holds <strong>${formatBytes(s.storedBytes)}</strong> on disk for <strong>${formatBytes(s.logicalBytes)}</strong> of data in ${s.versionCount} version${s.versionCount === 1 ? '' : 's'}${s.logicalBytes > 0 ? ` (saves ${formatPercent(s.logicalBytes - s.storedBytes, s.logicalBytes)})` : ''}:
dedup saves ${formatBytes(s.dedupSavings)}, compression ${formatBytes(s.compressionSavings)}.</p>`;
}
