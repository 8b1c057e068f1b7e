/**
 * The host page's deploy ("restore") and capture forms (issue 13): the image version to restore
 * (newest preselected), the target disk picked from the disks the PC reported, "power off
 * afterwards", and before a deploy what the server knows will go wrong or differ: another PC model
 * (the form then needs "Deploy anyway" ticked) and a disk smaller than the image.
 *
 * The deploy form re-renders itself from the host page (GET with the form's fields as the query) when
 * the image, version or disk changes, so the warnings always describe what "Deploy" will do.
 */
import type { HostRecord } from '../../domain/database.js';
import type { DeployPreview } from '../../domain/deploy-checks.js';
import { modelName } from '../../domain/deploy-checks.js';
import type { ImageSummary } from '../../imaging/types.js';
import { formatBytes, formatTime } from '../format.js';
import { html, type SafeHtml } from '../html.js';
import { csrfField, emptyState } from './layout.js';

/** What the technician chose so far (the query of a re-render, or a refused form's fields). */
export interface DeployChoice {
  readonly image: string | null;
  /** null: the newest when the PC starts. */
  readonly version: number | null;
  readonly diskSerial: string | null;
  readonly poweroff: boolean;
  readonly mainPartition: string;
  readonly wake: boolean;
  /** The technician ticked "Deploy anyway" (shown again after a refusal). */
  readonly force: boolean;
}

export interface DeployFormData {
  readonly host: HostRecord;
  readonly images: readonly ImageSummary[];
  readonly choice: DeployChoice;
  /** The checks for the chosen image and version; null before an image is chosen. */
  readonly preview: DeployPreview | null;
  readonly csrf: string;
}

/** Reads the form's fields from a query or body; anything malformed is left for startTask to refuse. */
export function deployChoiceOf(fields: Record<string, unknown>, host: HostRecord): DeployChoice {
  const text = (k: string): string => (typeof fields[k] === 'string' ? (fields[k] as string).trim() : '');
  const version = text('version');
  return {
    image: text('image') || host.assignedImage,
    version: /^\d{1,9}$/.test(version) && Number(version) > 0 ? Number(version) : null,
    diskSerial: text('diskSerial') || null,
    poweroff: text('after') === 'poweroff',
    mainPartition: text('mainPartition'),
    wake: text('wake') === 'on',
    force: text('force') === 'on',
  };
}

function diskLabel(d: { name: string; size: number; model: string; serial: string }): string {
  return `${d.name} · ${formatBytes(d.size)}${d.model ? ` · ${d.model}` : ''}${d.serial ? ` (S/N ${d.serial})` : ''}`;
}

/** The target disk: the disks the PC reported, by serial; the default is the only (or first) one. */
export function diskSelect(host: HostRecord, selected: string | null, refresh: SafeHtml | ''): SafeHtml {
  const disks = host.hardware?.disks ?? [];
  const first = disks[0];
  const fallback = !first
    ? 'the only disk (the PC has not reported its disks yet)'
    : disks.length === 1 ? `the only disk (${diskLabel(first)})` : `the first disk (${diskLabel(first)})`;
  return html`<label>Target disk <select name="diskSerial"${refresh}>
<option value="">${fallback}</option>
${disks.filter((d) => d.serial !== '').map((d) => html`<option value="${d.serial}"${d.serial === selected ? ' selected' : ''}>${diskLabel(d)}</option>`)}
</select></label>`;
}

function poweroffBox(checked: boolean): SafeHtml {
  return html`<label class="check"><input type="checkbox" name="after" value="poweroff"${checked ? ' checked' : ''}> Power off afterwards (instead of restarting)</label>`;
}

function versionSelect(p: DeployPreview | null, chosen: number | null, refresh: SafeHtml): SafeHtml {
  if (!p || p.versions.length === 0) return html`<label>Version <select name="version" disabled><option value="">choose an image first</option></select></label>`;
  const [newest, ...older] = p.versions;
  const label = (v: DeployPreview['versions'][number]): string => `v${v.version} · ${formatTime(v.created)} · ${formatBytes(v.dataBytes)} of data on a ${formatBytes(v.size)} disk`;
  return html`<label>Version <select name="version"${refresh}>
<option value=""${chosen === null ? ' selected' : ''}>newest: ${label(newest)}</option>
${older.map((v) => html`<option value="${v.version}"${v.version === chosen ? ' selected' : ''}>${label(v)}</option>`)}
</select></label>`;
}

/** What the chosen disk makes of the image: fits, will be shrunk, or too small by how much. */
function diskWarning(p: DeployPreview): SafeHtml | '' {
  const { disk, verdict } = p.disk;
  if (!disk || verdict.kind === 'unknown') return '';
  const which = `Disk ${disk.name} (${formatBytes(disk.size)})`;
  switch (verdict.kind) {
    case 'fits':
      return html`<p class="hint" data-disk="fits">${which}: the image fits.</p>`;
    case 'shrink':
      return html`<p class="notice" data-disk="shrink">${which} is smaller than the image's ${formatBytes(p.versions.find((v) => v.version === p.version)?.size)} disk: the image will be shrunk to fit (it needs at least ${formatBytes(verdict.minBytes)}).</p>`;
    case 'too-small':
      return html`<p class="error" role="alert" data-disk="too-small">${which} is too small by ${formatBytes(verdict.shortBytes)}: the image needs a disk of at least ${formatBytes(verdict.minBytes)}. The deploy will fail; pick a larger disk or another image.</p>`;
  }
}

/** Another PC model than the version's: the warning and the confirmation the deploy then needs. */
function modelWarning(p: DeployPreview, force: boolean): SafeHtml | '' {
  if (!p.mismatch || !p.origin || !p.pc) return '';
  return html`<div class="error" role="alert" data-mismatch="yes"><p>Version ${p.version} of ${p.image} was captured from a <strong>${modelName(p.origin)}</strong>; this PC is a <strong>${modelName(p.pc)}</strong>. Drivers and firmware settings may not fit it.</p>
<label class="check"><input type="checkbox" name="force" value="on"${force ? ' checked' : ''}> Deploy anyway onto this ${modelName(p.pc)}</label></div>`;
}

export function deployForm(d: DeployFormData): SafeHtml {
  const h = d.host;
  const c = d.choice;
  const title = h.name || h.mac;
  // The image, version and disk re-render the form from the host page, keeping what is filled in.
  const refresh = html` hx-get="/hosts/${h.mac}" hx-trigger="change" hx-include="closest form" hx-select="#deploy-form" hx-target="#deploy-form" hx-swap="outerHTML" hx-push-url="false"`;
  const imageOptions = html`<option value="">${h.assignedImage ? `assigned (${h.assignedImage})` : 'choose…'}</option>${d.images.map((i) => html`<option value="${i.name}"${i.name === c.image ? ' selected' : ''}>${i.name} (v${i.latestVersion}, ${formatBytes(i.size)})</option>`)}`;
  return html`<form method="post" action="/hosts/${h.mac}/deploy" class="card" id="deploy-form" hx-confirm="Deploy onto ${title}? Its disk will be overwritten.">
${csrfField(d.csrf)}
<h2>Deploy or restore an image</h2>
${d.images.length === 0
    ? emptyState(html`No images yet — capture a PC first.`)
    : html`<label>Image <select name="image"${refresh}>${imageOptions}</select></label>
${versionSelect(d.preview, c.version, refresh)}
${diskSelect(h, c.diskSerial, refresh)}
${d.preview ? diskWarning(d.preview) : ''}
${d.preview ? modelWarning(d.preview, c.force) : ''}
<label>Partition to resize (default: the largest) <input name="mainPartition" type="number" min="1" step="1" inputmode="numeric" autocomplete="off" value="${c.mainPartition}"></label>
${poweroffBox(c.poweroff)}
<label class="check"><input type="checkbox" name="wake" value="on"${c.wake ? ' checked' : ''}> Wake the PC (Wake-on-LAN)</label>
<p class="hint">The PC's disk is overwritten when it next boots from the network.</p>
<button>Deploy now</button> <button class="secondary" formmethod="get" formaction="/hosts/${h.mac}" formnovalidate>Check first</button>`}
</form>`;
}

export function captureForm(host: HostRecord, csrf: string): SafeHtml {
  return html`<form method="post" action="/hosts/${host.mac}/capture" class="card" id="capture-form">
${csrfField(csrf)}
<h2>Capture this PC</h2>
<label>Store as image <input name="image" required placeholder="e.g. win11-office" pattern="[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}" title="1-64 letters, digits, '.', '_' or '-', starting with a letter or digit" autocomplete="off" spellcheck="false"></label>
${diskSelect(host, null, '')}
${poweroffBox(false)}
<label class="check"><input type="checkbox" name="wake" value="on"> Wake the PC (Wake-on-LAN)</label>
<p class="hint">An existing name gets a new version; older versions are kept.</p>
<button>Capture now</button>
</form>`;
}

/** The query that re-renders the deploy form with `choice` (after a refusal that needs the technician's confirmation). */
export function deployChoiceQuery(c: DeployChoice): string {
  const q = new URLSearchParams();
  if (c.image) q.set('image', c.image);
  if (c.version !== null) q.set('version', String(c.version));
  if (c.diskSerial) q.set('diskSerial', c.diskSerial);
  if (c.poweroff) q.set('after', 'poweroff');
  if (c.mainPartition) q.set('mainPartition', c.mainPartition);
  if (c.wake) q.set('wake', 'on');
  return q.toString();
}
