/**
 * A capture: a new version being written, in any order and in pieces, as nbdcopy or qemu-img do, or
 * rewritten over and over, as a filesystem on nbd-client does.
 *
 * Each chunk is a small state machine, and every operation on one chunk runs on that chunk's own
 * promise chain, so pieces for different chunks proceed in parallel while operations on one chunk run
 * strictly in the order they were accepted. A chunk being written lives in a buffer (its bytes plus
 * the ranges written so far); bytes never written read as zero. Buffers stay in RAM, full or not,
 * until more than `maxPartialChunks` are held: then the least recently used one is evicted on its own
 * chain (a full one is handed to a codec worker, which hashes, compresses and stores it; a partial one
 * is spilled to a sparse temp file). Writing a chunk that was already stored loads it back first. So
 * a chunk rewritten while it is hot costs no store at all, and one evicted and rewritten later
 * supersedes its stored file, which the chunk store drops at once if only this capture used it.
 * At most `maxPendingChunks` evictions run before writes wait (backpressure). Whole-chunk zeroes and
 * trims become holes without buffering. commit() stores what is still buffered.
 *
 * Every connection shares this one object, so a read on any connection sees every completed write.
 */
import { open, rm, type FileHandle } from 'node:fs/promises';
import { chunkCountFor, chunkLength } from './manifest.js';
import { tempName } from '../lib/durable-write.js';
import { ChunkTable } from './chunk-table.js';
import type { ChunkBuffer } from './codec-pool.js';
import type { HashPin, ImagePiece, StoreContext, VersionInfo } from './types.js';
import type { DiskLayout } from './disk-layout.js';

export interface CaptureOptions {
  readonly size: number;
  readonly sectorSize?: number;
  readonly source: string;
  /** Chunk buffers kept in RAM before evicting (default 32, i.e. 32 MiB with 1 MiB chunks). */
  readonly maxPartialChunks?: number;
  /** Evictions (stores or spills) in flight before writes wait (default 16). */
  readonly maxPendingChunks?: number;
  /** The disk's layout (issue 12), committed beside the version: an import of a disk whose partitions are known (a fitted version). */
  readonly layout?: DiskLayout;
}

export class CaptureClosedError extends Error {
  constructor(name: string, state: string, reason?: string) {
    super(`capture of ${name} is ${state}${reason ? ` (${reason})` : ''}; start a new capture`);
    this.name = 'CaptureClosedError';
  }
}

interface PartialChunk {
  /** null while spilled. */
  buf: ChunkBuffer | null;
  /** Covered byte ranges within the chunk, flat [start, end, start, end, …], sorted and merged. */
  covered: number[];
  lastUse: number;
  evictQueued: boolean;
}

type CaptureState = 'open' | 'committing' | 'committed' | 'aborted';

/** Zeroes the bytes of `buf` outside the covered ranges. */
function zeroGaps(buf: Buffer, covered: readonly number[]): void {
  let pos = 0;
  for (let i = 0; i < covered.length; i += 2) {
    if (covered[i] > pos) buf.fill(0, pos, covered[i]);
    pos = covered[i + 1];
  }
  if (pos < buf.length) buf.fill(0, pos);
}

/** Adds [s, e) to a sorted, merged flat range list. */
function addRange(r: number[], s: number, e: number): number[] {
  const out: number[] = [];
  let i = 0;
  while (i < r.length && r[i + 1] < s) {
    out.push(r[i], r[i + 1]);
    i += 2;
  }
  let ns = s;
  let ne = e;
  while (i < r.length && r[i] <= ne) {
    ns = Math.min(ns, r[i]);
    ne = Math.max(ne, r[i + 1]);
    i += 2;
  }
  out.push(ns, ne);
  while (i < r.length) {
    out.push(r[i], r[i + 1]);
    i += 2;
  }
  return out;
}

/** Cuts `slices` (one payload in order) into consecutive parts of the pieces' lengths, as views. */
function splitSlices(slices: readonly Buffer[], pieces: readonly { len: number }[]): Buffer[][] {
  const out: Buffer[][] = [];
  let si = 0;
  let so = 0;
  for (const p of pieces) {
    const part: Buffer[] = [];
    let left = p.len;
    while (left > 0) {
      const b = slices[si];
      const n = Math.min(b.length - so, left);
      part.push(so === 0 && n === b.length ? b : b.subarray(so, so + n));
      left -= n;
      so += n;
      if (so === b.length) {
        si++;
        so = 0;
      }
    }
    out.push(part);
  }
  return out;
}

export type CommitFn = (capture: Capture) => Promise<VersionInfo>;

export class Capture implements HashPin {
  readonly size: number;
  readonly sectorSize: number;
  readonly chunkSize: number;
  readonly source: string;
  readonly chunkCount: number;
  /** Settled chunks: stored (hash, file size) or holes. Also this capture's gc pin. */
  readonly table: ChunkTable;
  private readonly partial = new Map<number, PartialChunk>();
  private readonly chains = new Map<number, Promise<void>>();
  private readonly evicting = new Set<Promise<void>>();
  private readonly releasing = new Set<Promise<void>>();
  private roomWaiters: Array<() => void> = [];
  private readonly maxPartial: number;
  private readonly maxPending: number;
  private tick = 0;
  private inMemory = 0;
  private spillFile: Promise<FileHandle> | null = null;
  private spillPath: string | null = null;
  private state: CaptureState = 'open';
  private failure: Error | null = null;
  private abortReason: string | undefined;
  private written = 0;
  private committing: Promise<VersionInfo> | null = null;

  constructor(
    private readonly ctx: StoreContext,
    readonly name: string,
    chunkSize: number,
    opts: CaptureOptions,
    private readonly commitFn: CommitFn,
    private readonly onEnd: (c: Capture) => void,
  ) {
    this.size = opts.size;
    this.sectorSize = opts.sectorSize ?? 512;
    this.chunkSize = chunkSize;
    this.source = opts.source;
    this.chunkCount = chunkCountFor(this.size, chunkSize);
    this.table = new ChunkTable(this.chunkCount);
    this.maxPartial = Math.max(2, opts.maxPartialChunks ?? 32);
    this.maxPending = Math.max(1, opts.maxPendingChunks ?? 16);
    ctx.addPin(this);
  }

  hashBlocks(): Iterable<Buffer> {
    return this.table.hashBlocks();
  }

  /** Bytes accepted so far, zeroes and trims included. */
  get bytesWritten(): number {
    return this.written;
  }

  get status(): CaptureState {
    return this.state;
  }

  /** Chunk buffers currently held in RAM (for tests and metrics). */
  get bufferedChunks(): number {
    return this.inMemory;
  }

  private enqueue<T>(idx: number, fn: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(idx) ?? Promise.resolve();
    const run = prev.then(fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.chains.set(idx, tail);
    void tail.then(() => {
      if (this.chains.get(idx) === tail) this.chains.delete(idx);
    });
    return run;
  }

  private checkOpen(): void {
    if (this.state !== 'open') throw new CaptureClosedError(this.name, this.state, this.abortReason);
    if (this.failure) throw this.failure;
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new RangeError(`range ${offset}+${length} is outside the ${this.size}-byte capture of ${this.name}`);
    }
  }

  /** Splits [offset, offset+length) into per-chunk pieces. */
  private pieces(offset: number, length: number): { idx: number; start: number; len: number; at: number }[] {
    const out: { idx: number; start: number; len: number; at: number }[] = [];
    const cs = this.chunkSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const idx = Math.floor(pos / cs);
      const start = pos - idx * cs;
      const len = Math.min(end - pos, cs - start);
      out.push({ idx, start, len, at: pos - offset });
      pos += len;
    }
    return out;
  }

  /** `data` may be one buffer or its pieces in order (e.g. views of socket reads); none is kept after this resolves. */
  async write(offset: number, data: Buffer | readonly Buffer[]): Promise<void> {
    this.checkOpen();
    const slices: readonly Buffer[] = Buffer.isBuffer(data) ? [data] : data;
    let length = 0;
    for (const b of slices) length += b.length;
    this.checkRange(offset, length);
    this.written += length;
    const pieces = this.pieces(offset, length);
    if (pieces.length === 1) {
      const p = pieces[0];
      await this.enqueue(p.idx, () => this.apply(p.idx, p.start, p.len, slices));
    } else {
      const parts = splitSlices(slices, pieces);
      await Promise.all(pieces.map((p, i) => this.enqueue(p.idx, () => this.apply(p.idx, p.start, p.len, parts[i]))));
    }
    await this.backpressure();
  }

  /** Zeroes a range; whole chunks become holes at once. Trim is the same: trimmed bytes read back as zero. */
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.checkOpen();
    this.checkRange(offset, length);
    this.written += length;
    await Promise.all(
      this.pieces(offset, length).map((p) =>
        p.start === 0 && p.len === chunkLength(this.size, this.chunkSize, p.idx) ? this.enqueue(p.idx, () => this.zeroWhole(p.idx)) : this.enqueue(p.idx, () => this.apply(p.idx, p.start, p.len, null)),
      ),
    );
    await this.backpressure();
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length);
  }

  async read(offset: number, length: number): Promise<ImagePiece[]> {
    if (this.state === 'aborted') throw new CaptureClosedError(this.name, this.state, this.abortReason);
    this.checkRange(offset, length);
    return Promise.all(this.pieces(offset, length).map((p) => this.enqueue(p.idx, () => this.readPiece(p.idx, p.start, p.len, offset + p.at))));
  }

  /**
   * Waits until every accepted write has been applied and every eviction has finished; reports a
   * failed chunk store. Nothing of an uncommitted capture survives a restart, so there is nothing
   * to make durable before commit() (which stores and fsyncs everything before the manifest).
   */
  async flush(): Promise<void> {
    await this.drain();
    if (this.failure) throw this.failure;
  }

  private async drain(): Promise<void> {
    while (this.chains.size > 0 || this.evicting.size > 0 || this.releasing.size > 0) {
      await Promise.all([...this.chains.values(), ...this.evicting, ...this.releasing]);
    }
  }

  private async backpressure(): Promise<void> {
    // A waiter list, not Promise.race(this.evicting): with hundreds of writes waiting, every race
    // added a reaction to every pending chunk and every completion woke them all (measured in bench/nbd.ts).
    while (this.evicting.size > this.maxPending) await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    if (this.failure) throw this.failure;
  }

  private wakeRoomWaiters(): void {
    if (this.evicting.size > this.maxPending || this.roomWaiters.length === 0) return;
    const waiters = this.roomWaiters;
    this.roomWaiters = [];
    for (const w of waiters) w();
  }

  private noteFailure(e: unknown, idx: number, what: string): void {
    this.failure ??= e instanceof Error ? e : new Error(String(e));
    this.ctx.log.error({ image: this.name, chunk: idx, err: this.failure.message }, `${what} failed; the capture will not commit`);
  }

  /** A buffer holding chunk `idx` as it reads now: stored bytes, zeroes for a hole, or nothing written yet. */
  private async loadPartial(idx: number): Promise<PartialChunk> {
    const clen = chunkLength(this.size, this.chunkSize, idx);
    const buf = this.ctx.pool.acquire(clen);
    let covered: number[] = [];
    if (this.table.isSettled(idx)) {
      const hash = this.table.hashOf(idx);
      // Pooled buffers hold another chunk's old bytes: a hole must be zeroed before it counts as covered.
      if (hash === null) buf.bytes.fill(0);
      else (await this.ctx.loadChunk(hash, { image: `${this.name} (capture)`, offset: idx * this.chunkSize })).copy(buf.bytes);
      covered = [0, clen];
    }
    const p: PartialChunk = { buf, covered, lastUse: ++this.tick, evictQueued: false };
    this.partial.set(idx, p);
    this.inMemory++;
    return p;
  }

  private async bufferOf(idx: number): Promise<ChunkBuffer> {
    const p = this.partial.get(idx) ?? (await this.loadPartial(idx));
    if (p.buf === null) await this.unspill(idx, p);
    p.lastUse = ++this.tick;
    return p.buf as ChunkBuffer;
  }

  /** `src`: the piece's bytes in order (copied straight into the chunk buffer), or null for zeroes. */
  private async apply(idx: number, start: number, len: number, src: readonly Buffer[] | null): Promise<void> {
    const buf = (await this.bufferOf(idx)).bytes;
    if (src) {
      let pos = start;
      for (const b of src) pos += b.copy(buf, pos);
    } else {
      buf.fill(0, start, start + len);
    }
    const p = this.partial.get(idx) as PartialChunk;
    p.covered = addRange(p.covered, start, start + len);
    this.maybeEvict();
  }

  private isFull(idx: number, p: PartialChunk): boolean {
    return p.covered.length === 2 && p.covered[0] === 0 && p.covered[1] === chunkLength(this.size, this.chunkSize, idx);
  }

  private dropPartial(idx: number, p: PartialChunk, release = false): void {
    if (release && p.buf !== null) this.ctx.pool.release(p.buf);
    this.partial.delete(idx);
    if (p.buf !== null && !p.evictQueued) this.inMemory--;
    p.evictQueued = false;
  }

  /** Records chunk `idx` as stored (or a hole) and lets go of the file it replaces. */
  private settle(idx: number, hash: string | null, stored: number): void {
    const old = this.table.set(idx, hash, stored);
    if (old !== null) this.releaseHash(old);
  }

  private releaseHash(hash: string): void {
    const pr = this.ctx.chunks.release(hash).catch((e: unknown) => {
      this.ctx.log.warn({ image: this.name, chunk: hash, err: (e as Error).message }, 'dropping a superseded chunk failed; gc will remove it');
    });
    this.releasing.add(pr);
    void pr.finally(() => this.releasing.delete(pr));
  }

  /** Hands a fully initialized chunk to a codec worker; `chunk` is spent. */
  private async store(idx: number, chunk: ChunkBuffer): Promise<void> {
    const { pool, chunks, compressionLevel, tmpDir } = this.ctx;
    let epoch = chunks.unlinkEpoch;
    let out = await pool.store(chunk, compressionLevel, chunks.dir, tmpDir);
    try {
      if (out.zero) {
        this.settle(idx, null, 0);
        return;
      }
      let stored = await chunks.adopt(out, epoch);
      if (stored === null) {
        // gc or a release unlinked the file the worker found; write it again (adopt waited for the unlink).
        epoch = chunks.unlinkEpoch;
        out = await pool.store(out.data, compressionLevel, chunks.dir, tmpDir, true);
        stored = await chunks.adopt(out, epoch);
        if (stored === null) throw new Error(`chunk ${out.hash} vanished right after it was written; check the store's disk`);
      }
      this.settle(idx, out.hash, stored);
    } finally {
      pool.release(out.data);
    }
  }

  private async zeroWhole(idx: number): Promise<void> {
    const p = this.partial.get(idx);
    if (p) this.dropPartial(idx, p, true);
    this.settle(idx, null, 0);
  }

  private async readPiece(idx: number, start: number, len: number, at: number): Promise<ImagePiece> {
    const p = this.partial.get(idx);
    if (p) {
      if (p.buf === null) {
        await this.unspill(idx, p);
        this.maybeEvict();
      }
      const buf = (p.buf as ChunkBuffer).bytes;
      zeroGaps(buf, p.covered);
      return { kind: 'data', offset: at, data: Buffer.from(buf.subarray(start, start + len)) };
    }
    const hash = this.table.hashOf(idx);
    if (hash === null) return { kind: 'hole', offset: at, length: len };
    const c = await this.ctx.loadChunk(hash, { image: `${this.name} (capture)`, offset: idx * this.chunkSize });
    return { kind: 'data', offset: at, data: c.subarray(start, start + len) };
  }

  private maybeEvict(): void {
    while (this.inMemory > this.maxPartial) {
      let victim = -1;
      let oldest = Infinity;
      for (const [i, p] of this.partial) {
        if (p.buf !== null && !p.evictQueued && p.lastUse < oldest) {
          oldest = p.lastUse;
          victim = i;
        }
      }
      if (victim < 0) return;
      const vp = this.partial.get(victim) as PartialChunk;
      vp.evictQueued = true;
      this.inMemory--;
      const pr = this.enqueue(victim, () => this.evict(victim, vp)).catch((e: unknown) => this.noteFailure(e, victim, 'evicting a chunk buffer'));
      this.evicting.add(pr);
      void pr.finally(() => {
        this.evicting.delete(pr);
        this.wakeRoomWaiters();
      });
    }
  }

  /** Stores a full chunk, spills a partial one; keeps one that was used again since it was picked. */
  private async evict(idx: number, p: PartialChunk): Promise<void> {
    if (!p.evictQueued) return;
    p.evictQueued = false;
    if (this.partial.get(idx) !== p || p.buf === null) return;
    if (p.lastUse > this.tick - this.maxPartial / 2) {
      this.inMemory++;
      return;
    }
    const buf = p.buf;
    if (this.isFull(idx, p)) {
      this.partial.delete(idx);
      p.buf = null;
      await this.store(idx, buf);
      return;
    }
    const fh = await this.spillHandle();
    zeroGaps(buf.bytes, p.covered);
    await fh.write(buf.bytes, 0, buf.length, idx * this.chunkSize);
    p.buf = null;
    this.ctx.pool.release(buf);
  }

  private spillHandle(): Promise<FileHandle> {
    // Memoized promise: concurrent first spills must share one file.
    if (!this.spillFile) {
      const path = tempName(this.ctx.tmpDir, 'spill');
      this.spillPath = path;
      this.spillFile = open(path, 'w+');
    }
    return this.spillFile;
  }

  private async unspill(idx: number, p: PartialChunk): Promise<void> {
    const clen = chunkLength(this.size, this.chunkSize, idx);
    const buf = this.ctx.pool.acquire(clen);
    const fh = await this.spillHandle();
    const { bytesRead } = await fh.read(buf.bytes, 0, clen, idx * this.chunkSize);
    // Spilled buffers are written whole, so a short read can only be past the end of a sparse file.
    if (bytesRead < clen) buf.bytes.fill(0, bytesRead);
    p.buf = buf;
    this.inMemory++;
  }

  /** Stores every remaining chunk (unwritten bytes are zero) and commits the new version. */
  commit(): Promise<VersionInfo> {
    this.checkOpen();
    this.state = 'committing';
    this.committing = this.runCommit();
    return this.committing;
  }

  private async runCommit(): Promise<VersionInfo> {
    try {
      await this.drain();
      if (this.failure) throw this.failure;
      const rest = [...this.partial.keys()];
      for (let i = 0; i < rest.length; i += this.maxPending) {
        const batch = rest.slice(i, i + this.maxPending).map((idx) =>
          this.enqueue(idx, async () => {
            const p = this.partial.get(idx);
            if (!p) return;
            if (p.buf === null) await this.unspill(idx, p);
            const buf = p.buf as ChunkBuffer;
            this.dropPartial(idx, p);
            zeroGaps(buf.bytes, p.covered);
            await this.store(idx, buf);
          }),
        );
        await Promise.all(batch);
      }
      await this.drain();
      if (this.failure) throw this.failure;
      const info = await this.commitFn(this);
      this.state = 'committed';
      // The version is current now: a failure to tidy up (the spill file) must not report the commit as failed.
      await this.cleanup().catch((e: unknown) => {
        this.ctx.log.warn({ image: this.name, err: (e as Error).message }, 'capture committed; removing its temp files failed (they go when the store next opens)');
      });
      return info;
    } catch (e) {
      if (this.state !== 'committed') await this.discard(`commit failed: ${(e as Error).message}`);
      throw e;
    }
  }

  /**
   * Drops the capture: nothing is committed and the previous version stays current. Idempotent. A
   * commit already under way is not interrupted (its manifest may be on its way to disk, naming
   * these chunks): abort waits for it and leaves its outcome as it is.
   */
  async abort(reason: string): Promise<void> {
    if (this.state === 'committing' && this.committing) {
      await this.committing.catch(() => undefined);
      return;
    }
    await this.discard(reason);
  }

  private async discard(reason: string): Promise<void> {
    if (this.state === 'aborted' || this.state === 'committed') return;
    this.state = 'aborted';
    this.abortReason = reason;
    this.ctx.log.warn({ image: this.name, reason, bytesWritten: this.written }, 'capture aborted; previous version left as it was');
    try {
      await this.drain();
    } catch {
      // Failed stores left nothing to undo: their chunks were never adopted.
    }
    // The chunk files only this capture wrote go now, so an aborted capture does not keep the disk full.
    for (const h of this.table.storedHashes()) this.releaseHash(h);
    await this.drain().catch(() => undefined);
    await this.cleanup();
  }

  private async cleanup(): Promise<void> {
    for (const p of this.partial.values()) if (p.buf !== null) this.ctx.pool.release(p.buf);
    this.partial.clear();
    this.inMemory = 0;
    this.ctx.removePin(this);
    this.table.clear();
    // The image's capture slot is freed before any file work that could fail.
    this.onEnd(this);
    if (this.spillFile) {
      const fh = this.spillFile;
      this.spillFile = null;
      await fh.then((h) => h.close()).catch(() => undefined);
    }
    if (this.spillPath) await rm(this.spillPath, { force: true });
  }
}
