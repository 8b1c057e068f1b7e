/** Plain-text output of CLI results for people; --json gives the same data for scripts. */
import { transportOf, type HostRecord, type TaskRecord } from '../domain/database.js';
import type { DiskLayout } from '../imaging/disk-layout.js';
import { captureText, layoutFreeBytes, type ImageDetails } from '../imaging/image-details.js';
import type { VerifyResult } from '../imaging/image-store.js';
import type { ImageSummary, VersionInfo } from '../imaging/types.js';
import { formatBytes } from './progress.js';
import { describePolicy } from '../imaging/retention.js';

export type RenderKind = 'images' | 'image' | 'verify' | 'gc' | 'version' | 'host' | 'hosts' | 'task' | 'tasks';

function table(rows: string[][]): string {
  if (rows.length === 0) return '';
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd()).join('\n') + '\n';
}

function taskLine(t: TaskRecord): string[] {
  const p = t.state === 'running' || t.state === 'verifying' ? ` ${t.progress.percent}%` : '';
  return [t.id, t.kind, t.mac, t.image, `${t.state}${p}`, t.reason ?? ''];
}

function fitsLine(d: ImageDetails): string {
  return `fits disks ≥ ${formatBytes(d.fitsDiskBytes)} (${d.fitsDiskBytes} bytes)`;
}

/** What the imaging agent stored with the newest version: the table, each partition's facts, how it was captured. */
function layoutLines(d: ImageDetails, l: DiskLayout): string[] {
  const typeNames = new Map((d.partitionTable?.partitions ?? []).map((p) => [p.index, p.typeName]));
  const free = layoutFreeBytes(l);
  const head = `layout (${l.scheme.toUpperCase()}${l.diskGuid ? `, disk ${l.scheme === 'gpt' ? 'GUID' : 'signature'} ${l.diskGuid}` : ''}${free > 0 ? `, ${formatBytes(free)} free space not stored` : ''}):`;
  const rows = [
    ['#', 'TYPE', 'NAME/LABEL', 'FS', 'SIZE', 'USED', 'SHRINKS TO', 'CAPTURED'],
    ...l.partitions.map((p) => [
      String(p.index), typeNames.get(p.index) ?? p.typeId, [p.name, p.label].filter((x) => x).join(' / ') || '-', p.filesystem ?? '-',
      formatBytes(p.sizeBytes), p.usedBytes === null ? '-' : formatBytes(p.usedBytes), p.minSizeBytes === null ? '-' : formatBytes(p.minSizeBytes), captureText(p),
    ]),
  ];
  const ids = l.partitions
    .filter((p) => p.uuid || p.guid)
    .map((p) => `    ${String(p.index).padStart(2)}  ${[p.uuid ? `UUID ${p.uuid}` : '', p.guid ? `GUID ${p.guid}` : ''].filter((x) => x).join('  ')}`);
  return [head, ...table(rows).trimEnd().split('\n').map((r) => `  ${r}`), ...(ids.length ? ['  filesystem UUIDs, partition GUIDs:', ...ids] : []), fitsLine(d)];
}

export function render(kind: RenderKind, value: unknown): string {
  switch (kind) {
    case 'images': {
      const list = value as ImageSummary[];
      if (list.length === 0) return 'No images yet. Import one with "netclone image import NAME FILE" or capture a PC.\n';
      return table([['NAME', 'VERSION', 'SIZE', 'STORED', 'CREATED'], ...list.map((i) => [i.name, String(i.latestVersion), formatBytes(i.size), formatBytes(i.storedBytes), i.created])]);
    }
    case 'image': {
      const d = value as ImageDetails;
      const lines = [
        `image:        ${d.name}`,
        `logical size: ${formatBytes(d.size)} (${d.size} bytes, ${d.sectorSize}-byte sectors)`,
        `data:         ${formatBytes(d.dataBytes)} (the rest is zero)`,
        `stored:       ${formatBytes(d.storedBytes)} (its share of the store; compression ${d.compressionRatio.toFixed(2)}x, dedup saves ${formatBytes(d.dedupSavings)}; ${formatBytes(d.exclusiveBytes)} its own)`,
        'versions:',
        ...d.versions.flatMap((v) => [
          `  ${String(v.version).padStart(3)}  ${v.created}  ${formatBytes(v.dataBytes).padStart(10)} data  ${formatBytes(v.changedBytes).padStart(10)} changed  ${v.sourceName ? `${v.sourceName} (${v.source})` : v.source}  digest ${v.digest.slice(0, 16)}…${v.protected ? '  PROTECTED' : ''}`,
          ...(v.note ? [`       note: ${v.note}`] : []),
        ]),
        ...(d.retention ? [`retention:    ${describePolicy(d.retention)}`] : []),
      ];
      if (d.layout) {
        lines.push(...layoutLines(d, d.layout));
      } else if (d.partitionTable && d.partitionTable.scheme !== 'none') {
        lines.push(`partitions (${d.partitionTable.scheme.toUpperCase()}):`);
        for (const p of d.partitionTable.partitions) {
          lines.push(`  ${String(p.index).padStart(2)}  ${p.typeName.padEnd(24)} ${formatBytes(p.sizeBytes).padStart(10)}  ${(p.filesystem ?? '-').padEnd(6)}  ${p.name}`.trimEnd());
        }
      } else {
        lines.push(`partitions:   ${d.partitionError ?? 'none found'}`);
      }
      if (!d.layout) {
        if (d.layoutError) lines.push(`layout:       ${d.layoutError}`);
        lines.push(`${fitsLine(d)} (${d.layoutError ? 'its layout file is damaged' : 'captured without a layout'}: restored at its own size)`);
      }
      return lines.join('\n') + '\n';
    }
    case 'verify': {
      const v = value as VerifyResult;
      if (v.ok) return `ok: version ${v.version}, ${v.checkedChunks} chunks checked\n`;
      return `DAMAGED: version ${v.version}, ${v.damaged.length} bad chunk(s):\n${v.damaged.map((d) => `  chunk ${d.hash} at offset ${d.offset}: ${d.reason}`).join('\n')}\n`;
    }
    case 'gc': {
      const g = value as { removedChunks: number; freedBytes: number; keptChunks: number };
      return `removed ${g.removedChunks} unused chunks, freed ${formatBytes(g.freedBytes)}; ${g.keptChunks} chunks in use\n`;
    }
    case 'version': {
      const v = value as VersionInfo;
      return `${v.name} version ${v.version}: ${formatBytes(v.size)} disk, ${formatBytes(v.dataBytes)} data, digest ${v.digest}\n`;
    }
    case 'host': {
      const h = value as HostRecord;
      return `${h.mac}  ${h.name || '(no name)'}  ${h.registered ? 'registered' : 'seen'}\n`;
    }
    case 'hosts': {
      const list = value as HostRecord[];
      if (list.length === 0) return 'No hosts yet. PCs appear when they network-boot, or add one with "netclone host add MAC".\n';
      return table([['MAC', 'NAME', 'GROUP', 'IP', 'FIRMWARE', 'LAST SEEN', 'IMAGE'], ...list.map((h) => [h.mac, h.name || '-', h.group ?? '-', h.ip ?? '-', h.firmware, h.lastSeen, h.assignedImage ?? '-'])]);
    }
    case 'task': {
      const t = value as TaskRecord;
      return [
        `task ${t.id}: ${t.kind} of ${t.image} on ${t.mac} over ${transportOf(t)}`,
        ...(t.mainPartition !== undefined ? [`partition that grows or shrinks: ${t.mainPartition}`] : []),
        `state: ${t.state}${t.reason ? ` (${t.reason})` : ''}`,
        `progress: ${t.progress.percent}% ${formatBytes(t.progress.bytes)} of ${formatBytes(t.progress.total)}${t.progress.mbps ? `, ${t.progress.mbps} MB/s` : ''}${t.progress.summary ? `; ${t.progress.summary}` : ''}`,
        ...t.log.map((l) => `  ${l.at}  ${l.message}`),
      ].join('\n') + '\n';
    }
    case 'tasks': {
      const list = value as TaskRecord[];
      if (list.length === 0) return 'No tasks. Start one with "netclone task capture MAC --image NAME".\n';
      return table([['ID', 'KIND', 'MAC', 'IMAGE', 'STATE', 'REASON'], ...list.map(taskLine)]);
    }
  }
}
