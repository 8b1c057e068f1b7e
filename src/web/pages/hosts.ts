import type { EventRecord, HostRecord, TaskRecord } from '../../domain/database.js';
import type { ImageSummary } from '../../imaging/types.js';
import { formatAgo, formatBytes, formatTime } from '../format.js';
import { html, type SafeHtml } from '../html.js';
import type { HostState } from '../../domain/commands.js';
import { csrfField, emptyState } from './layout.js';
import { cancelButton, stateBadge, taskHistory, taskProgress } from './tasks.js';
import { eventList } from './dashboard.js';
import { wakeButton } from './groups.js';
import { captureForm, deployChoiceOf, deployForm, type DeployFormData } from './task-forms.js';

function firmwareLabel(h: HostRecord): string {
  const fw = { bios: 'BIOS', uefi: 'UEFI', 'uefi-http': 'UEFI HTTP', arm64: 'ARM64 UEFI', unknown: '?' }[h.firmware];
  return h.arch ? `${fw} · ${h.arch}` : fw;
}

/** `query`: the list's filter as a query string ("?q=…"), so the table's polling keeps it. */
export function hostsTable(hosts: readonly HostRecord[], states: Map<string, HostState>, query = '', csrf = ''): SafeHtml {
  return html`<div id="hosts-table" hx-get="/hosts/table${query}" hx-trigger="every 3s" hx-swap="outerHTML">
${hosts.length === 0 && query !== ''
    ? emptyState(html`No PC matches this search. <a href="/hosts">Show all PCs</a>.`)
    : hosts.length === 0
    ? emptyState(html`No PCs yet. Set a PC to boot from the network and switch it on — it appears here by itself. Or add one by MAC address below.`)
    : html`<div class="table-wrap"><table class="hosts">
<thead><tr><th>Name</th><th>MAC</th><th>IP</th><th>Firmware</th><th>Model</th><th>Group</th><th>Assigned image</th><th>Last seen</th><th>State</th><th><span class="visually-hidden">Wake-on-LAN</span></th></tr></thead>
<tbody>${hosts.map((h) => html`<tr data-mac="${h.mac}">
<td><a href="/hosts/${h.mac}">${h.name || (h.registered ? '(no name)' : 'new PC')}</a>${h.registered ? '' : html` <span class="badge new">unregistered</span>`}</td>
<td class="mono">${h.mac}</td><td class="mono">${h.ip ?? '—'}</td><td>${firmwareLabel(h)}</td>
<td>${h.hardware ? `${h.hardware.dmi.vendor} ${h.hardware.dmi.model}`.trim() || '—' : '—'}</td>
<td>${h.group ? html`<a href="/groups#group-${h.group.toLowerCase().replace(/[^a-z0-9]+/g, '-')}">${h.group}</a>` : html`<span class="muted">—</span>`}</td>
<td>${h.assignedImage ? html`<a href="/images/${h.assignedImage}">${h.assignedImage}</a>` : html`<span class="muted">none</span>`}</td>
<td title="${formatTime(h.lastSeen)}">${formatAgo(h.lastSeen)}</td>
<td>${stateBadge(states.get(h.mac) ?? 'idle')}</td><td>${wakeButton(h.mac, csrf)}</td></tr>`)}</tbody></table></div>`}
</div>`;
}

export function addHostForm(csrf: string): SafeHtml {
  return html`<form method="post" action="/hosts" class="card row-form">
${csrfField(csrf)}
<h2>Add a PC by MAC address</h2>
<label>MAC address <input name="mac" required placeholder="aa:bb:cc:dd:ee:ff" autocomplete="off" spellcheck="false"></label>
<label>Name <input name="name" placeholder="e.g. Reception 2" maxlength="64"></label>
<button>Add host</button>
</form>`;
}

function imageOptions(images: readonly ImageSummary[], selected: string | null, blank: string): SafeHtml {
  return html`<option value="">${blank}</option>${images.map((i) => html`<option value="${i.name}"${i.name === selected ? ' selected' : ''}>${i.name} (v${i.latestVersion}, ${formatBytes(i.size)})</option>`)}`;
}

export interface HostPageData {
  readonly host: HostRecord;
  readonly state: HostState;
  readonly active: TaskRecord | undefined;
  readonly tasks: readonly TaskRecord[];
  readonly events: readonly EventRecord[];
  readonly images: readonly ImageSummary[];
  readonly csrf: string;
  /** The deploy form's choices and checks (issue 13); without it the form starts empty. */
  readonly deploy?: DeployFormData;
}

/** What the client read from the firmware's SecureBoot variable. */
function secureBootLabel(state: 'on' | 'off' | 'bios' | undefined): string {
  switch (state) {
    case 'on':
      return 'on';
    case 'off':
      return 'off';
    case 'bios':
      return 'none (BIOS)';
    default:
      return 'not reported';
  }
}

export function hostPage(d: HostPageData): SafeHtml {
  const h = d.host;
  const hw = h.hardware;
  const title = h.name || h.mac;
  const names = new Map([[h.mac, h.name]]);
  return html`<h1>${title} ${stateBadge(d.state)}</h1>
<p class="muted mono">${h.mac}${h.ip ? ` · ${h.ip}` : ''} · first seen ${formatTime(h.firstSeen)} · last seen ${formatAgo(h.lastSeen)}</p>
<p class="host-actions">${wakeButton(h.mac, d.csrf, 'Wake (Wake-on-LAN)')}${h.group ? html` <span class="muted">in group <a href="/groups">${h.group}</a></span>` : ''}</p>

${d.active
    ? html`<section class="card"><h2>Current task: ${d.active.kind} ${d.active.image}</h2>${taskProgress(d.active)}<footer><a href="/tasks/${d.active.id}">details</a> ${cancelButton(d.active, d.csrf)}</footer></section>`
    : html`<div class="grid2">
${deployForm(d.deploy ?? { host: h, images: d.images, choice: deployChoiceOf({}, h), preview: null, csrf: d.csrf })}
${captureForm(h, d.csrf)}</div>`}

<div class="grid2">
<form method="post" action="/hosts/${h.mac}" class="card">
${csrfField(d.csrf)}
<h2>Name and image</h2>
<label>Name <input name="name" value="${h.name}" maxlength="64" placeholder="e.g. Reception 2"></label>
<label>Assigned image <select name="assignedImage">${imageOptions(d.images, h.assignedImage, 'none')}</select></label>
<label>Leaving for the local disk (BIOS) <select name="localBoot">
<option value="" ${h.localBoot === null ? 'selected' : ''}>server default</option>
<option value="exit" ${h.localBoot === 'exit' ? 'selected' : ''}>exit to the BIOS</option>
<option value="sanboot" ${h.localBoot === 'sanboot' ? 'selected' : ''}>sanboot drive 0x80 (for BIOSes that hang after exit)</option>
</select></label>
<label>UEFI network loader <select name="efiLoader">
<option value="snponly.efi" ${h.efiLoader === 'snponly.efi' ? 'selected' : ''}>snponly.efi (uses the firmware's network driver)</option>
<option value="ipxe.efi" ${h.efiLoader === 'ipxe.efi' ? 'selected' : ''}>ipxe.efi (iPXE's own drivers; try when snponly fails)</option>
</select></label>
<label>UEFI network boot (x86-64) <select name="uefiBoot">
<option value="" ${(h.uefiBoot ?? null) === null ? 'selected' : ''}>server default (uefi-boot)</option>
<option value="signed" ${h.uefiBoot === 'signed' ? 'selected' : ''}>signed shim and GRUB (works with Secure Boot on)</option>
<option value="ipxe" ${h.uefiBoot === 'ipxe' ? 'selected' : ''}>iPXE (needs Secure Boot off)</option>
</select></label>
<button>${h.registered ? 'Save' : 'Register'}</button>
</form>
<section class="card"><h2>Hardware</h2>
${hw
    ? html`<dl class="facts"><dt>Vendor</dt><dd>${hw.dmi.vendor || '—'}</dd><dt>Model</dt><dd>${hw.dmi.model || '—'}</dd><dt>Serial</dt><dd class="mono">${hw.dmi.serial || '—'}</dd>
<dt>Firmware</dt><dd>${firmwareLabel(h)}</dd><dt>Secure Boot</dt><dd>${secureBootLabel(hw.secureBoot)}</dd><dt>Reported</dt><dd>${formatTime(hw.reportedAt)}</dd></dl>
${hw.disks.length === 0 ? emptyState('No disks reported.') : html`<div class="table-wrap"><table><thead><tr><th>Disk</th><th>Size</th><th>Model</th><th>Serial</th><th>Type</th></tr></thead><tbody>
${hw.disks.map((disk) => html`<tr><td class="mono">${disk.name}</td><td>${formatBytes(disk.size)}</td><td>${disk.model}</td><td class="mono">${disk.serial}</td><td>${disk.transport}${disk.rotational ? ' HDD' : ' SSD'}${disk.removable ? ' removable' : ''}</td></tr>`)}
</tbody></table></div>`}`
    : html`<dl class="facts"><dt>Firmware</dt><dd>${firmwareLabel(h)}</dd><dt>Vendor class</dt><dd>${h.vendorClass ?? '—'}</dd></dl>
<p class="hint">Vendor, model, serial and disks appear after the PC has run the imaging client once.</p>`}
</section></div>

<section class="card"><h2>Tasks</h2>${taskHistory(d.tasks, names, 'No tasks for this PC yet.')}</section>
<section class="card"><h2>Events</h2>${eventList(d.events)}</section>
<form method="post" action="/hosts/${h.mac}/delete" class="danger-zone" hx-confirm="Remove ${title} (${h.mac})? Its task history stays.">
${csrfField(d.csrf)}<button class="danger">Remove host</button></form>`;
}
