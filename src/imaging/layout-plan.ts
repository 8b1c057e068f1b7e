/**
 * Where an image's partitions go on a target disk of another size (issue 12), and which image bytes
 * land where. Pure arithmetic over a DiskLayout: the agent runs it in the thin client before a deploy,
 * the server runs it to say which disks an image fits and to derive a shrunk version.
 *
 * The rules:
 * - same size: everything stays where it is (one identity segment over the whole image);
 * - otherwise the main partition (largest ntfs/ext2/3/4/xfs/btrfs, or the one the task names) keeps
 *   its start and takes the space; partitions behind it move to the end of the disk in their order,
 *   size and content unchanged, each start 1 MiB aligned; the GPT backup area sits at the new end;
 * - when that would shrink the main partition but the partitions fit where they are (a smaller disk
 *   the source never used the end of), nothing moves and nothing is resized;
 * - a shrink is planned only down to the filesystem's minimum size (rounded up to 1 MiB); below that
 *   the plan refuses with LayoutFitError, saying how many bytes are missing;
 * - an MBR with an extended partition or logical partitions is never moved or resized: it is
 *   restored where it is, onto any disk its partitions fit.
 */
import type { DiskLayout, LayoutPartition } from './disk-layout.js';

export interface PlacedPartition {
  /** The partition's index in the layout (its table slot). */
  readonly index: number;
  readonly fromStart: number;
  readonly fromSize: number;
  readonly toStart: number;
  readonly toSize: number;
}

/** Image bytes [from, from + length) go to target disk bytes [to, to + length). */
export interface Segment {
  readonly from: number;
  readonly to: number;
  readonly length: number;
}

export interface RestorePlan {
  readonly targetSize: number;
  readonly sectorSize: number;
  /** The partition whose size changes (resize 'grow' or 'shrink'); null when no partition changes size. */
  readonly main: number | null;
  /** Every partition of the layout, in the layout's (table) order. */
  readonly partitions: readonly PlacedPartition[];
  /**
   * Sorted by `from`, overlapping neither in the image nor on the target. Image bytes no segment
   * covers are not written: the old GPT backup area, gaps behind the main partition, the main
   * partition's old tail when it grows. For a 'shrink' plan the main partition's content is not
   * covered at all, because its filesystem must be shrunk first (ntfsresize -s / resize2fs on a copy
   * of the image): after that its first toSize bytes hold the whole filesystem and map to
   * [toStart, toStart + toSize) unchanged (toStart = fromStart), which the caller adds itself.
   */
  readonly segments: readonly Segment[];
  readonly resize: 'none' | 'grow' | 'shrink';
}

export class LayoutFitError extends Error {
  /** How many bytes the target disk lacks (the smallest fitting disk minus the target's size). */
  readonly shortBytes: number;
  constructor(needBytes: number, targetSize: number, why: string) {
    super(`the image needs a disk of at least ${humanSize(needBytes, 'up')} (${humanSize(needBytes - targetSize, 'up')} more than this ${humanSize(targetSize, 'down')} disk): ${why}`);
    this.name = 'LayoutFitError';
    this.shortBytes = needBytes - targetSize;
  }
}

/** A request the layout cannot honour for a reason other than the disk's size. */
export class LayoutPlanError extends Error {
  constructor(message: string) {
    super(`restore plan: ${message}`);
    this.name = 'LayoutPlanError';
  }
}

const MiB = 1024 * 1024;
/** Entries in every GPT we write (the UEFI minimum, what sgdisk and sfdisk write). */
export const GPT_ENTRY_COUNT = 128;
export const GPT_ENTRY_SIZE = 128;
/** The MBR counts sectors in 32 bits. */
const MBR_MAX_SECTORS = 0xffffffff;
const RESIZABLE = new Set(['ntfs', 'ext2', 'ext3', 'ext4', 'xfs', 'btrfs']);
const EXTENDED_TYPES = new Set(['0x05', '0x0f', '0x85']);

const alignDown = (n: number, a: number): number => Math.floor(n / a) * a;
const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;
const endOf = (p: LayoutPartition): number => p.startBytes + p.sizeBytes;

function humanSize(bytes: number, round: 'up' | 'down'): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (i < units.length - 1 && bytes >= 1024 ** (i + 1)) i++;
  if (i === 0) return `${bytes} bytes`;
  const tenths = (round === 'up' ? Math.ceil : Math.floor)((bytes / 1024 ** i) * 10);
  return `${(tenths / 10).toFixed(1)} ${units[i]}`;
}

const partName = (p: LayoutPartition): string => `partition ${p.index}${p.filesystem ? ` (${p.filesystem}${p.label ? ` "${p.label}"` : ''})` : ''}`;

/** Sectors of one GPT entry array (primary and backup alike). */
export function gptEntriesSectors(sectorSize: number): number {
  return Math.ceil((GPT_ENTRY_COUNT * GPT_ENTRY_SIZE) / sectorSize);
}

/** Disk geometry a table on `targetSize` bytes allows: partitions must lie in [firstUsable, usableEnd). */
export function usableArea(scheme: DiskLayout['scheme'], sectorSize: number, targetSize: number): { readonly firstUsable: number; readonly usableEnd: number } {
  const lbas = Math.floor(targetSize / sectorSize);
  if (scheme === 'mbr') return { firstUsable: sectorSize, usableEnd: Math.min(lbas, MBR_MAX_SECTORS) * sectorSize };
  const entries = gptEntriesSectors(sectorSize);
  // Primary: LBA 0 protective MBR, LBA 1 header, then the array. Backup: the array, then the header in the last LBA.
  return { firstUsable: (2 + entries) * sectorSize, usableEnd: (lbas - 1 - entries) * sectorSize };
}

/** Bytes a target needs beyond the end of its last usable byte (the GPT backup array and header). */
const tailBytes = (layout: DiskLayout): number => (layout.scheme === 'gpt' ? (1 + gptEntriesSectors(layout.sectorSize)) * layout.sectorSize : 0);

const hasLogical = (layout: DiskLayout): boolean => layout.scheme === 'mbr' && layout.partitions.some((p) => p.index >= 5 || EXTENDED_TYPES.has(p.typeId.toLowerCase()));

const canResize = (p: LayoutPartition): boolean => p.mode !== 'swap' && p.filesystem !== null && RESIZABLE.has(p.filesystem);

/**
 * The partition that grows or shrinks: the one named (its index), which must hold a filesystem we
 * resize, else the largest partition holding ntfs, ext2/3/4, xfs or btrfs (the first of equals).
 * Null when there is none.
 */
export function mainPartition(layout: DiskLayout, named?: number): LayoutPartition | null {
  if (named !== undefined) {
    const p = layout.partitions.find((x) => x.index === named);
    if (!p) throw new LayoutPlanError(`partition ${named} is not in the image (it has ${layout.partitions.map((x) => x.index).join(', ') || 'no partitions'})`);
    if (!canResize(p)) throw new LayoutPlanError(`${partName(p)} cannot be resized: name a partition holding ntfs, ext2, ext3, ext4, xfs or btrfs`);
    return p;
  }
  let best: LayoutPartition | null = null;
  for (const p of layout.partitions) if (canResize(p) && (best === null || p.sizeBytes > best.sizeBytes)) best = p;
  return best;
}

/** The smallest size the main partition may take: its filesystem's minimum rounded up to 1 MiB, never more than it has. */
function mainFloor(main: LayoutPartition): number {
  if (main.minSizeBytes === null) return main.sizeBytes;
  return Math.min(main.sizeBytes, alignUp(Math.max(main.minSizeBytes, 1), MiB));
}

const byStart = (layout: DiskLayout): LayoutPartition[] => [...layout.partitions].sort((a, b) => a.startBytes - b.startBytes || a.index - b.index);

/** The end of the last partition, or of the primary table when there is none. */
function inPlaceEnd(layout: DiskLayout): number {
  const lastEnd = layout.partitions.reduce((m, p) => Math.max(m, endOf(p)), 0);
  return Math.max(lastEnd, usableArea(layout.scheme, layout.sectorSize, layout.diskSize).firstUsable);
}

/** The smallest usable end that lets `main` keep at least its floor, with the partitions behind it packed after it. */
function movedUsableEnd(layout: DiskLayout, main: LayoutPartition): number {
  let cursor = alignUp(main.startBytes + mainFloor(main), MiB);
  let end = cursor;
  for (const p of byStart(layout).filter((x) => x.startBytes > main.startBytes)) {
    end = cursor + p.sizeBytes;
    cursor = alignUp(end, MiB);
  }
  return end;
}

/**
 * The smallest disk (bytes, a whole number of sectors) the image can be restored onto: the main
 * partition (as mainPartition picks it, or the one named) shrunk to its filesystem's minimum (rounded
 * up to 1 MiB) with the partitions behind it packed after it, or every partition where it is,
 * whichever needs less; plus the GPT backup area. With nothing to shrink that is the end of the
 * source's last partition plus the backup area.
 */
export function minDiskBytes(layout: DiskLayout, named?: number): number {
  const inPlace = inPlaceEnd(layout);
  const main = hasLogical(layout) ? null : mainPartition(layout, named);
  const usableEnd = main === null ? inPlace : Math.min(inPlace, movedUsableEnd(layout, main));
  return usableEnd + tailBytes(layout);
}

function checkNoOverlap(sorted: readonly LayoutPartition[]): void {
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1];
    const b = sorted[i];
    if (b.startBytes < endOf(a)) throw new LayoutPlanError(`partitions ${a.index} and ${b.index} overlap; a restore onto a disk of another size cannot move them (restore onto a disk of the image's own size)`);
  }
}

/** Adds a segment, joining it to the one before when both continue each other in the image and on the target. */
function pushSegment(out: Segment[], from: number, to: number, length: number): void {
  if (length <= 0) return;
  const last = out[out.length - 1];
  if (last && last.from + last.length === from && last.to + last.length === to) out[out.length - 1] = { from: last.from, to: last.to, length: last.length + length };
  else out.push({ from, to, length });
}

const inPlace = (layout: DiskLayout): PlacedPartition[] =>
  layout.partitions.map((p) => ({ index: p.index, fromStart: p.startBytes, fromSize: p.sizeBytes, toStart: p.startBytes, toSize: p.sizeBytes }));

function noFitReason(layout: DiskLayout, main: LayoutPartition | null): string {
  if (hasLogical(layout)) return 'an MBR with an extended partition or logical partitions is restored where it is, never moved or resized, so its last partition must fit';
  if (main === null) return 'no partition can be resized (none holds ntfs, ext2, ext3, ext4, xfs or btrfs), so every partition must fit where it is';
  const behind = byStart(layout).filter((p) => p.startBytes > main.startBytes);
  const rest = behind.length === 0 ? '' : behind.length === 1 ? `; partition ${behind[0].index} behind it keeps its size` : `; partitions ${behind.map((p) => p.index).join(', ')} behind it keep their size`;
  if (main.minSizeBytes === null) return `${partName(main)} cannot be shrunk (its filesystem's minimum size is not known)${rest}`;
  return `${partName(main)} can shrink to ${humanSize(mainFloor(main), 'up')} at the least${rest}`;
}

/**
 * Places the layout on a disk of `targetSize` bytes. Throws LayoutFitError when the disk is too small
 * for the used data, LayoutPlanError when opts.main names a partition that cannot be resized or a
 * move meets overlapping partitions. The sector sizes of image and disk must match (the caller checks).
 */
export function planRestore(layout: DiskLayout, targetSize: number, opts: { readonly main?: number } = {}): RestorePlan {
  const { sectorSize } = layout;
  const named = opts.main === undefined ? null : mainPartition(layout, opts.main);
  const base = { targetSize, sectorSize };
  if (targetSize === layout.diskSize) {
    return { ...base, main: null, partitions: inPlace(layout), segments: [{ from: 0, to: 0, length: layout.diskSize }], resize: 'none' };
  }
  const { firstUsable, usableEnd } = usableArea(layout.scheme, sectorSize, targetSize);
  const fail = (main: LayoutPartition | null): never => {
    throw new LayoutFitError(minDiskBytes(layout, opts.main), targetSize, noFitReason(layout, main));
  };
  const sorted = byStart(layout);
  const first = sorted[0];
  if (first && first.startBytes < firstUsable) {
    throw new LayoutPlanError(`partition ${first.index} starts at byte ${first.startBytes}, inside the table area a new ${layout.scheme.toUpperCase()} needs (up to byte ${firstUsable}); restore onto a disk of the image's own size`);
  }
  const keepAll = (): RestorePlan => {
    const end = inPlaceEnd(layout);
    if (end > usableEnd) fail(named ?? mainPartition(layout));
    const segments: Segment[] = [];
    pushSegment(segments, 0, 0, Math.min(end, layout.diskSize));
    return { ...base, main: null, partitions: inPlace(layout), segments, resize: 'none' };
  };
  if (hasLogical(layout)) return keepAll();
  const main = named ?? mainPartition(layout);
  if (main === null) return keepAll();
  checkNoOverlap(sorted);

  // Partitions behind the main one, packed against the end from the last one back.
  const behind = sorted.filter((p) => p.startBytes > main.startBytes);
  const moved = new Map<number, number>();
  let cursor = usableEnd;
  for (let i = behind.length - 1; i >= 0; i--) {
    cursor = alignDown(cursor - behind[i].sizeBytes, MiB);
    moved.set(behind[i].index, cursor);
  }
  const mainEnd = alignDown(cursor, MiB);
  const mainSize = mainEnd - main.startBytes;
  if (mainSize < main.sizeBytes) {
    if (inPlaceEnd(layout) <= usableEnd) return keepAll();
    if (mainSize < mainFloor(main)) fail(main);
  }
  const resize = mainSize > main.sizeBytes ? 'grow' : mainSize < main.sizeBytes ? 'shrink' : 'none';
  const partitions = layout.partitions.map((p) => {
    const toStart = moved.get(p.index) ?? p.startBytes;
    return { index: p.index, fromStart: p.startBytes, fromSize: p.sizeBytes, toStart, toSize: p.index === main.index ? mainSize : p.sizeBytes };
  });
  const segments: Segment[] = [];
  // Tables, boot code, gaps and the partitions before the main one stay where they are, and so does the main one unless it shrinks.
  pushSegment(segments, 0, 0, resize === 'shrink' ? main.startBytes : endOf(main));
  for (const p of behind) pushSegment(segments, p.startBytes, moved.get(p.index) as number, p.sizeBytes);
  return { ...base, main: resize === 'none' ? null : main.index, partitions, segments, resize };
}
