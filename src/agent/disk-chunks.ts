/**
 * A disk (or a file standing in for one) as the store sees it: aligned chunks of the store's chunk
 * size, the last one shorter, each named by sha256 of its bytes or marked as all zeros. Reads run a
 * few chunks ahead of the consumer and hashing runs on every core, so neither waits for the other.
 */
import { open } from 'node:fs/promises';
import type { HashPool } from './hash-pool.js';

export interface DiskChunk {
  readonly index: number;
  readonly offset: number;
  readonly length: number;
  /** sha256 of the bytes (the store's chunk name), or null when every byte is zero: a hole in the image. */
  readonly hash: string | null;
  /** The chunk's bytes, owned by this chunk: a caller may upload or compare them. Empty when `skipped`. */
  readonly data: Buffer;
  /** pieces() said there is nothing of this chunk to read (free space, or nowhere on this disk): nothing was read, hash is null. */
  readonly skipped: boolean;
  /** Bytes read from the disk for this chunk. */
  readonly readBytes: number;
}

/** Part of a chunk that lives on the disk: bytes [at, at+length) of the chunk are disk bytes [diskOffset, diskOffset+length). */
export interface ChunkPiece {
  readonly at: number;
  readonly diskOffset: number;
  readonly length: number;
}

export interface ReadDiskOptions {
  readonly chunkSize: number;
  readonly pool: HashPool;
  /** Bytes to read; default the file's size. A block device reports 0 there: the caller passes its size. */
  readonly size?: number;
  /** Chunks read and hashed ahead of the consumer (default 8): memory is this many chunks. */
  readonly ahead?: number;
  /**
   * Where chunk `index` lives on the disk, when not simply at index × chunkSize: the pieces to read
   * (the rest of the chunk reads as zeros), [] to read nothing (the chunk is skipped), or null for
   * the whole chunk in place. A capture reads only the used blocks this way; a deploy onto a disk
   * of another size reads the chunk where the restore plan put it.
   */
  readonly pieces?: (index: number) => readonly ChunkPiece[] | null;
}

/** Bytes of disk read ahead of a transfer: 8 chunks of the default 1 MiB, fewer of larger ones (at least 2). */
const READ_AHEAD_BYTES = 8 * 1024 * 1024;

/** The `ahead` for chunks of `chunkSize` bytes, so memory stays near READ_AHEAD_BYTES whatever the store's chunk size. */
export function readAheadFor(chunkSize: number): number {
  return Math.min(8, Math.max(2, Math.floor(READ_AHEAD_BYTES / chunkSize)));
}

/** The chunks of `path` in order. Stops (and closes the file) when the consumer stops. */
export async function* readDiskChunks(path: string, options: ReadDiskOptions): AsyncGenerator<DiskChunk> {
  const { chunkSize, pool } = options;
  const fh = await open(path, 'r');
  try {
    const size = options.size ?? (await fh.stat()).size;
    const count = Math.ceil(size / chunkSize);
    const load = async (index: number): Promise<DiskChunk> => {
      const offset = index * chunkSize;
      const length = Math.min(chunkSize, size - offset);
      const pieces = options.pieces?.(index) ?? [{ at: 0, diskOffset: offset, length }];
      if (pieces.length === 0) return { index, offset, length, hash: null, data: Buffer.alloc(0), skipped: true, readBytes: 0 };
      let readBytes = 0;
      // Zero-filled: the bytes no piece covers read as zeros.
      const buffer = new ArrayBuffer(length);
      const view = Buffer.from(buffer);
      for (const p of pieces) {
        let got = 0;
        while (got < p.length) {
          const { bytesRead } = await fh.read(view, p.at + got, p.length - got, p.diskOffset + got);
          if (bytesRead === 0) throw new Error(`${path} ended at byte ${p.diskOffset + got}, before the ${p.diskOffset + p.length} this chunk needs: the disk shrank or could not be read`);
          got += bytesRead;
        }
        readBytes += p.length;
      }
      const { hash, buffer: back } = await pool.name(buffer, length);
      return { index, offset, length, hash, data: Buffer.from(back, 0, length), skipped: false, readBytes };
    };
    const ahead = Math.max(1, options.ahead ?? 8);
    const queue: Promise<DiskChunk>[] = [];
    let next = 0;
    const fill = (): void => {
      while (queue.length < ahead && next < count) {
        const p = load(next++);
        // Awaited in order below; a failure must not count as unhandled while it waits its turn.
        p.catch(() => undefined);
        queue.push(p);
      }
    };
    fill();
    while (queue.length > 0) {
      const chunk = await queue.shift()!;
      fill();
      yield chunk;
    }
  } finally {
    await fh.close();
  }
}
