import type { DiskLayout } from '../../imaging/disk-layout.js';
import { captureText, layoutFreeBytes, type ImageDetails } from '../../imaging/image-details.js';
import type { ImageSummary } from '../../imaging/types.js';
import type { VerifyState } from '../verify-tracker.js';
import { formatAgo, formatBytes, formatPercent, formatTime } from '../format.js';
import { html, type SafeHtml } from '../html.js';
import { csrfField, emptyState } from './layout.js';
import { retentionSection, storeSpaceLine, versionsTable } from './retention.js';
import type { StoreSpace } from '../../imaging/store-space.js';
import type { PruneResult } from '../../domain/retention.js';

export function verifyBadge(v: VerifyState | undefined): SafeHtml {
  if (!v) return html`<span class="muted">not verified since start</span>`;
  if (v.state === 'running') return html`<span class="badge state-running">verifying…</span>`;
  return html`<span class="badge ${v.state === 'ok' ? 'state-done' : 'state-failed'}" title="${v.message}">${v.state === 'ok' ? 'verified' : 'damaged'}</span> <span class="muted">${formatAgo(v.finishedAt)}</span>`;
}

export function imagesTable(images: readonly ImageSummary[], verify: (name: string) => VerifyState | undefined, space?: StoreSpace | null): SafeHtml {
  if (images.length === 0) {
    return emptyState(html`No images yet — capture a PC: open it under <a href="/hosts">Hosts</a>, type a name under “Capture this PC” and press Capture now. Or import a disk file with <code>netclone image import</code>.`);
  }
  return html`<div class="table-wrap"><table>
<thead><tr><th>Name</th><th>Versions</th><th>Disk size</th><th title="the image's share of the store: chunks it shares with other images are split between them, so the column adds up to what the store holds">Stored (share)</th><th>Latest</th><th>Verify</th></tr></thead>
<tbody>${images.map((i) => html`<tr><td><a href="/images/${i.name}">${i.name}</a></td><td>${i.versions}</td><td>${formatBytes(i.size)}</td>
<td title="${formatBytes(i.exclusiveBytes)} used by this image alone (freed if it is removed)">${formatBytes(i.storedBytes)}</td><td title="${formatTime(i.created)}">v${i.latestVersion}, ${formatAgo(i.created)}</td><td>${verifyBadge(verify(i.name))}</td></tr>`)}</tbody></table></div>
${space === undefined ? '' : storeSpaceLine(space)}`;
}

/** The verify status box: polls while a verify runs. */
export function verifyBox(name: string, v: VerifyState | undefined, csrf: string): SafeHtml {
  const poll = v?.state === 'running' ? html` hx-get="/images/${name}/verify-status" hx-trigger="every 1s" hx-swap="outerHTML"` : '';
  return html`<div id="verify-box"${poll}>
<p>${verifyBadge(v)}${v && v.state !== 'running' ? html` <span class="${v.state === 'ok' ? '' : 'error-text'}">${v.message}</span>` : ''}</p>
${v?.state === 'running' ? '' : html`<form method="post" action="/images/${name}/verify" class="inline" hx-post="/images/${name}/verify" hx-target="#verify-box" hx-swap="outerHTML">${csrfField(csrf)}<button>Verify now</button></form>`}
</div>`;
}

export function urlBox(url: { uri: string; expiresAt: string } | null, name: string, csrf: string): SafeHtml {
  return html`<div id="url-box">
${url ? html`<p><code class="url">${url.uri}</code></p><p class="muted">Read-only, valid until ${formatTime(url.expiresAt)}. Example: <code>nbdinfo '${url.uri}'</code> or <code>qemu-img convert -O qcow2 '${url.uri}' ${name}.qcow2</code></p>` : ''}
<form method="post" action="/images/${name}/url" class="inline" hx-post="/images/${name}/url" hx-target="#url-box" hx-swap="outerHTML">${csrfField(csrf)}<button>${url ? 'Another URL' : 'Get nbd:// URL'}</button></form>
</div>`;
}

export interface ImagePageData {
  readonly image: ImageDetails;
  readonly verify: VerifyState | undefined;
  readonly csrf: string;
  /** A prune's dry run to show under the retention form (issue 13). */
  readonly preview?: PruneResult | null;
}

/** Today's table, read from the disk's first sectors: all a version captured without a layout tells. */
function partitionTableView(d: ImageDetails): SafeHtml {
  if (d.partitionError) return html`<p class="muted">Partition table not readable: ${d.partitionError}</p>`;
  const t = d.partitionTable;
  if (!t || t.scheme === 'none') return html`<p class="muted">No partition table (a raw filesystem or an empty disk).</p>`;
  return html`<p>${t.scheme.toUpperCase()} partition table, ${t.partitions.length} partition${t.partitions.length === 1 ? '' : 's'}</p>
<div class="table-wrap"><table><thead><tr><th>#</th><th>Type</th><th>Name</th><th>Size</th><th>Filesystem</th></tr></thead><tbody>
${t.partitions.map((p) => html`<tr><td>${p.index}</td><td>${p.typeName}</td><td>${p.name || '—'}</td><td>${formatBytes(p.sizeBytes)}</td><td>${p.filesystem ?? 'unknown'}</td></tr>`)}
</tbody></table></div>`;
}

/** A long GUID or UUID cut to its first 8 characters; the full one is in the title. */
function shortId(kind: string, id: string | null): SafeHtml {
  if (!id) return html``;
  const short = id.length > 13 ? `${id.slice(0, 8)}…` : id;
  return html`<div><span class="muted">${kind}</span> <code title="${kind} ${id}">${short}</code></div>`;
}

function fitsLine(d: ImageDetails, why: string | null): SafeHtml {
  return html`<p><strong title="${d.fitsDiskBytes} bytes">Fits disks ≥ ${formatBytes(d.fitsDiskBytes)}</strong>${why ? html` <span class="muted">(${why})</span>` : ''}</p>`;
}

/** The layout the imaging agent stored with the version: partitions, filesystems, how each was captured. */
function diskLayoutView(d: ImageDetails, l: DiskLayout): SafeHtml {
  const typeNames = new Map((d.partitionTable?.partitions ?? []).map((p) => [p.index, p.typeName]));
  const free = layoutFreeBytes(l);
  return html`<p>${l.scheme.toUpperCase()} partition table${l.diskGuid ? html`, disk ${l.scheme === 'gpt' ? 'GUID' : 'signature'} <code>${l.diskGuid}</code>` : ''} · ${l.partitions.length} partition${l.partitions.length === 1 ? '' : 's'}${free > 0 ? ` · ${formatBytes(free)} free space not stored` : ''}</p>
${fitsLine(d, d.fitsDiskBytes < d.size ? `captured from a ${formatBytes(d.size)} disk` : null)}
<div class="table-wrap"><table><thead><tr><th>#</th><th>Type</th><th>Name / label</th><th>Filesystem</th><th>UUID / GUID</th><th>Size</th><th>Used</th><th>Can shrink to</th><th>Captured</th></tr></thead><tbody>
${l.partitions.map((p) => html`<tr><td>${p.index}</td><td title="${p.typeId}">${typeNames.get(p.index) ?? p.typeId}</td>
<td>${[p.name, p.label].filter((x) => x).join(' / ') || '—'}</td><td>${p.filesystem ?? 'unknown'}</td>
<td>${shortId('UUID', p.uuid)}${shortId('GUID', p.guid)}</td><td>${formatBytes(p.sizeBytes)}</td>
<td>${p.usedBytes === null ? '—' : formatBytes(p.usedBytes)}</td><td>${p.minSizeBytes === null ? '—' : formatBytes(p.minSizeBytes)}</td>
<td class="reason-cell">${captureText(p)}</td></tr>`)}
</tbody></table></div>`;
}

function layout(d: ImageDetails): SafeHtml {
  if (d.layout) return diskLayoutView(d, d.layout);
  const why = d.layoutError ? 'its layout file is damaged: restored at its own size' : 'captured without a layout: restored at its own size';
  return html`${d.layoutError ? html`<p class="error-text">${d.layoutError}</p>` : ''}${fitsLine(d, why)}
${partitionTableView(d)}`;
}

export function imagePage({ image: d, verify, csrf, preview }: ImagePageData): SafeHtml {
  const latest = d.versions[0];
  const referenced = d.storedBytes + d.dedupSavings;
  return html`<h1>${d.name}</h1>
${latest ? html`<p class="muted">${d.versions.length} version${d.versions.length === 1 ? '' : 's'} · disk size ${formatBytes(d.size)} · newest v${latest.version} ${formatTime(latest.created)} from ${latest.source}</p>` : ''}
<div class="grid3">
<section class="card"><h2>Space</h2><dl class="facts">
<dt>Disk size</dt><dd>${formatBytes(d.size)}</dd>
<dt>Data (latest)</dt><dd>${formatBytes(d.dataBytes)}</dd>
<dt>Stored (all versions)</dt><dd><strong title="its share of the store: chunks shared with other images are split between them">${formatBytes(d.storedBytes)}</strong></dd>
<dt>Its own</dt><dd title="freed if the image is removed">${formatBytes(d.exclusiveBytes)}${d.sharedBytes > 0 ? html` <span class="muted">+ ${formatBytes(d.sharedBytes)} shared with other images</span>` : ''}</dd>
<dt>Compression</dt><dd>${d.compressionRatio > 0 ? `${d.compressionRatio.toFixed(2)} : 1` : '—'}</dd>
<dt>Dedup saves</dt><dd>${formatBytes(d.dedupSavings)}${referenced > 0 ? ` (${formatPercent(d.dedupSavings, referenced)})` : ''}</dd>
</dl></section>
<section class="card"><h2>Verify</h2>${verifyBox(d.name, verify, csrf)}</section>
<section class="card"><h2>Read over the network</h2>${urlBox(null, d.name, csrf)}</section>
</div>
<section class="card"><h2>Layout (latest version)</h2>${layout(d)}</section>
<section class="card"><h2>Versions</h2>
${versionsTable(d, csrf)}
</section>
${retentionSection(d, csrf, preview ?? null)}
<form method="post" action="/images/${d.name}/rename" class="card row-form">
${csrfField(csrf)}<h2>Rename</h2>
<label>New name <input name="to" required value="${d.name}" pattern="[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}" autocomplete="off" spellcheck="false"></label>
<button>Rename</button>
<p class="hint">Hosts assigned to this image follow the new name.</p>
</form>`;
}
