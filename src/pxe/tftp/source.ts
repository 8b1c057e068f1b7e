/**
 * Where transfer payload comes from. Small files (boot loaders) are read once into a shared
 * in-memory cache; big files are streamed through one bounded buffer per transfer, so memory
 * stays flat no matter how many hundred-MB transfers run.
 */
import { constants, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

export interface BlockSource {
  readonly size: number;
  /** True when bytes [start, end) can be viewed without I/O. */
  has(start: number, end: number): boolean;
  /** Makes [start, end) viewable; `end - start` must not exceed the source's window capacity. */
  load(start: number, end: number): Promise<void>;
  /** Zero-copy view; only valid after has()/load() for the same range. */
  view(start: number, end: number): Buffer;
  close(): Promise<void>;
}

export class MemorySource implements BlockSource {
  constructor(private readonly data: Buffer) {}
  get size(): number {
    return this.data.length;
  }
  has(): boolean {
    return true;
  }
  async load(): Promise<void> {}
  view(start: number, end: number): Buffer {
    return this.data.subarray(start, end);
  }
  async close(): Promise<void> {}
}

export class FileChangedError extends Error {
  constructor(file: string, detail: string) {
    super(`${file} changed while being served (${detail}); the client must retry the request`);
    this.name = 'FileChangedError';
  }
}

export class StreamSource implements BlockSource {
  private buf = Buffer.alloc(0);
  private bufStart = 0;

  constructor(
    private readonly fh: FileHandle,
    private readonly file: string,
    readonly size: number,
    /** Read granularity; the server sizes it to cover at least one full window. */
    private readonly chunkBytes: number,
  ) {}

  has(start: number, end: number): boolean {
    return start >= this.bufStart && end <= this.bufStart + this.buf.length;
  }

  async load(start: number, end: number): Promise<void> {
    const want = Math.min(Math.max(this.chunkBytes, end - start), this.size - start);
    // A fresh buffer each chunk: views handed to in-flight sends must never be overwritten.
    const buf = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.fh.read(buf, got, want - got, start + got);
      if (bytesRead === 0) throw new FileChangedError(this.file, `ended at ${start + got}, expected ${this.size} bytes`);
      got += bytesRead;
    }
    this.buf = buf;
    this.bufStart = start;
  }

  view(start: number, end: number): Buffer {
    return this.buf.subarray(start - this.bufStart, end - this.bufStart);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

interface CacheEntry {
  readonly key: string;
  readonly data: Promise<Buffer>;
  readonly size: number;
}

export interface FileCacheOptions {
  /** Files larger than this are streamed, not cached. */
  readonly maxFileBytes: number;
  /** Total cached bytes; least recently used entries go first. */
  readonly maxTotalBytes: number;
}

/** Keyed by path plus identity (inode, size, mtime) so a replaced loader is picked up at once. */
export class FileCache {
  private readonly entries = new Map<string, CacheEntry>();
  private total = 0;

  constructor(private readonly opts: FileCacheOptions) {}

  fits(size: number): boolean {
    return size <= this.opts.maxFileBytes;
  }

  /** Returns cached bytes or reads them from `fh` (which the caller still owns and closes). */
  async get(file: string, st: Stats, fh: FileHandle): Promise<Buffer> {
    const key = `${st.ino}:${st.size}:${st.mtimeMs}`;
    const hit = this.entries.get(file);
    if (hit && hit.key === key) {
      this.entries.delete(file);
      this.entries.set(file, hit);
      return hit.data;
    }
    if (hit) this.evict(file, hit);
    const data = readExactly(fh, file, st.size);
    const entry: CacheEntry = { key, data, size: st.size };
    this.entries.set(file, entry);
    this.total += st.size;
    data.catch(() => {
      if (this.entries.get(file) === entry) this.evict(file, entry);
    });
    for (const [f, e] of this.entries) {
      if (this.total <= this.opts.maxTotalBytes || e === entry) break;
      this.evict(f, e);
    }
    return data;
  }

  private evict(file: string, e: CacheEntry): void {
    this.entries.delete(file);
    this.total -= e.size;
  }
}

async function readExactly(fh: FileHandle, file: string, size: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(size);
  let got = 0;
  while (got < size) {
    const { bytesRead } = await fh.read(buf, got, size - got, got);
    if (bytesRead === 0) throw new FileChangedError(file, `ended at ${got}, expected ${size} bytes`);
    got += bytesRead;
  }
  return buf;
}

export type OpenResult = { ok: true; source: BlockSource } | { ok: false; reason: 'not-file' | 'forbidden' | 'io'; detail: string };

/** Opens an already-resolved path without following a symlink swapped in after resolution; O_NONBLOCK so a FIFO cannot hang the open. */
export async function openSource(file: string, cache: FileCache, chunkBytes: number): Promise<OpenResult> {
  let fh: FileHandle;
  try {
    fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'ELOOP') return { ok: false, reason: 'forbidden', detail: `${file}: ${code}` };
    return { ok: false, reason: 'io', detail: `${file}: ${code ?? String(err)}` };
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      return { ok: false, reason: 'not-file', detail: `${file} is not a regular file` };
    }
    if (cache.fits(st.size)) {
      const data = await cache.get(file, st, fh);
      await fh.close();
      return { ok: true, source: new MemorySource(data) };
    }
    return { ok: true, source: new StreamSource(fh, file, st.size, chunkBytes) };
  } catch (err) {
    await fh.close().catch(() => undefined);
    return { ok: false, reason: 'io', detail: err instanceof Error ? err.message : String(err) };
  }
}
