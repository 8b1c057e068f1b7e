/**
 * The groups page: each group with its PCs and what they are doing now (polled like the tasks
 * page), and the whole group's actions: wake, capture, deploy, schedule.
 */
import type { HostRecord, TaskRecord } from '../../domain/database.js';
import type { HostState } from '../../domain/commands.js';
import type { ImageSummary } from '../../imaging/types.js';
import { isActive } from '../../domain/tasks.js';
import { formatAgo, formatTime } from '../format.js';
import { html, type SafeHtml } from '../html.js';
import { csrfField, emptyState } from './layout.js';
import { coverageWords } from './progress-words.js';
import { stateBadge } from './tasks.js';

export interface GroupView {
  readonly name: string;
  readonly hosts: readonly HostRecord[];
}

export interface GroupMember {
  readonly host: HostRecord;
  readonly state: HostState;
  /** The running or queued task, else the newest one. */
  readonly task: TaskRecord | undefined;
}

/** The group's path segment: names hold spaces and parentheses. */
export function groupPath(name: string): string {
  return `/groups/${encodeURIComponent(name)}`;
}

function groupId(name: string): string {
  return `group-${name.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
}

export function wakeButton(mac: string, csrf: string, label = 'Wake'): SafeHtml {
  return html`<form method="post" action="/hosts/${mac}/wake" class="inline wake">${csrfField(csrf)}<button class="small secondary" title="Send Wake-on-LAN to ${mac}">${label}</button></form>`;
}

/** One PC's task in a line: state, bar and how far (no polling of its own: the table polls). */
function taskCell(task: TaskRecord | undefined): SafeHtml {
  if (!task) return html`<span class="muted">no task yet</span>`;
  const moving = task.state === 'running' || task.state === 'verifying';
  const words = coverageWords(task);
  return html`<a href="/tasks/${task.id}">${task.kind} ${task.image}</a> ${stateBadge(task.state)}
${moving ? html`<progress max="100" value="${task.progress.total > 0 ? task.progress.percent : 0}" aria-label="progress of ${task.kind} ${task.image}">${task.progress.percent} %</progress>
<span class="muted">${task.progress.total > 0 ? `${task.progress.percent} % · ` : ''}${words.covered}${words.wire ? `, ${words.wire}` : ''}</span>` : ''}
${task.state === 'failed' || task.state === 'cancelled' ? html`<span class="reason">${task.reason ?? ''}</span>` : ''}
${!isActive(task) ? html`<span class="muted" title="${formatTime(task.finishedAt ?? task.createdAt)}">${formatAgo(task.finishedAt ?? task.createdAt)}</span>` : ''}`;
}

/** The group's PCs with their live state; polls itself, like the tasks page's running list. */
export function groupMembers(name: string, members: readonly GroupMember[], csrf: string): SafeHtml {
  const anyActive = members.some((m) => m.task && isActive(m.task));
  return html`<div id="${groupId(name)}-hosts" class="group-hosts" hx-get="${groupPath(name)}/hosts" hx-trigger="every ${anyActive ? 1 : 3}s" hx-swap="outerHTML">
${members.length === 0 ? emptyState('No PC is in this group now.') : html`<ul class="members">${members.map((m) => html`<li data-mac="${m.host.mac}">
<div class="member-head"><a href="/hosts/${m.host.mac}">${m.host.name || m.host.mac}</a> <span class="mono muted">${m.host.mac}</span> ${stateBadge(m.state)} ${wakeButton(m.host.mac, csrf)}</div>
<div class="member-task">${taskCell(m.task)}</div></li>`)}</ul>`}
</div>`;
}

function imageOptions(images: readonly ImageSummary[]): SafeHtml {
  return html`<option value="">each PC's assigned image</option>${images.map((i) => html`<option value="${i.name}">${i.name} (v${i.latestVersion})</option>`)}`;
}

export interface GroupsPageData {
  readonly groups: ReadonlyArray<{ readonly name: string; readonly members: readonly GroupMember[] }>;
  readonly hosts: readonly HostRecord[];
  readonly images: readonly ImageSummary[];
  readonly csrf: string;
  /** Where the schedule form is, or null when this server has none yet. */
  readonly scheduleHref: ((group: string) => string) | null;
}

export function groupsPage(d: GroupsPageData): SafeHtml {
  return html`<h1>Groups</h1>
${d.groups.length === 0 ? emptyState(html`No groups yet. Put PCs in a group below (for example "Front office" or "Lab 2"), then wake, capture, deploy or schedule them together.`) : ''}
${d.groups.map((g) => {
    const path = groupPath(g.name);
    return html`<section class="card group" id="${groupId(g.name)}">
<header><h2>${g.name}</h2> <span class="muted">${g.members.length} PC${g.members.length === 1 ? '' : 's'}</span>
<span class="group-actions right"><form method="post" action="${path}/wake" class="inline">${csrfField(d.csrf)}<button class="small">Wake all</button></form>
${d.scheduleHref ? html`<a href="${d.scheduleHref(g.name)}">Schedule a backup…</a>` : ''}</span></header>
${groupMembers(g.name, g.members, d.csrf)}
<div class="grid2 group-forms">
<form method="post" action="${path}/capture" class="row-form">
${csrfField(d.csrf)}
<h3>Capture all</h3>
<label>Store as image <input name="image" required value="backup-{host}" maxlength="64" autocomplete="off" spellcheck="false"></label>
<p class="hint">"{host}" becomes each PC's name, so every PC gets its own image.</p>
<label class="check"><input type="checkbox" name="wake" value="on" checked> Wake the PCs</label>
<label class="check"><input type="checkbox" name="after" value="poweroff"> Power off afterwards</label>
<button>Capture all</button>
</form>
<form method="post" action="${path}/deploy" class="row-form" hx-confirm="Deploy onto every PC in ${g.name}? Their disks will be overwritten.">
${csrfField(d.csrf)}
<h3>Deploy all</h3>
<label>Image <select name="image">${imageOptions(d.images)}</select></label>
<label class="check"><input type="checkbox" name="wake" value="on" checked> Wake the PCs</label>
<label class="check"><input type="checkbox" name="after" value="poweroff"> Power off afterwards</label>
<button class="danger">Deploy all</button>
</form>
</div>
</section>`;
  })}
${d.hosts.length === 0 ? '' : html`<form method="post" action="/groups/assign" class="card row-form">
${csrfField(d.csrf)}
<h2>Put a PC in a group</h2>
<label>PC <select name="mac" required>${d.hosts.map((h) => html`<option value="${h.mac}">${h.name || h.mac}${h.name ? ` (${h.mac})` : ''}${h.group ? ` · ${h.group}` : ''}</option>`)}</select></label>
<label>Group <input name="group" list="group-names" maxlength="64" placeholder="e.g. Lab 2 (empty: no group)" autocomplete="off"></label>
<datalist id="group-names">${d.groups.map((g) => html`<option value="${g.name}">`)}</datalist>
<button>Save</button>
</form>`}`;
}
