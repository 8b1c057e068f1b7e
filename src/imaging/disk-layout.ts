/**
 * What an image knows about the disk it came from (issue 12): the partition table, each partition's
 * filesystem facts, how the capture treated it, and which chunks held only free space. The agent
 * builds it while capturing, the server keeps it beside the version, and deploy plans a restore onto
 * a disk of another size from it. Pure: types, the JSON check, and the sums the page shows. It imports
 * nothing, because the agent ships it into the thin client.
 */

/**
 * How a capture treated a partition:
 * - used-blocks: only the blocks the filesystem uses were read and sent (partclone's map);
 * - whole: every byte was read and sent, all-zero chunks skipped (unknown, encrypted or dirty);
 * - swap: nothing was sent; deploy recreates the swap area with its UUID and label.
 */
export type PartitionMode = 'used-blocks' | 'whole' | 'swap';

export interface LayoutPartition {
  /** Slot in the table, 1-based (MBR logical partitions from 5). */
  readonly index: number;
  /** GPT type GUID (upper case) or MBR type byte as "0x83". */
  readonly typeId: string;
  /** GPT unique partition GUID (upper case); null on MBR. */
  readonly guid: string | null;
  /** GPT partition name; '' on MBR. */
  readonly name: string;
  /** GPT attribute bits as a decimal string (64 bits do not fit a JSON number); MBR: "128" when bootable, else "0". */
  readonly attributes: string;
  readonly startBytes: number;
  readonly sizeBytes: number;
  /** ntfs, ext4, ext3, ext2, vfat, exfat, xfs, btrfs, swap, bitlocker, luks, …; null when not recognised. */
  readonly filesystem: string | null;
  readonly label: string | null;
  readonly uuid: string | null;
  /** Bytes the filesystem uses (from its bitmap); null when not known (whole partitions). */
  readonly usedBytes: number | null;
  /** The smallest size the filesystem can be shrunk to; null when it cannot be resized by us. */
  readonly minSizeBytes: number | null;
  readonly mode: PartitionMode;
  /** Why the partition was sent whole, or what a restore needs (BitLocker's recovery key); null when nothing to say. */
  readonly note: string | null;
}

export interface DiskLayout {
  readonly scheme: 'gpt' | 'mbr';
  readonly sectorSize: number;
  /** The source disk's size in bytes (the image's size). */
  readonly diskSize: number;
  /** GPT disk GUID (upper case), or the MBR disk signature as 8 hex digits; null when it has none. */
  readonly diskGuid: string | null;
  /** In table order (ascending index). */
  readonly partitions: readonly LayoutPartition[];
  /**
   * Chunks that held only free space, as [first, count] runs in ascending order: the capture neither
   * read nor stored them, and a deploy neither writes nor verifies them. Any other all-zero chunk is
   * real data (zeros a file holds) and is written as zeros.
   */
  readonly freeChunks: readonly (readonly [number, number])[];
  /** The store's chunk size the runs count in. */
  readonly chunkSize: number;
}

export class DiskLayoutError extends Error {
  constructor(message: string) {
    super(`disk layout: ${message}`);
    this.name = 'DiskLayoutError';
  }
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isStringOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string';
const MODES: readonly string[] = ['used-blocks', 'whole', 'swap'];

function checkPartition(p: unknown, i: number, layout: { diskSize: number; sectorSize: number }): LayoutPartition {
  const fail = (what: string): never => {
    throw new DiskLayoutError(`partition entry ${i}: ${what}`);
  };
  if (typeof p !== 'object' || p === null) fail('is not an object');
  const o = p as Record<string, unknown>;
  if (!isCount(o.index) || o.index < 1) fail('index must be a positive integer');
  if (typeof o.typeId !== 'string' || typeof o.name !== 'string' || typeof o.attributes !== 'string' || !/^\d{1,20}$/.test(o.attributes)) fail('typeId, name and attributes must be strings');
  if (!isStringOrNull(o.guid) || !isStringOrNull(o.filesystem) || !isStringOrNull(o.label) || !isStringOrNull(o.uuid) || !isStringOrNull(o.note)) fail('guid, filesystem, label, uuid and note must be strings or null');
  if (!isCount(o.startBytes) || !isCount(o.sizeBytes) || o.sizeBytes === 0) fail('startBytes and sizeBytes must be byte counts');
  if ((o.startBytes as number) % layout.sectorSize !== 0 || (o.sizeBytes as number) % layout.sectorSize !== 0) fail('start and size must be whole sectors');
  if ((o.startBytes as number) + (o.sizeBytes as number) > layout.diskSize) fail('ends past the end of the disk');
  if (!(o.usedBytes === null || isCount(o.usedBytes)) || !(o.minSizeBytes === null || isCount(o.minSizeBytes))) fail('usedBytes and minSizeBytes must be byte counts or null');
  if (typeof o.mode !== 'string' || !MODES.includes(o.mode)) fail(`mode must be one of ${MODES.join(', ')}`);
  return o as unknown as LayoutPartition;
}

/** Checks a layout that arrived as JSON (from an agent, or read back from the store). */
export function parseDiskLayout(value: unknown): DiskLayout {
  if (typeof value !== 'object' || value === null) throw new DiskLayoutError('is not an object');
  const o = value as Record<string, unknown>;
  if (o.scheme !== 'gpt' && o.scheme !== 'mbr') throw new DiskLayoutError('scheme must be "gpt" or "mbr"');
  if (o.sectorSize !== 512 && o.sectorSize !== 4096) throw new DiskLayoutError('sectorSize must be 512 or 4096');
  if (!isCount(o.diskSize) || o.diskSize === 0 || !isCount(o.chunkSize) || o.chunkSize === 0) throw new DiskLayoutError('diskSize and chunkSize must be positive integers');
  if (!isStringOrNull(o.diskGuid)) throw new DiskLayoutError('diskGuid must be a string or null');
  if (!Array.isArray(o.partitions) || o.partitions.length > 256) throw new DiskLayoutError('partitions must be a list of at most 256 entries');
  const dims = { diskSize: o.diskSize, sectorSize: o.sectorSize };
  const partitions = o.partitions.map((p, i) => checkPartition(p, i, dims));
  if (!Array.isArray(o.freeChunks)) throw new DiskLayoutError('freeChunks must be a list of [first, count] runs');
  const chunkCount = Math.ceil(o.diskSize / o.chunkSize);
  let end = 0;
  for (const run of o.freeChunks as unknown[]) {
    if (!Array.isArray(run) || run.length !== 2 || !isCount(run[0]) || !isCount(run[1]) || run[1] === 0) throw new DiskLayoutError('each free run must be [first, count] with count > 0');
    if (run[0] < end || run[0] + run[1] > chunkCount) throw new DiskLayoutError(`free run [${run[0]}, ${run[1]}] overlaps the one before it or passes the last chunk ${chunkCount - 1}`);
    end = run[0] + run[1];
  }
  return {
    scheme: o.scheme,
    sectorSize: o.sectorSize,
    diskSize: o.diskSize,
    diskGuid: o.diskGuid,
    partitions,
    freeChunks: o.freeChunks as [number, number][],
    chunkSize: o.chunkSize,
  };
}

/** A membership test over a layout's free runs, for walking the chunks in order or at random. */
export function freeChunkTest(layout: Pick<DiskLayout, 'freeChunks'>): (index: number) => boolean {
  const runs = layout.freeChunks;
  return (index: number): boolean => {
    let lo = 0;
    let hi = runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const [first, count] = runs[mid];
      if (index < first) hi = mid - 1;
      else if (index >= first + count) lo = mid + 1;
      else return true;
    }
    return false;
  };
}

/** Total free chunks. */
export function freeChunkCount(layout: Pick<DiskLayout, 'freeChunks'>): number {
  return layout.freeChunks.reduce((n, [, count]) => n + count, 0);
}

/**
 * What a task's log says about how a capture treated the disk: one line per partition that was not
 * captured by its used blocks (sent whole, with the reason; swap not sent), and one summing up.
 */
export function layoutNotes(layout: DiskLayout): string[] {
  const out: string[] = [];
  const name = (p: LayoutPartition): string => `partition ${p.index}${p.filesystem ? ` (${p.filesystem}${p.label ? ` "${p.label}"` : ''})` : ''}`;
  let used = 0;
  for (const p of layout.partitions) {
    if (p.mode === 'used-blocks') used++;
    else if (p.mode === 'swap') out.push(`${name(p)}: swap, not sent; a restore recreates it with its UUID and label`);
    // The probe's notes say "sent whole" and why.
    else out.push(`${name(p)}: ${p.note ?? 'sent whole'}`);
  }
  const freeBytes = Math.min(freeChunkCount(layout) * layout.chunkSize, layout.diskSize);
  out.push(`${used} of ${layout.partitions.length} partitions captured by their filesystems' used blocks; ${freeBytes} bytes of free space neither read nor stored`);
  return out;
}
