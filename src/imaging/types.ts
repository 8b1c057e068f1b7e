/** Types shared by the image store's modules and its callers. */
import type { DiskLayout } from './disk-layout.js';
import type { Logger } from '../lib/log.js';
import type { CodecPool } from './codec-pool.js';
import type { ChunkStore } from './chunk-store.js';
import type { TableEntry } from './manifest.js';

export type { ReadPiece as ImagePiece, Extent as ImageExtent } from '../lib/pieces.js';

export const EXTENT_HOLE_ZERO = 3;
export const EXTENT_DATA = 0;

export interface VersionInfo {
  readonly name: string;
  readonly version: number;
  readonly size: number;
  readonly sectorSize: number;
  readonly chunkSize: number;
  readonly digest: string;
  readonly created: string;
  readonly source: string;
  readonly dataBytes: number;
  readonly storedBytes: number;
}

export interface ImageSummary {
  readonly name: string;
  readonly latestVersion: number;
  readonly size: number;
  /**
   * The image's share of the store's chunk bytes, over all its versions: a chunk other images name
   * too is split between them, so the list's figures add up to what the store holds (store-space.ts).
   */
  readonly storedBytes: number;
  /** Chunk bytes no other image names: what removing the image would free. */
  readonly exclusiveBytes: number;
  readonly versions: number;
  readonly created: string;
}

/** Where a chunk is used, for log lines and errors that name the damage. */
export interface ChunkUse {
  readonly image: string;
  readonly offset: number;
}

/** A source of chunk hashes gc must keep: an open reader's or a live capture's table. */
export interface HashPin {
  /** Blocks of 32-byte binary hashes; all-zero entries are holes. */
  hashBlocks(): Iterable<Buffer>;
}

/** What captures and readers need from their store; implemented by ImageStore. */
export interface StoreContext {
  readonly log: Logger;
  readonly pool: CodecPool;
  readonly chunks: ChunkStore;
  readonly tmpDir: string;
  readonly compressionLevel: number;
  /** Decoded, verified chunk bytes, possibly shared with a cache: callers must not modify them. */
  loadChunk(hash: string, use: ChunkUse): Promise<Buffer>;
  addPin(pin: HashPin): void;
  removePin(pin: HashPin): void;
}

/** A version to commit: what a capture or a chunk upload hands the store's one commit path. */
export interface NewVersion {
  readonly name: string;
  readonly size: number;
  readonly sectorSize: number;
  readonly chunkSize: number;
  readonly source: string;
  /** The data chunks in ascending index order; called more than once, so it must yield the same each time. */
  entries(): Iterable<TableEntry>;
  /** For the log line: which path made the version. */
  readonly via: 'capture' | 'upload';
  /** What the capturing agent learnt of the disk's partitions (issue 12), kept beside the manifest; absent for NBD captures. */
  readonly layout?: DiskLayout;
}
