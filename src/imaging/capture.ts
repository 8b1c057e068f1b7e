/**
 * A capture: a new version being written, in any order and in pieces, as nbdcopy or qemu-img do.
 *
 * Each chunk is a small state machine, and every operation on one chunk runs on that chunk's own
 * promise chain, so pieces for different chunks proceed in parallel while pieces of one chunk never race.
 * A chunk's bytes live in a reused, uninitialized buffer until every byte has been written (or zeroed);
 * bytes never written are zeroed when the buffer is read, spilled or stored. A full chunk is handed to a
 * codec worker, which hashes it, compresses it and writes its file unless the store already has it, in
 * the background; the buffer comes back for the next chunk. At most `maxPartialChunks` buffers stay
 * in RAM: older partial ones are spilled to a sparse temp file and read back when written again; at most
 * `maxPendingChunks` chunks wait for encoding before write() waits (backpressure). Writing a chunk that was
 * already stored loads it back, merges and stores it again. Whole-chunk zeroes and trims become holes
 * without buffering. commit() zero-fills what was never written.
 *
 * Every connection shares this one object, so a read on any connection sees every completed write.
 */
import { open, rm, type FileHandle } from 'node:fs/promises';
import { chunkCountFor, chunkLength, hashAt } from './manifest.js';
import { tempName } from './durable.js';
import type { ImagePiece, StoreContext, VersionInfo } from './types.js';

export interface CaptureOptions {
  readonly size: number;
  readonly sectorSize?: number;
  readonly source: string;
  /** Partial chunk buffers kept in RAM before spilling (default 32, i.e. 32 MiB with 1 MiB chunks). */
  readonly maxPartialChunks?: number;
  /** Full chunks waiting for a worker before writes wait (default 16). */
  readonly maxPendingChunks?: number;
}

export class CaptureClosedError extends Error {
  constructor(name: string, state: string, reason?: string) {
    super(`capture of ${name} is ${state}${reason ? ` (${reason})` : ''}; start a new capture`);
    this.name = 'CaptureClosedError';
  }
}

interface PartialChunk {
  buf: Buffer | null;
  /** Covered byte ranges within the chunk, flat [start, end, start, end, …], sorted and merged. */
  covered: number[];
  lastUse: number;
  spillQueued: boolean;
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

export class Capture {
  readonly size: number;
  readonly sectorSize: number;
  readonly chunkSize: number;
  readonly source: string;
  readonly chunkCount: number;
  /** chunkCount × 32 bytes; zero entry = hole or never written. Also this capture's gc pin. */
  hashes: Buffer;
  sizes: Uint32Array;
  private done: Uint8Array;
  private readonly partial = new Map<number, PartialChunk>();
  private readonly chains = new Map<number, Promise<void>>();
  private readonly finalizing = new Set<Promise<void>>();
  private readonly spilling = new Set<Promise<void>>();
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
    this.hashes = Buffer.alloc(this.chunkCount * 32);
    this.sizes = new Uint32Array(this.chunkCount);
    this.done = new Uint8Array(Math.ceil(this.chunkCount / 8));
    this.maxPartial = Math.max(2, opts.maxPartialChunks ?? 32);
    this.maxPending = Math.max(1, opts.maxPendingChunks ?? 16);
    ctx.addPin(this);
  }

  /** Bytes accepted so far, zeroes and trims included. */
  get bytesWritten(): number {
    return this.written;
  }

  get status(): CaptureState {
    return this.state;
  }

  /** Partial chunks currently buffered in RAM (for tests and metrics). */
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

  private isDone(i: number): boolean {
    return (this.done[i >> 3] & (1 << (i & 7))) !== 0;
  }

  private setDone(i: number): void {
    this.done[i >> 3] |= 1 << (i & 7);
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

  /** Waits until every accepted write has been buffered or stored; reports a failed chunk store. */
  async flush(): Promise<void> {
    await this.drain();
    if (this.failure) throw this.failure;
  }

  private async drain(): Promise<void> {
    while (this.chains.size > 0 || this.finalizing.size > 0 || this.spilling.size > 0) {
      await Promise.all([...this.chains.values(), ...this.finalizing, ...this.spilling]);
    }
  }

  private async backpressure(): Promise<void> {
    // A waiter list, not Promise.race(this.finalizing): with hundreds of writes waiting, every race
    // added a reaction to every pending chunk and every completion woke them all (measured in bench/nbd.ts).
    while (this.finalizing.size > this.maxPending) await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    if (this.failure) throw this.failure;
  }

  private wakeRoomWaiters(): void {
    if (this.finalizing.size > this.maxPending || this.roomWaiters.length === 0) return;
    const waiters = this.roomWaiters;
    this.roomWaiters = [];
    for (const w of waiters) w();
  }

  private async loadPartial(idx: number): Promise<PartialChunk> {
    const clen = chunkLength(this.size, this.chunkSize, idx);
    const buf = this.ctx.pool.acquire(clen);
    let covered: number[] = [];
    if (this.isDone(idx)) {
      const hash = hashAt(this.hashes, idx);
      if (hash !== null) (await this.ctx.loadChunk(hash, { image: `${this.name} (capture)`, offset: idx * this.chunkSize })).copy(buf);
      covered = [0, clen];
    }
    const p: PartialChunk = { buf, covered, lastUse: ++this.tick, spillQueued: false };
    this.partial.set(idx, p);
    this.inMemory++;
    return p;
  }

  private async bufferOf(idx: number): Promise<PartialChunk> {
    const p = this.partial.get(idx) ?? (await this.loadPartial(idx));
    if (p.buf === null) await this.unspill(idx, p);
    p.lastUse = ++this.tick;
    return p;
  }

  /** `src`: the piece's bytes in order (copied straight into the chunk buffer), or null for zeroes. */
  private async apply(idx: number, start: number, len: number, src: readonly Buffer[] | null): Promise<void> {
    const p = await this.bufferOf(idx);
    const buf = p.buf as Buffer;
    if (src) {
      let pos = start;
      for (const b of src) pos += b.copy(buf, pos);
    } else {
      buf.fill(0, start, start + len);
    }
    p.covered = addRange(p.covered, start, start + len);
    if (p.covered.length === 2 && p.covered[0] === 0 && p.covered[1] === buf.length) {
      this.dropPartial(idx, p);
      this.startFinalize(idx, buf);
    } else {
      this.maybeSpill();
    }
  }

  private dropPartial(idx: number, p: PartialChunk, release = false): void {
    if (release && p.buf !== null) this.ctx.pool.release(p.buf);
    this.partial.delete(idx);
    if (p.buf !== null && !p.spillQueued) this.inMemory--;
    p.spillQueued = false;
  }

  private startFinalize(idx: number, buf: Buffer): void {
    const pr = this.enqueue(idx, () => this.finalize(idx, buf)).catch((e: unknown) => {
      this.failure ??= e instanceof Error ? e : new Error(String(e));
      this.ctx.log.error({ image: this.name, chunk: idx, err: this.failure.message }, 'storing a captured chunk failed; the capture will not commit');
    });
    this.finalizing.add(pr);
    void pr.finally(() => {
      this.finalizing.delete(pr);
      this.wakeRoomWaiters();
    });
  }

  /** `buf` must be fully initialized; it is transferred to a worker and released to the pool afterwards. */
  private async finalize(idx: number, buf: Buffer): Promise<void> {
    const { pool, chunks, compressionLevel, tmpDir } = this.ctx;
    let out = await pool.store(buf, compressionLevel, chunks.dir, tmpDir);
    try {
      if (out.zero) {
        this.hashes.fill(0, idx * 32, idx * 32 + 32);
        this.sizes[idx] = 0;
        this.setDone(idx);
        return;
      }
      let stored = await chunks.adopt(out.hash, out.stored, out.existed);
      if (stored === null) {
        // gc removed the file the worker found; write it again (adopt has told gc to keep it now).
        out = await pool.store(out.data, compressionLevel, chunks.dir, tmpDir, true);
        stored = await chunks.adopt(out.hash, out.stored, out.existed);
        if (stored === null) throw new Error(`chunk ${out.hash} vanished right after it was written; check the store's disk`);
      }
      this.hashes.write(out.hash, idx * 32, 32, 'hex');
      this.sizes[idx] = stored;
      this.setDone(idx);
    } finally {
      pool.release(out.data);
    }
  }

  private async zeroWhole(idx: number): Promise<void> {
    const p = this.partial.get(idx);
    if (p) this.dropPartial(idx, p, true);
    this.hashes.fill(0, idx * 32, idx * 32 + 32);
    this.sizes[idx] = 0;
    this.setDone(idx);
  }

  private async readPiece(idx: number, start: number, len: number, at: number): Promise<ImagePiece> {
    const p = this.partial.get(idx);
    if (p) {
      if (p.buf === null) {
        await this.unspill(idx, p);
        this.maybeSpill();
      }
      const buf = p.buf as Buffer;
      zeroGaps(buf, p.covered);
      return { kind: 'data', offset: at, data: Buffer.from(buf.subarray(start, start + len)) };
    }
    const hash = this.isDone(idx) ? hashAt(this.hashes, idx) : null;
    if (hash === null) return { kind: 'hole', offset: at, length: len };
    const c = await this.ctx.loadChunk(hash, { image: `${this.name} (capture)`, offset: idx * this.chunkSize });
    return { kind: 'data', offset: at, data: c.subarray(start, start + len) };
  }

  private maybeSpill(): void {
    while (this.inMemory > this.maxPartial) {
      let victim = -1;
      let oldest = Infinity;
      for (const [i, p] of this.partial) {
        if (p.buf !== null && !p.spillQueued && p.lastUse < oldest) {
          oldest = p.lastUse;
          victim = i;
        }
      }
      if (victim < 0) return;
      const vp = this.partial.get(victim) as PartialChunk;
      vp.spillQueued = true;
      this.inMemory--;
      const pr = this.enqueue(victim, () => this.spill(victim, vp)).catch((e: unknown) => {
        this.failure ??= e instanceof Error ? e : new Error(String(e));
      });
      this.spilling.add(pr);
      void pr.finally(() => this.spilling.delete(pr));
    }
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

  private async spill(idx: number, p: PartialChunk): Promise<void> {
    if (!p.spillQueued) return;
    p.spillQueued = false;
    if (this.partial.get(idx) !== p || p.buf === null) return;
    if (p.lastUse > this.tick - this.maxPartial / 2) {
      // Used again since it was picked: keep it in RAM and let the next write pick another victim.
      this.inMemory++;
      return;
    }
    const fh = await this.spillHandle();
    const buf = p.buf;
    zeroGaps(buf, p.covered);
    await fh.write(buf, 0, buf.length, idx * this.chunkSize);
    p.buf = null;
    this.ctx.pool.release(buf);
  }

  private async unspill(idx: number, p: PartialChunk): Promise<void> {
    const clen = chunkLength(this.size, this.chunkSize, idx);
    const buf = this.ctx.pool.acquire(clen);
    const fh = await this.spillHandle();
    const { bytesRead } = await fh.read(buf, 0, clen, idx * this.chunkSize);
    // Spilled buffers are written whole, so a short read can only be past the end of a sparse file.
    if (bytesRead < clen) buf.fill(0, bytesRead);
    if (p.spillQueued) {
      p.spillQueued = false;
    } else {
      this.inMemory++;
    }
    p.buf = buf;
  }

  /** Stores every remaining chunk (unwritten bytes are zero) and commits the new version. */
  async commit(): Promise<VersionInfo> {
    this.checkOpen();
    this.state = 'committing';
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
            this.dropPartial(idx, p);
            const buf = p.buf as Buffer;
            zeroGaps(buf, p.covered);
            await this.finalize(idx, buf);
          }),
        );
        await Promise.all(batch);
      }
      await this.drain();
      if (this.failure) throw this.failure;
      for (let i = 0; i < this.chunkCount; i++) this.setDone(i);
      const info = await this.commitFn(this);
      this.state = 'committed';
      await this.cleanup();
      return info;
    } catch (e) {
      await this.abort(`commit failed: ${(e as Error).message}`);
      throw e;
    }
  }

  /** Drops the capture: nothing is committed and the previous version stays current. Idempotent. */
  async abort(reason: string): Promise<void> {
    if (this.state === 'aborted' || this.state === 'committed') return;
    this.state = 'aborted';
    this.abortReason = reason;
    this.ctx.log.warn({ image: this.name, reason, bytesWritten: this.written }, 'capture aborted; previous version left as it was');
    try {
      await this.drain();
    } catch {
      // Chunks that failed to store are orphans for gc; nothing else to undo.
    }
    await this.cleanup();
  }

  private async cleanup(): Promise<void> {
    this.partial.clear();
    this.inMemory = 0;
    if (this.spillFile) {
      const fh = this.spillFile;
      this.spillFile = null;
      await fh.then((h) => h.close()).catch(() => undefined);
    }
    if (this.spillPath) await rm(this.spillPath, { force: true });
    this.ctx.removePin(this);
    // A 1 TiB capture's tables are 36 MiB: let them go even if a caller keeps the Capture object.
    this.hashes = Buffer.alloc(0);
    this.sizes = new Uint32Array(0);
    this.done = new Uint8Array(0);
    this.onEnd(this);
  }
}
