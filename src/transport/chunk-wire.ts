/**
 * The chunk transport's wire form (issue 11; boot/client/README.md has the calls): the answers both
 * sides parse and the ordered chunk list's bytes. The server's routes (chunk-transfer.ts) and the
 * imaging agent (src/agent/) both use this one copy, so they cannot drift apart. It imports only the
 * disk layout's types: the agent ships it into the thin client.
 */
import type { DiskLayout } from '../imaging/disk-layout.js';

/** Bytes per entry of the ordered chunk list: the raw sha256, all zeros for an all-zero chunk (a hole). */
export const LIST_ENTRY_BYTES = 32;
/** Hashes one `known` call may ask about. */
export const KNOWN_BATCH = 1024;

/** start's answer for a capture over chunks. */
export interface CaptureStart {
  readonly transport: 'chunks';
  readonly kind: 'capture';
  readonly size: number;
  readonly sectorSize: number;
  readonly chunkSize: number;
  readonly knownBatch: number;
}

/** start's answer for a deploy over chunks: the version the list and files belong to. */
export interface DeployStart {
  readonly transport: 'chunks';
  readonly kind: 'deploy';
  readonly size: number;
  readonly sectorSize: number;
  readonly chunkSize: number;
  readonly chunkCount: number;
  readonly version: number;
  readonly digest: string;
  /** The source disk's partitions and free chunks (issue 12), or null for a version captured without them. */
  readonly layout: DiskLayout | null;
  /**
   * The partition (table index) the task names to grow or shrink to the target disk, or null: then
   * the largest ntfs/ext2/3/4/xfs/btrfs partition (layout-plan.ts mainPartition).
   */
  readonly mainPartition: number | null;
}

/** start's answer for a task over NBD: the thin client copies the whole disk with nbdcopy. */
export interface NbdStart {
  readonly transport: 'nbd';
  readonly nbd: string;
}

export type StartAnswer = CaptureStart | DeployStart | NbdStart;

/** commit's answer: the version the list became. */
export interface CommitAnswer {
  readonly version: number;
  readonly digest: string;
  readonly dataBytes: number;
}

/** Chunk `index`'s name (hex sha256) in an ordered chunk list, or null for an all-zero chunk. */
export function hashAt(list: Uint8Array, index: number): string | null {
  const raw = list.subarray(index * LIST_ENTRY_BYTES, (index + 1) * LIST_ENTRY_BYTES);
  return raw.every((b) => b === 0) ? null : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('hex');
}

/** Records chunk `index`'s name in `list` (a hole needs nothing: a new list is all zeros). */
export function setHash(list: Buffer, index: number, hash: string): void {
  list.write(hash, index * LIST_ENTRY_BYTES, LIST_ENTRY_BYTES, 'hex');
}
