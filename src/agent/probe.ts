/**
 * The capture's look at a disk before reading it: the partition table, each partition's filesystem
 * facts, and from them which bytes to read. Everything outside the partitions a filesystem maps
 * (boot sector, GPT arrays, gaps, partitions sent whole, extended partitions' EBRs) counts as used;
 * a used-blocks partition's free blocks and a swap partition are not read.
 */
import { open } from 'node:fs/promises';
import type { DiskLayout, LayoutPartition } from '../imaging/disk-layout.js';
import { readPartitionTable, type PartitionEntry } from '../imaging/partitions.js';
import { mergeRanges, subtractRanges, type ByteRange } from '../imaging/domain-map.js';
import { partitionFacts, type PartitionFacts } from './fs-facts.js';
import { withPartition } from './partition-source.js';
import { UsedMap } from './used-map.js';

export interface DiskProbe {
  readonly layout: DiskLayout;
  readonly used: UsedMap;
}

/** The same, by the name the capture first used. */
export type ProbedDisk = DiskProbe;

const EXTENDED_TYPES = new Set(['0x05', '0x0f', '0x85']);

/** MBR disk signature (bytes 440..443) as sfdisk and blkid show it: the little-endian number in 8 hex digits; null when zero. */
export function mbrDiskSignature(sector0: Buffer): string | null {
  const v = sector0.readUInt32LE(440);
  return v === 0 ? null : v.toString(16).padStart(8, '0').toUpperCase();
}

function layoutPartition(p: PartitionEntry, f: PartitionFacts): LayoutPartition {
  return {
    index: p.index,
    typeId: p.typeId,
    guid: p.guid,
    name: p.name,
    attributes: p.attributes,
    startBytes: p.startBytes,
    sizeBytes: p.sizeBytes,
    filesystem: f.filesystem,
    label: f.label,
    uuid: f.uuid,
    usedBytes: f.usedBytes,
    minSizeBytes: f.minSizeBytes,
    mode: f.mode,
    note: f.note,
  };
}

async function factsOf(disk: string, p: PartitionEntry, warn: (m: string) => void): Promise<PartitionFacts> {
  try {
    return await withPartition(disk, p, (dev) => partitionFacts(dev, p, warn));
  } catch (err) {
    const why = (err as Error).message;
    warn(`partition ${p.index} of ${disk} could not be examined, so it is sent whole: ${why}`);
    // The table's sniff says "vfat (FAT32)"; the layout names filesystems as blkid does.
    const sniffed = p.filesystem === null ? null : p.filesystem.replace(/ \(.*\)$/, '');
    return { filesystem: sniffed, label: null, uuid: null, mode: 'whole', used: null, usedBytes: null, minSizeBytes: null, note: `could not be examined (${why}): sent whole` };
  }
}

/**
 * The disk's layout and the bytes a capture reads, or null when the disk has no MBR or GPT (the
 * capture then reads every chunk, as before). A damaged table is an error.
 */
export async function probeDisk(disk: string, size: number, sectorSize: number, chunkSize: number, warn: (m: string) => void): Promise<DiskProbe | null> {
  const fh = await open(disk, 'r');
  let sector0: Buffer;
  let table: Awaited<ReturnType<typeof readPartitionTable>>;
  try {
    const read = async (offset: number, length: number): Promise<Buffer> => {
      const b = Buffer.alloc(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(b, got, length - got, offset + got);
        if (bytesRead === 0) throw new Error(`${disk} ended at byte ${offset + got} while reading its partition table`);
        got += bytesRead;
      }
      return b;
    };
    table = await readPartitionTable(sectorSize, size, read);
    sector0 = table.scheme === 'none' ? Buffer.alloc(0) : await read(0, 512);
  } finally {
    await fh.close();
  }
  if (table.scheme === 'none') return null;

  const partitions: LayoutPartition[] = [];
  // Bytes not read: free blocks of mapped filesystems, and swap.
  const skipped: ByteRange[] = [];
  // Bytes read whatever another entry says: partitions sent whole (a table with overlapping entries must not lose them).
  const kept: ByteRange[] = [];
  for (const p of table.partitions) {
    const span: ByteRange = [p.startBytes, p.startBytes + p.sizeBytes];
    if (table.scheme === 'mbr' && EXTENDED_TYPES.has(p.typeId)) {
      // A container: its EBRs and gaps count as used, its logical partitions are entries of their own.
      partitions.push(layoutPartition(p, { filesystem: null, label: null, uuid: null, mode: 'whole', used: null, usedBytes: null, minSizeBytes: null, note: 'extended partition: holds the logical partitions' }));
      continue;
    }
    const f = await factsOf(disk, p, warn);
    partitions.push(layoutPartition(p, f));
    if (f.used === null) kept.push(span);
    else skipped.push(...subtractRanges([span], mergeRanges(f.used)));
  }
  const notRead = subtractRanges(mergeRanges(skipped), mergeRanges(kept));
  const used = new UsedMap(subtractRanges([[0, size]], notRead), size, chunkSize);
  const layout: DiskLayout = {
    scheme: table.scheme,
    sectorSize,
    diskSize: size,
    diskGuid: table.scheme === 'gpt' ? table.diskGuid : mbrDiskSignature(sector0),
    partitions,
    freeChunks: used.freeRuns(),
    chunkSize,
  };
  return { layout, used };
}
