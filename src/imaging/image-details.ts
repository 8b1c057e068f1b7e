/**
 * An image as people want to see it: what the store records (show()) plus what its newest version
 * knows of the disk it came from: the partition table (read from the disk's first sectors) and, for
 * a version the imaging agent captured, the disk layout stored beside it (issue 12), from which
 * follows the smallest disk the image fits.
 */
import type { ImageStore, StoredImage } from './image-store.js';
import { freeChunkCount, freeChunkTest, type DiskLayout, type LayoutPartition } from './disk-layout.js';
import { readBytes } from './image-export.js';
import { minDiskBytes } from './layout-plan.js';
import { readPartitionTable, type PartitionTable } from './partitions.js';

export interface ImageDetails extends StoredImage {
  /** The newest version's partition table; null when it could not be read (see partitionError). */
  readonly partitionTable: PartitionTable | null;
  /** Why the partition table could not be read, or null. */
  readonly partitionError: string | null;
  /**
   * The newest version's disk layout; null when it was captured without one (over NBD, imported, or
   * before issue 12) or its layout file is damaged (see layoutError).
   */
  readonly layout: DiskLayout | null;
  /** Why the layout file could not be read, or null. */
  readonly layoutError: string | null;
  /**
   * The smallest disk (bytes) the newest version can be deployed onto: from the layout when there is
   * one; without a layout the image is restored at its own size, so that size.
   */
  readonly fitsDiskBytes: number;
}

/** The part of the store describeImage uses. */
export type DescribeSource = Pick<ImageStore, 'show' | 'openVersion' | 'layout'>;

/**
 * show() plus the newest version's partition table and layout. A table that cannot be read (not
 * parsable, or in a damaged chunk) is reported in partitionError, a damaged layout file in
 * layoutError, rather than thrown: the store's facts about the image still hold and are worth showing.
 */
export async function describeImage(store: DescribeSource, name: string): Promise<ImageDetails> {
  const stored = await store.show(name);
  let partitionTable: PartitionTable | null = null;
  let partitionError: string | null = null;
  const reader = await store.openVersion(name, stored.latestVersion);
  try {
    partitionTable = await readPartitionTable(reader.sectorSize, reader.size, (o, l) => readBytes(reader, o, l));
  } catch (e) {
    partitionError = (e as Error).message;
  } finally {
    reader.close();
  }
  let layout: DiskLayout | null = null;
  let layoutError: string | null = null;
  try {
    layout = await store.layout(name, stored.latestVersion);
  } catch (e) {
    layoutError = (e as Error).message;
  }
  const fitsDiskBytes = layout ? minDiskBytes(layout) : stored.size;
  return { ...stored, partitionTable, partitionError, layout, layoutError, fitsDiskBytes };
}

/** Bytes in the layout's free chunks (not stored, not written on restore); the disk's last chunk may be short and counts only what it holds. */
export function layoutFreeBytes(l: DiskLayout): number {
  const chunks = Math.ceil(l.diskSize / l.chunkSize);
  const lastShortBy = chunks * l.chunkSize - l.diskSize;
  return freeChunkCount(l) * l.chunkSize - (chunks > 0 && freeChunkTest(l)(chunks - 1) ? lastShortBy : 0);
}

/** How the capture treated a partition and what a restore does with it, in words (page and CLI). */
export function captureText(p: LayoutPartition): string {
  if (p.mode === 'swap') return 'swap: recreated on restore';
  if (p.mode === 'whole') return p.note ? `whole: ${p.note}` : 'whole';
  return p.note ? `used blocks (${p.note})` : 'used blocks';
}
