/**
 * Content-addressed chunk files: chunks/<first two hex digits>/<sha256 hex>.
 *
 * A chunk file is written once (temp → fsync → rename, by a codec worker: CodecPool.store) and never
 * modified; adopt() records it here. Reads go through CodecPool.load with pathOf(hash). Directory fsyncs are batched: syncDirs() runs before any manifest
 * naming new chunks is committed. While gc runs, every adopted hash is remembered so gc never unlinks a
 * chunk a capture just deduplicated against; adopting a hash gc is unlinking waits for the unlink and
 * tells the caller to write the chunk again.
 */
import { readdir, stat, unlink, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir } from './durable.js';

const HASH_RE = /^[0-9a-f]{64}$/;

export class ChunkStore {
  private readonly dirtyDirs = new Set<string>();
  private readonly deleting = new Map<string, Promise<void>>();
  private touched: Set<string> | null = null;

  constructor(
    readonly dir: string,
    private readonly tmpDir: string,
  ) {}

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const made: Promise<string | undefined>[] = [];
    for (let i = 0; i < 256; i++) made.push(mkdir(join(this.dir, i.toString(16).padStart(2, '0')), { recursive: true }));
    await Promise.all(made);
  }

  pathOf(hash: string): string {
    return join(this.dir, hash.slice(0, 2), hash);
  }

  /**
   * Records a chunk that a codec worker stored itself (or found present) via CodecPool.store.
   * Returns its size on disk, or null when the file is gone because gc removed it after the worker
   * looked: then the caller must store it again with `force`.
   */
  async adopt(hash: string, stored: number, existed: boolean): Promise<number | null> {
    const gcRunning = this.touched !== null;
    this.touched?.add(hash);
    const del = this.deleting.get(hash);
    if (del) await del;
    if (!gcRunning && del === undefined) {
      if (!existed) this.dirtyDirs.add(join(this.dir, hash.slice(0, 2)));
      return stored;
    }
    try {
      const st = await stat(this.pathOf(hash));
      if (st.size > 0) {
        if (!existed) this.dirtyDirs.add(join(this.dir, hash.slice(0, 2)));
        return st.size;
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    return null;
  }

  /** Makes every chunk renamed so far durable in its directory. */
  async syncDirs(): Promise<void> {
    const dirs = [...this.dirtyDirs];
    this.dirtyDirs.clear();
    await Promise.all(dirs.map((d) => fsyncDir(d)));
  }

  async *list(): AsyncGenerator<{ hash: string; path: string }> {
    for (let i = 0; i < 256; i++) {
      const sub = join(this.dir, i.toString(16).padStart(2, '0'));
      let names: string[];
      try {
        names = await readdir(sub);
      } catch {
        continue;
      }
      for (const n of names) if (HASH_RE.test(n)) yield { hash: n, path: join(sub, n) };
    }
  }

  beginGc(): void {
    this.touched = new Set();
  }

  endGc(): void {
    this.touched = null;
  }

  /** Unlinks a chunk unless it was put since beginGc(); returns the bytes freed (0 if kept). */
  async collect(hash: string): Promise<number> {
    if (this.touched?.has(hash)) return 0;
    const p = this.pathOf(hash);
    const work = (async () => {
      const st = await stat(p);
      await unlink(p);
      return st.size;
    })();
    const done = work.then(
      () => undefined,
      () => undefined,
    );
    this.deleting.set(hash, done);
    try {
      return await work;
    } catch {
      return 0;
    } finally {
      this.deleting.delete(hash);
    }
  }
}
