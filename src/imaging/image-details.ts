/**
 * An image as people want to see it: what the store records (show()) plus the partition table of
 * its newest version, which only reading the disk's first sectors can tell.
 */
import type { ImageStore, StoredImage } from './image-store.js';
import { readBytes } from './image-export.js';
import { readPartitionTable, type PartitionTable } from './partitions.js';

export interface ImageDetails extends StoredImage {
  /** The newest version's partition table; null when it could not be read (see partitionError). */
  readonly partitionTable: PartitionTable | null;
  /** Why the partition table could not be read, or null. */
  readonly partitionError: string | null;
}

/** The part of the store describeImage uses. */
export type DescribeSource = Pick<ImageStore, 'show' | 'openVersion'>;

/**
 * show() plus the newest version's partition table. A table that cannot be read (not parsable, or
 * in a damaged chunk) is reported in partitionError rather than thrown: the store's facts about the
 * image still hold and are worth showing.
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
  return { ...stored, partitionTable, partitionError };
}
