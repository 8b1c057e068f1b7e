import type { BootFileProblem, ServiceStatus } from '../../domain/running-server.js';
import type { EventRecord, TaskRecord } from '../../domain/database.js';
import { formatAgo, formatBytes, formatTime } from '../format.js';
import { html, type SafeHtml } from '../html.js';
import { emptyState } from './layout.js';
import { activeTasks } from './tasks.js';
import { protectionCard } from './protection.js';
import type { HostProtection } from '../../domain/protection.js';
import type { StoreSpace } from '../../imaging/store-space.js';
import { storeSpaceLine } from './retention.js';

export interface DiskSpace {
  readonly total: number;
  readonly free: number;
}

export function eventList(events: readonly EventRecord[]): SafeHtml {
  if (events.length === 0) return emptyState('Nothing has happened yet.');
  return html`<ol class="events">${events.map((e) => html`<li class="ev-${e.level}"><time title="${formatTime(e.at)}">${formatAgo(e.at)}</time>
<span>${e.level !== 'info' ? html`<strong>${e.level}:</strong> ` : ''}${e.message}</span>${e.mac ? html` <a class="mono" href="/hosts/${e.mac}">${e.mac}</a>` : ''}</li>`)}</ol>`;
}

function serviceList(services: readonly ServiceStatus[]): SafeHtml {
  if (services.length === 0) return emptyState('No services reported.');
  return html`<ul class="services">${services.map((s) => html`<li><span class="dot ${s.state}" aria-hidden="true"></span><strong>${s.name.toUpperCase()}</strong> ${s.state} <span class="muted">${s.detail}</span></li>`)}</ul>`;
}

const BOOT_FILE_NAMES: Readonly<Record<BootFileProblem['files'], string>> = { loaders: 'iPXE loaders', client: 'Imaging client' };

/** Above everything else: until these are fixed, PCs cannot boot or cannot be imaged. */
function bootFilesCard(problems: readonly BootFileProblem[]): SafeHtml | '' {
  if (problems.length === 0) return '';
  const title = problems.some((p) => p.state === 'missing') ? 'Boot files missing' : 'Boot files out of date';
  return html`<section class="card error" role="alert" id="boot-files"><h2>${title}</h2><ul>${problems.map((p) => html`<li><strong>${BOOT_FILE_NAMES[p.files]}:</strong> ${p.message}.
<br>Fix it on the server, as root: <code>${p.fix}</code></li>`)}</ul></section>`;
}

function diskBlock(disk: DiskSpace | null, imagesDir: string): SafeHtml {
  if (!disk) return html`<p class="error">Cannot read free space of ${imagesDir}; does the directory exist?</p>`;
  const used = disk.total - disk.free;
  const pct = disk.total ? Math.round((used / disk.total) * 100) : 0;
  return html`<progress class="${pct > 90 ? 'full' : ''}" max="100" value="${pct}" aria-label="store disk used">${pct} %</progress>
<p><strong>${formatBytes(disk.free)}</strong> free of ${formatBytes(disk.total)} (${pct} % used)</p><p class="muted mono">${imagesDir}</p>`;
}

export interface DashboardData {
  readonly services: readonly ServiceStatus[];
  readonly bootFiles: readonly BootFileProblem[];
  readonly disk: DiskSpace | null;
  readonly imagesDir: string;
  readonly active: readonly TaskRecord[];
  readonly events: readonly EventRecord[];
  readonly counts: { hosts: number; images: number; unregistered: number };
  readonly csrf: string;
  readonly names: Map<string, string>;
  /** Each PC's backup status (issue 13); absent: the view is left out. */
  readonly protection?: readonly HostProtection[];
  /** What the whole store holds against all versions' data (issue 13); null: not counted; absent: left out. */
  readonly space?: StoreSpace | null;
}

export function dashboard(d: DashboardData): SafeHtml {
  return html`<h1>Dashboard</h1>
${bootFilesCard(d.bootFiles)}
<div class="grid3">
<section class="card"><h2>Services</h2>${serviceList(d.services)}</section>
<section class="card"><h2>Image store</h2>${diskBlock(d.disk, d.imagesDir)}${d.space === undefined ? '' : storeSpaceLine(d.space)}</section>
<section class="card"><h2>Inventory</h2><p><a href="/hosts"><strong>${d.counts.hosts}</strong> PC${d.counts.hosts === 1 ? '' : 's'}</a>${d.counts.unregistered ? html` · <strong>${d.counts.unregistered}</strong> new, not registered` : ''}</p>
<p><a href="/images"><strong>${d.counts.images}</strong> image${d.counts.images === 1 ? '' : 's'}</a></p></section>
</div>
${d.protection ? protectionCard(d.protection) : ''}
<section><h2>Running tasks</h2>${activeTasks(d.active, d.csrf, d.names)}</section>
<section class="card"><h2>Recent events</h2>${eventList(d.events)}</section>`;
}
