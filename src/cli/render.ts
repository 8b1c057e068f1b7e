/** Plain-text output of CLI results for people; --json gives the same data for scripts. */
import { transportOf, type HostRecord, type TaskRecord } from '../domain/database.js';
import type { ImageDetails } from '../imaging/image-details.js';
import type { VerifyResult } from '../imaging/image-store.js';
import type { ImageSummary, VersionInfo } from '../imaging/types.js';
import { formatBytes } from './progress.js';

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
        `stored:       ${formatBytes(d.storedBytes)} (compression ${d.compressionRatio.toFixed(2)}x, dedup saves ${formatBytes(d.dedupSavings)})`,
        'versions:',
        ...d.versions.map((v) => `  ${String(v.version).padStart(3)}  ${v.created}  ${formatBytes(v.dataBytes).padStart(10)} data  ${v.source}  digest ${v.digest.slice(0, 16)}…`),
      ];
      if (d.partitionTable && d.partitionTable.scheme !== 'none') {
        lines.push(`partitions (${d.partitionTable.scheme.toUpperCase()}):`);
        for (const p of d.partitionTable.partitions) {
          lines.push(`  ${String(p.index).padStart(2)}  ${p.typeName.padEnd(24)} ${formatBytes(p.sizeBytes).padStart(10)}  ${(p.filesystem ?? '-').padEnd(6)}  ${p.name}`.trimEnd());
        }
      } else {
        lines.push(`partitions:   ${d.partitionError ?? 'none found'}`);
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
      return table([['MAC', 'NAME', 'IP', 'FIRMWARE', 'LAST SEEN', 'IMAGE'], ...list.map((h) => [h.mac, h.name || '-', h.ip ?? '-', h.firmware, h.lastSeen, h.assignedImage ?? '-'])]);
    }
    case 'task': {
      const t = value as TaskRecord;
      return [
        `task ${t.id}: ${t.kind} of ${t.image} on ${t.mac} over ${transportOf(t)}`,
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
