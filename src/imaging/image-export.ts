/**
 * Versions out of the store as raw bytes: a whole version to a file, disk or stream, or a small
 * byte range into one buffer.
 */
import { open, stat } from 'node:fs/promises';
import { fstat, fsync, ftruncate, write } from 'node:fs';
import { promisify } from 'node:util';
import type { Writable } from 'node:stream';
import type { ImageStore, ProgressFn } from './image-store.js';
import type { VersionReader } from './version-reader.js';
import type { VersionInfo } from './types.js';

const pwriteAsync = promisify(write);
const ftruncateAsync = promisify(ftruncate);
const fsyncAsync = promisify(fsync);
const fstatAsync = promisify(fstat);

/** The part of the store an export uses. */
export type ExportSource = Pick<ImageStore, 'openVersion' | 'versionInfo'>;

export interface ExportOptions {
  /** Default: the newest version. */
  readonly version?: number;
  readonly onProgress?: ProgressFn;
}

/** Chunks read ahead of the one being written, so decoding overlaps writing. */
const READ_AHEAD = 8;

/**
 * Writes a version as a raw disk image. To a path or fd, holes are skipped and the file is truncated
 * to size, so it stays sparse; to a stream, holes are written as zeroes.
 */
export async function exportTo(store: ExportSource, name: string, target: string | number | Writable, opts: ExportOptions = {}): Promise<VersionInfo> {
  const reader = await store.openVersion(name, opts.version);
  try {
    const n = reader.chunkCount;
    const fetches: Promise<Buffer | null>[] = [];
    const fetch = (i: number): Promise<Buffer | null> => {
      const p = reader.readChunk(i);
      p.catch(() => undefined); // awaited in order below; a failure must not count as unhandled meanwhile
      return p;
    };
    for (let i = 0; i < Math.min(READ_AHEAD, n); i++) fetches.push(fetch(i));
    let sink: (i: number, data: Buffer | null) => Promise<void>;
    let finish: () => Promise<void>;
    if (typeof target === 'string' || typeof target === 'number') {
      // A path to a block device must not be truncated ('w' would fail anyway): open it 'r+'.
      const isDev = typeof target === 'string' && (await stat(target).then((st) => st.isBlockDevice(), () => false));
      const fh = typeof target === 'string' ? await open(target, isDev ? 'r+' : 'w') : null;
      const fd = fh ? fh.fd : (target as number);
      const regular = (await fstatAsync(fd)).isFile();
      const zero = Buffer.alloc(reader.chunkSize);
      if (regular) await ftruncateAsync(fd, 0);
      sink = async (i, got) => {
        // Regular files stay sparse; a disk gets real zeroes, since its old contents are not zero.
        if (!got && regular) return;
        const data = got ?? zero.subarray(0, reader.chunkLength(i));
        let off = 0;
        while (off < data.length) off += (await pwriteAsync(fd, data, off, data.length - off, i * reader.chunkSize + off)).bytesWritten;
      };
      finish = async () => {
        if (regular) await ftruncateAsync(fd, reader.size);
        await fsyncAsync(fd);
        if (fh) await fh.close();
      };
    } else {
      const zero = Buffer.alloc(reader.chunkSize);
      sink = async (i, data) => {
        const chunk = data ?? zero.subarray(0, reader.chunkLength(i));
        if (!target.write(chunk)) await new Promise<void>((r) => target.once('drain', r));
      };
      finish = async () => {
        await new Promise<void>((resolve, reject) => {
          target.once('error', reject);
          target.end(resolve);
        });
      };
    }
    for (let i = 0; i < n; i++) {
      const data = await fetches[i];
      fetches[i] = Promise.resolve(null);
      if (i + READ_AHEAD < n) fetches[i + READ_AHEAD] = fetch(i + READ_AHEAD);
      await sink(i, data);
      opts.onProgress?.(Math.min((i + 1) * reader.chunkSize, reader.size), reader.size);
    }
    await finish();
    return await store.versionInfo(name, reader.version);
  } finally {
    reader.close();
  }
}

/** Reads a byte range of a version into one buffer, holes as zeroes (small reads only: partition tables, superblocks). */
export async function readBytes(reader: VersionReader, offset: number, length: number): Promise<Buffer> {
  const out = Buffer.alloc(length);
  for (const p of await reader.read(offset, length)) if (p.kind === 'data') p.data.copy(out, p.offset - offset);
  return out;
}
