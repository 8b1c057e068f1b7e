/**
 * Raw disk images into the store: a stream or a file becomes a new version through an ordinary
 * capture, so an import commits (or leaves nothing) exactly as a network capture does.
 */
import { stat } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { DEFAULT_CHUNK_SIZE } from './chunk-format.js';
import type { ImageStore, ProgressFn } from './image-store.js';
import type { VersionInfo } from './types.js';
import type { DiskLayout } from './disk-layout.js';

/** The part of the store an import uses. */
export type ImportTarget = Pick<ImageStore, 'beginCapture'>;

export interface ImportStreamOptions {
  /** Recorded in the version's manifest: where the image came from. */
  readonly source: string;
  readonly onProgress?: ProgressFn;
  /** 512 (default) or 4096. */
  readonly sectorSize?: number;
  /** The disk's layout (issue 12), committed beside the version; its free chunks must read as zeros in the input. */
  readonly layout?: DiskLayout;
}

export interface ImportFileOptions {
  /** Default: `import <path>`. */
  readonly source?: string;
  readonly onProgress?: ProgressFn;
  /** As ImportStreamOptions.layout; its sector size is the import's. */
  readonly layout?: DiskLayout;
}

/** Chunk writes in flight at once: the codec workers compress several while at most this many chunks of input wait in memory. */
const WRITES_IN_FLIGHT = 8;

/** Captures a raw disk image from a stream of exactly `size` bytes. */
export async function importStream(store: ImportTarget, name: string, input: Readable, size: number, opts: ImportStreamOptions): Promise<VersionInfo> {
  const cap = store.beginCapture(name, { size, source: opts.source, sectorSize: opts.sectorSize, ...(opts.layout ? { layout: opts.layout } : {}) });
  const cs = DEFAULT_CHUNK_SIZE;
  try {
    let offset = 0;
    let cur = Buffer.allocUnsafe(cs);
    let fill = 0;
    const inflight = new Set<Promise<void>>();
    const push = async (buf: Buffer, at: number): Promise<void> => {
      const p = cap.write(at, buf);
      inflight.add(p);
      void p.finally(() => inflight.delete(p)).catch(() => undefined);
      if (inflight.size >= WRITES_IN_FLIGHT) await Promise.race(inflight);
    };
    for await (const piece of input as AsyncIterable<Buffer | string>) {
      let data = typeof piece === 'string' ? Buffer.from(piece) : piece;
      if (offset + fill + data.length > size) throw new RangeError(`input is longer than the declared size ${size}`);
      while (data.length > 0) {
        const n = Math.min(cs - fill, data.length);
        data.copy(cur, fill, 0, n);
        fill += n;
        data = data.subarray(n);
        if (fill === cs) {
          await push(cur, offset);
          offset += fill;
          cur = Buffer.allocUnsafe(cs);
          fill = 0;
          opts.onProgress?.(offset, size);
        }
      }
    }
    if (fill > 0) {
      await push(cur.subarray(0, fill), offset);
      offset += fill;
    }
    await Promise.all(inflight);
    if (offset !== size) throw new RangeError(`input ended after ${offset} bytes, expected ${size}`);
    opts.onProgress?.(size, size);
    return await cap.commit();
  } catch (e) {
    await cap.abort(`import failed: ${(e as Error).message}`);
    throw e;
  }
}

/** Imports a raw image file, skipping nothing: holes are detected per chunk. */
export async function importFile(store: ImportTarget, name: string, path: string, opts: ImportFileOptions = {}): Promise<VersionInfo> {
  const st = await stat(path);
  return importStream(store, name, createReadStream(path, { highWaterMark: DEFAULT_CHUNK_SIZE }), st.size, { source: opts.source ?? `import ${path}`, onProgress: opts.onProgress, ...(opts.layout ? { layout: opts.layout, sectorSize: opts.layout.sectorSize } : {}) });
}
