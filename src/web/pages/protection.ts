/** The dashboard's protection view: is every PC's backup recent enough? */
import type { HostProtection } from '../../domain/protection.js';
import { formatAgo, formatTime } from '../format.js';
import { html, type SafeHtml } from '../html.js';
import { emptyState } from './layout.js';

function ageText(seconds: number | null): string {
  if (seconds === null) return '—';
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  if (seconds < 2 * 86400) return `${Math.floor(seconds / 3600)} h`;
  return `${Math.floor(seconds / 86400)} days`;
}

/** The status in words (not colour alone): overdue, protected, no backup yet, not scheduled. */
function status(p: HostProtection): SafeHtml {
  if (p.overdue) return html`<span class="badge state-failed">Overdue</span>`;
  if (!p.scheduled) return html`<span class="badge">Not scheduled</span>`;
  if (!p.lastGood) return html`<span class="badge state-queued">No backup yet</span>`;
  return html`<span class="badge state-done">Protected</span>`;
}

function inFuture(iso: string, now: number): string {
  const s = Math.round((Date.parse(iso) - now) / 1000);
  if (s < 60) return 'in under a minute';
  if (s < 3600) return `in ${Math.floor(s / 60)} min`;
  if (s < 86400) return `in ${Math.floor(s / 3600)} h`;
  return `in ${Math.floor(s / 86400)} days`;
}

export function protectionTable(rows: readonly HostProtection[], now = Date.now()): SafeHtml {
  if (rows.length === 0) return emptyState('No PCs registered yet. Register a PC and schedule its backup to see it here.');
  const overdue = rows.filter((r) => r.overdue).length;
  return html`${overdue > 0 ? html`<p class="error-text" id="overdue-count"><strong>${overdue} PC${overdue === 1 ? '' : 's'} overdue:</strong> the last good backup is older than the schedule allows.</p>` : ''}
<div class="table-wrap"><table class="protection"><thead><tr><th>PC</th><th>Status</th><th>Last good backup</th><th>Age</th><th>Next run</th><th>Last failure</th></tr></thead><tbody>
${rows.map((r) => html`<tr class="${r.overdue ? 'overdue' : ''}" data-mac="${r.mac}">
<td><a href="/hosts/${r.mac}">${r.name || r.mac}</a><br><span class="mono muted">${r.mac}</span></td>
<td>${status(r)}${r.overdue && r.overdueSince ? html`<br><span class="muted">for <time title="since ${formatTime(r.overdueSince)}">${ageText(Math.max(0, Math.floor((now - Date.parse(r.overdueSince)) / 1000)))}</time></span>` : ''}</td>
<td>${r.lastGood ? html`<time title="${formatTime(r.lastGood.at)}">${formatTime(r.lastGood.at)}</time><br><a href="/images/${r.lastGood.image}">${r.lastGood.image}</a>${r.lastGood.version !== null ? html` <span class="muted">v${r.lastGood.version}</span>` : ''}` : html`<span class="muted">never</span>`}</td>
<td>${ageText(r.ageSeconds)}${r.allowedAgeSeconds !== null ? html`<br><span class="muted">allowed ${ageText(r.allowedAgeSeconds)}</span>` : ''}</td>
<td>${r.nextRun ? html`<time title="${formatTime(r.nextRun)}">${inFuture(r.nextRun, now)}</time>` : html`<span class="muted">not scheduled</span>`}</td>
<td class="reason-cell">${r.lastFailure ? html`<span class="badge state-failed">${r.lastFailure.kind === 'missed' ? 'missed' : 'failed'}</span> <time title="${formatTime(r.lastFailure.at)}">${formatAgo(r.lastFailure.at, now)}</time><br>${r.lastFailure.taskId ? html`<a href="/tasks/${r.lastFailure.taskId}">${r.lastFailure.reason}</a>` : r.lastFailure.reason}` : html`<span class="muted">none</span>`}</td>
</tr>`)}
</tbody></table></div>`;
}

export function protectionCard(rows: readonly HostProtection[], now = Date.now()): SafeHtml {
  return html`<section class="card" id="protection"><header><h2>Protection</h2><a class="right" href="/settings/alerts">Alerts</a></header>${protectionTable(rows, now)}</section>`;
}
