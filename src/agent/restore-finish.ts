/**
 * What a deploy does after the data is on the disk and read back (issue 12): the partition table for
 * this disk's size, the swap areas the capture did not send, and the main filesystem grown into its
 * new space. Each step names what failed and what the technician can do; none of them touches the
 * version on the server.
 */
import { open, stat } from 'node:fs/promises';
import type { DiskLayout, LayoutPartition } from '../imaging/disk-layout.js';
import type { RestorePlan } from '../imaging/layout-plan.js';
import { writePartitionTable } from '../imaging/partition-write.js';
import { swapHeader } from './swap-header.js';
import { runTool } from '../lib/tool.js';
import { rereadPartitions, withPartition } from './partition-source.js';
import { growByHand, growMounted, growsMounted } from './mounted-grow.js';

export interface FinishReport {
  /** The partition table was rewritten for this disk's size. */
  readonly tableWritten: boolean;
  /** Swap areas recreated, by partition index. */
  readonly swapAreas: readonly number[];
  /** The partition whose filesystem grew, and to how many bytes; null when none did. */
  readonly grown: { readonly index: number; readonly sizeBytes: number } | null;
}

/** Filesystems whose tools grow them unmounted; xfs and btrfs grow only mounted (mounted-grow.ts). */
const GROWERS: Readonly<Record<string, (dev: string) => readonly (readonly string[])[]>> = {
  ntfs: (dev) => [['ntfsresize', '--force', '--no-progress-bar', dev]],
  ext4: (dev) => [['e2fsck', '-f', '-p', dev], ['resize2fs', dev]],
  ext3: (dev) => [['e2fsck', '-f', '-p', dev], ['resize2fs', dev]],
  ext2: (dev) => [['e2fsck', '-f', '-p', dev], ['resize2fs', dev]],
};

/** e2fsck -p exits 1 when it fixed something harmless (the timestamps of a captured, unmounted filesystem). */
const TOLERATED_EXIT: Readonly<Record<string, readonly number[]>> = { e2fsck: [0, 1] };

export function placedOf(plan: RestorePlan | null, p: LayoutPartition): { start: number; size: number } {
  const placed = plan?.partitions.find((x) => x.index === p.index);
  return placed ? { start: placed.toStart, size: placed.toSize } : { start: p.startBytes, size: p.sizeBytes };
}

export async function finishRestore(disk: string, layout: DiskLayout, plan: RestorePlan | null, warn: (m: string) => void): Promise<FinishReport> {
  let tableWritten = false;
  const fh = await open(disk, 'r+');
  const swapAreas: number[] = [];
  try {
    if (plan !== null && (plan.targetSize !== layout.diskSize || plan.resize !== 'none')) {
      const sector0 = Buffer.alloc(512);
      await fh.read(sector0, 0, 512, 0);
      for (const w of writePartitionTable(layout, plan, sector0)) await fh.write(w.data, 0, w.data.length, w.offset);
      tableWritten = true;
    }
    for (const p of layout.partitions) {
      if (p.mode !== 'swap') continue;
      const { start, size } = placedOf(plan, p);
      const page = swapHeader(size, p.uuid, p.label);
      await fh.write(page, 0, page.length, start);
      swapAreas.push(p.index);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  if (tableWritten && (await stat(disk)).isBlockDevice()) await rereadPartitions(disk);

  let grown: FinishReport['grown'] = null;
  if (plan !== null && plan.resize === 'grow' && plan.main !== null) {
    const main = layout.partitions.find((p) => p.index === plan.main);
    const placed = plan.partitions.find((p) => p.index === plan.main);
    if (!main || !placed) throw new Error(`restore plan names partition ${plan.main} as the one to grow, but the image's layout has no such partition; update the imaging client`);
    const fs = main.filesystem;
    const grow = fs === null ? undefined : GROWERS[fs];
    if (main.mode !== 'used-blocks' || (grow === undefined && !growsMounted(fs))) {
      warn(`partition ${main.index} (${fs ?? 'unknown filesystem'}) grew to ${placed.toSize} bytes, but its filesystem was left at ${main.sizeBytes} bytes: netclone grows ntfs, ext2/3/4, xfs and btrfs only; grow it from the running system`);
    } else if (growsMounted(fs)) {
      await withPartition(disk, { index: main.index, startBytes: placed.toStart, sizeBytes: placed.toSize }, { writable: true }, async (dev) => {
        try {
          await growMounted(dev, fs);
        } catch (err) {
          throw new Error(`growing the ${fs} filesystem of partition ${main.index}: ${(err as Error).message}. The data is restored and checked, and the partition is ${placed.toSize} bytes, but its filesystem still has its old size: ${growByHand(fs)}, or deploy again`, { cause: err });
        }
      });
      grown = { index: main.index, sizeBytes: placed.toSize };
    } else if (grow !== undefined) {
      await withPartition(disk, { index: main.index, startBytes: placed.toStart, sizeBytes: placed.toSize }, { writable: true }, async (dev) => {
        for (const cmd of grow(dev)) {
          const [tool, ...args] = cmd;
          const r = await runTool(tool, args);
          if (!(TOLERATED_EXIT[tool] ?? [0]).includes(r.code)) {
            throw new Error(`growing the ${main.filesystem} filesystem of partition ${main.index}: ${tool} exited ${r.code}: ${(r.stderr.trim() || r.stdout.trim()).split('\n').slice(-3).join(' / ')}. The data is restored and checked, and the partition is ${placed.toSize} bytes, but its filesystem still has its old size: run ${tool} on it by hand, or deploy again`);
          }
        }
      });
      grown = { index: main.index, sizeBytes: placed.toSize };
    }
  }
  return { tableWritten, swapAreas, grown };
}
