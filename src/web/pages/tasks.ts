import { transportOf, type TaskRecord } from '../../domain/database.js';
import { isActive } from '../../domain/tasks.js';
import { formatAgo, formatBytes, formatDuration, formatTime } from '../format.js';
import { html, type SafeHtml } from '../html.js';
import { csrfField, emptyState } from './layout.js';
import { coverageWords } from './progress-words.js';

const STATE_WORDS: Record<TaskRecord['state'], string> = {
  queued: 'queued — waiting for the PC to network-boot',
  booting: 'booting the imaging client',
  running: 'transferring',
  verifying: 'verifying',
  done: 'done',
  failed: 'failed',
  cancelled: 'cancelled',
};

export function stateBadge(state: string): SafeHtml {
  return html`<span class="badge state-${state.replace(/\s+/g, '-')}">${state}</span>`;
}

/** The live part of one task: polls itself every second while the task is active. */
export function taskProgress(task: TaskRecord): SafeHtml {
  const active = isActive(task);
  const p = task.progress;
  const poll = active ? html` hx-get="/tasks/${task.id}/progress" hx-trigger="every 1s" hx-swap="outerHTML"` : '';
  const known = p.total > 0;
  const words = coverageWords(task);
  return html`<div class="progress" id="progress-${task.id}" data-state="${task.state}"${poll}>
  <div class="progress-head">${stateBadge(task.state)} <span class="muted">${STATE_WORDS[task.state]}</span></div>
  ${task.state === 'running' || task.state === 'verifying' || task.state === 'done'
    ? html`<progress max="100" value="${known ? p.percent : 0}" aria-label="progress of ${task.kind} ${task.image}">${p.percent} %</progress>
  <div class="progress-numbers">
    <span class="pct">${known ? `${p.percent} %` : '—'}</span>
    <span class="covered">${words.covered}${words.wire ? `, ${words.wire}` : ''}</span>
    ${active ? html`<span>${p.mbps > 0 ? `${p.mbps} MB/s` : 'measuring speed…'}</span>
    <span>${p.etaSeconds !== null ? `about ${formatDuration(p.etaSeconds)} left` : ''}</span>` : ''}
  </div>
  ${words.reused ? html`<div class="progress-summary muted">${words.reused}</div>` : ''}`
    : ''}
  ${task.state === 'failed' || task.state === 'cancelled' ? html`<p class="reason">${task.reason ?? 'no reason recorded'}</p>` : ''}
</div>`;
}

export function cancelButton(task: TaskRecord, csrf: string): SafeHtml | '' {
  if (!isActive(task)) return '';
  return html`<form method="post" action="/tasks/${task.id}/cancel" class="inline" hx-confirm="Cancel the ${task.kind} of ${task.image} on ${task.mac}?">
  ${csrfField(csrf)}<button class="danger small">Cancel</button></form>`;
}

export function taskCard(task: TaskRecord, csrf: string, hostName: string): SafeHtml {
  return html`<article class="card task" id="task-${task.id}">
  <header><strong>${task.kind === 'capture' ? 'Capture' : 'Deploy'}</strong> <a href="/images/${task.image}">${task.image}</a>
  ${task.kind === 'capture' ? '←' : '→'} <a href="/hosts/${task.mac}">${hostName || task.mac}</a>
  <span class="muted right" title="${formatTime(task.createdAt)}">${formatAgo(task.createdAt)}</span></header>
  ${taskProgress(task)}
  <footer><a href="/tasks/${task.id}">details</a> ${cancelButton(task, csrf)}</footer>
</article>`;
}

/** Active tasks, refreshed as a whole every second so new and finished tasks show up too. */
export function activeTasks(tasks: readonly TaskRecord[], csrf: string, names: Map<string, string>): SafeHtml {
  return html`<div id="active-tasks" hx-get="/tasks/active" hx-trigger="every 1s" hx-swap="outerHTML">
  ${tasks.length === 0
    ? emptyState(html`Nothing is running. Start a capture or deploy from a <a href="/hosts">host's page</a>.`)
    : html`<div class="cards">${tasks.map((t) => taskCard(t, csrf, names.get(t.mac) ?? ''))}</div>`}
</div>`;
}

export function taskHistory(tasks: readonly TaskRecord[], names: Map<string, string>, empty = 'No finished tasks yet.'): SafeHtml {
  if (tasks.length === 0) return emptyState(empty);
  return html`<div class="table-wrap"><table>
<thead><tr><th>When</th><th>Kind</th><th>Image</th><th>Host</th><th>State</th><th>Size</th><th>Took</th><th>Reason</th></tr></thead>
<tbody>${tasks.map((t) => {
    const took = t.startedAt && t.finishedAt ? (Date.parse(t.finishedAt) - Date.parse(t.startedAt)) / 1000 : null;
    return html`<tr>
<td title="${formatTime(t.createdAt)}"><a href="/tasks/${t.id}">${formatAgo(t.createdAt)}</a></td>
<td>${t.kind}</td><td><a href="/images/${t.image}">${t.image}</a></td>
<td><a href="/hosts/${t.mac}">${names.get(t.mac) || t.mac}</a></td>
<td>${stateBadge(t.state)}</td><td>${t.progress.total ? formatBytes(t.progress.total) : '—'}</td>
<td>${formatDuration(took)}</td><td class="reason-cell">${t.reason ?? ''}</td></tr>`;
  })}</tbody></table></div>`;
}

export function taskDetail(task: TaskRecord, csrf: string, hostName: string): SafeHtml {
  return html`<h1>${task.kind === 'capture' ? 'Capture' : 'Deploy'} of ${task.image}</h1>
<p class="muted">Task ${task.id} · host <a href="/hosts/${task.mac}">${hostName || task.mac}</a> · created ${formatTime(task.createdAt)}</p>
<section class="card">${taskProgress(task)}<footer>${cancelButton(task, csrf)}</footer></section>
<section class="card"><h2>Details</h2><dl class="facts">
<dt>State</dt><dd>${stateBadge(task.state)}</dd>
<dt>Disk</dt><dd>${task.disk ? `${task.disk.name} (${formatBytes(task.disk.size)}, serial ${task.disk.serial || 'unknown'})` : 'not chosen yet'}</dd>
<dt>Client address</dt><dd>${task.clientIp ?? '—'}</dd>
<dt>Started</dt><dd>${formatTime(task.startedAt)}</dd>
<dt>Finished</dt><dd>${formatTime(task.finishedAt)}</dd>
<dt>Afterwards</dt><dd>${task.after}</dd>
<dt>Transport</dt><dd>${transportOf(task) === 'chunks' ? 'chunks (the imaging agent sends only what changed)' : 'NBD (every byte of the disk)'}</dd>
${task.kind === 'deploy' ? html`<dt>Version</dt><dd>${task.version !== undefined ? `version ${task.version}` : 'the newest when the PC starts'}</dd>` : ''}
${task.mainPartition !== undefined ? html`<dt>Partition to resize</dt><dd>${task.mainPartition}</dd>` : ''}
${task.result ? html`<dt>Result</dt><dd>${task.result.version !== null ? `version ${task.result.version}` : ''} ${formatBytes(task.result.bytesOnWire)} on the wire</dd>` : ''}
${task.reason ? html`<dt>Reason</dt><dd>${task.reason}</dd>` : ''}
</dl></section>
<section class="card"><h2>Log</h2>${task.log.length === 0 ? emptyState('Nothing logged yet.') : html`<ol class="log">${task.log.map((l) => html`<li><time title="${formatTime(l.at)}">${formatTime(l.at)}</time> ${l.message}</li>`)}</ol>`}</section>`;
}
