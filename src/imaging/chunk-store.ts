/**
 * Content-addressed chunk files: chunks/<first two hex digits>/<sha256 hex>.
 *
 * A chunk file is written once (temp → fsync by a codec worker: CodecPool.store; rename into place by
 * adopt(), which records it first) and never modified. Reads go through CodecPool.load with pathOf(hash). Directory fsyncs are batched: syncDirs() runs before any manifest
 * naming new chunks is committed. While gc runs, every adopted hash is remembered so gc never unlinks a
 * chunk a capture just deduplicated against; adopting a hash gc is unlinking waits for the unlink and
 * tells the caller to write the chunk again.
 *
 * Provisional chunks: a file an open capture wrote that no committed manifest names yet. Each is
 * counted per chunk slot of open captures that use it; when a capture overwrites or zeroes a chunk, or
 * aborts, its count drops, and at zero the file is unlinked at once. So a client that rewrites the
 * same blocks over and over (a filesystem on nbd-client) does not fill the disk with superseded
 * chunks, and an aborted capture leaves no orphans behind. A commit makes its chunks permanent. A
 * chunk upload hands each chunk it recorded in its image's upload journal to gc (handOver): an abort
 * leaves it for the next upload of that image, and gc removes it once the journal is gone or expired.
 */
import { readdir, rename, stat, unlink, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir } from '../lib/durable-write.js';

const HASH_RE = /^[0-9a-f]{64}$/;

/** What a codec worker reported about one stored chunk (see StoreOutcome). */
export interface AdoptInput {
  readonly hash: string;
  readonly stored: number;
  readonly fresh: boolean;
  /** A new file to rename into place, or null when an intact file was found there. */
  readonly tmpPath: string | null;
}
/** Hashes remembered per kind of event, so a codec answer that predates the event is not trusted. */
const MAX_REMEMBERED = 65536;

/**
 * When each hash last had one kind of event (an unlink, a commit), by epoch. Bounded: once the oldest
 * is forgotten, anything older than it counts as "maybe happened since", the safe answer.
 */
class EventEpochs {
  private readonly at = new Map<string, number>();
  private floor = 0;

  mark(hash: string, epoch: number): void {
    this.at.delete(hash);
    this.at.set(hash, epoch);
    if (this.at.size > MAX_REMEMBERED) {
      const [oldest, when] = this.at.entries().next().value as [string, number];
      this.at.delete(oldest);
      this.floor = when;
    }
  }

  /** Did (or may) `hash` have this event after `epoch`? */
  since(hash: string, epoch: number): boolean {
    return (this.at.get(hash) ?? -1) > epoch || epoch < this.floor;
  }
}

export class ChunkStore {
  private readonly dirtyDirs = new Set<string>();
  private readonly deleting = new Map<string, Promise<void>>();
  private touched: Set<string> | null = null;
  private readonly provisional = new Map<string, number>();
  /** Counts unlinks; a store request notes it when sent so adopt() can tell an unlink happened since. */
  private epoch = 0;
  private readonly unlinked = new EventEpochs();
  /** Hashes a commit made permanent, by epoch: a store answer older than that must not make them provisional. */
  private readonly settledAt = new EventEpochs();

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

  /** Pass to adopt(): taken before a codec worker looks for a chunk file (counts unlinks and commits). */
  get unlinkEpoch(): number {
    return this.epoch;
  }

  /**
   * Records a chunk a codec worker stored (or found intact) via CodecPool.store, on behalf of one
   * chunk slot of an open capture. A new file (`tmpPath`) is counted first and renamed into place
   * after, so gc never sees a chunk file the store has not recorded. Returns the file's size, or null
   * when a file found in place is gone because gc or a provisional release unlinked it after the
   * worker looked (`sentEpoch`): then the caller must store it again with `force`.
   */
  async adopt(found: AdoptInput, sentEpoch: number): Promise<number | null> {
    const { hash } = found;
    const gcRunning = this.touched !== null;
    this.touched?.add(hash);
    // An unlink of this name in progress must end before anything is recorded under it.
    for (let del = this.deleting.get(hash); del !== undefined; del = this.deleting.get(hash)) await del;
    if (found.tmpPath !== null) {
      // A file that did not exist before this store is named by no manifest, unless a commit settled
      // it since the worker looked (two captures wrote the same new chunk).
      this.count(hash, found.fresh && !this.settledAt.since(hash, sentEpoch));
      await rename(found.tmpPath, this.pathOf(hash));
      this.dirtyDirs.add(join(this.dir, hash.slice(0, 2)));
      return found.stored;
    }
    let size: number | null = found.stored;
    if (gcRunning || this.unlinked.since(hash, sentEpoch)) {
      size = null;
      const looked = this.epoch;
      try {
        const st = await stat(this.pathOf(hash));
        if (st.size > 0) size = st.size;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      // An unlink may have started, or even finished, while stat ran.
      if (size === null || this.deleting.has(hash) || this.unlinked.since(hash, looked)) return null;
    }
    this.count(hash, false);
    return size;
  }

  /** One more chunk slot uses `hash`: counted if it is provisional (or becomes so, `fresh`). */
  private count(hash: string, fresh: boolean): void {
    if (fresh || this.provisional.has(hash)) this.provisional.set(hash, (this.provisional.get(hash) ?? 0) + 1);
  }

  /** One chunk slot of an open capture stopped using `hash` (overwritten, zeroed, or aborted). */
  async release(hash: string): Promise<void> {
    const n = this.provisional.get(hash);
    if (n === undefined) return;
    if (n > 1) {
      this.provisional.set(hash, n - 1);
      return;
    }
    this.provisional.delete(hash);
    await this.unlink(hash);
  }

  /** A manifest naming these chunks was committed: they are no longer any capture's to drop. */
  settle(hashes: Iterable<string>): void {
    this.epoch++;
    for (const h of hashes) {
      this.provisional.delete(h);
      this.settledAt.mark(h, this.epoch);
    }
  }

  /**
   * An upload journal now names these chunks (see upload-journal.ts): like settle(), no release drops
   * them any more; gc removes them once no manifest, pin or young journal names them.
   */
  handOver(hashes: Iterable<string>): void {
    this.settle(hashes);
  }

  /**
   * These chunk files may have been renamed into place by an earlier process that did not sync their
   * directories (an upload cut by a crash): the next manifest that names them syncs those first.
   */
  markUnsynced(hashes: Iterable<string>): void {
    for (const h of hashes) this.dirtyDirs.add(join(this.dir, h.slice(0, 2)));
  }

  /** Provisional chunk files (written by open captures, not yet committed). */
  get provisionalCount(): number {
    return this.provisional.size;
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

  /** Unlinks a chunk unless it was put since beginGc() or an open capture uses it; returns the bytes freed (0 if kept). */
  async collect(hash: string): Promise<number> {
    if (this.touched?.has(hash) || this.provisional.has(hash)) return 0;
    return this.unlink(hash);
  }

  private async unlink(hash: string): Promise<number> {
    const p = this.pathOf(hash);
    this.epoch++;
    this.unlinked.mark(hash, this.epoch);
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
      if (this.deleting.get(hash) === done) this.deleting.delete(hash);
    }
  }
}
