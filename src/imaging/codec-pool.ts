/**
 * A pool of codec workers (one per core by default). Each request is sent to the worker with the
 * fewest outstanding requests; buffers are transferred, not copied.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import type { Logger } from '../lib/log.js';
import { startWorker } from '../lib/worker.js';
import type { CodecRequest, CodecResponse, PutResult, StoreResult } from './codec-protocol.js';
import type { ChunkCheck } from './chunk-format.js';

export class ChunkCorruptError extends Error {
  constructor(
    readonly hash: string,
    readonly detail: string,
  ) {
    super(`chunk ${hash} is damaged: ${detail}; run verify on the images using it and re-capture or restore them`);
    this.name = 'ChunkCorruptError';
  }
}

/** The chunk file is of a chunk format newer than this code reads (see chunk-format.ts). */
export class ChunkTooNewError extends Error {
  constructor(
    readonly hash: string,
    readonly detail: string,
  ) {
    super(`chunk ${hash} cannot be read: ${detail}`);
    this.name = 'ChunkTooNewError';
  }
}

/** An uploaded chunk file failed a check (see PutRequest); `detail` says which, for a log line. */
export class ChunkRejectedError extends Error {
  constructor(
    readonly hash: string,
    readonly detail: string,
  ) {
    super(`uploaded chunk ${hash} refused: ${detail}`);
    this.name = 'ChunkRejectedError';
  }
}

/** What a put of one uploaded chunk file did (see PutResult for each field). */
export type PutOutcome = Omit<PutResult, 'id' | 'ok' | 'op'>;

const MAX_RESPAWNS = 16;
/** Spare chunk buffers kept for reuse per size (16 MiB with 1 MiB chunks). */
const MAX_FREE_BUFFERS = 16;

/**
 * Sole owner of one chunk buffer. store() moves the bytes to a codec worker, which detaches the
 * ArrayBuffer in this thread; the handle is spent at that moment, so any later use throws instead of
 * silently reading an empty, detached buffer. The worker's answer comes back as a new handle.
 */
export class ChunkBuffer {
  #buf: Buffer | null;

  constructor(buf: Buffer) {
    this.#buf = buf;
  }

  /** The bytes; valid only until this handle is given to store() or release(). */
  get bytes(): Buffer {
    if (this.#buf === null) throw new Error('chunk buffer used after it was handed to a codec worker or released (internal error; please report it)');
    return this.#buf;
  }

  get length(): number {
    return this.bytes.length;
  }

  get spent(): boolean {
    return this.#buf === null;
  }

  /** Ends this handle's ownership and returns the bytes to the one party taking them over. */
  take(): Buffer {
    const b = this.bytes;
    this.#buf = null;
    return b;
  }
}

/**
 * What a store of one chunk did: the worker's answer (see StoreResult for each field), with the
 * caller's bytes handed back as an owned buffer to release() or store() again.
 */
export type StoreOutcome = Omit<StoreResult, 'id' | 'ok' | 'op' | 'data'> & { readonly data: ChunkBuffer };

interface Pending {
  resolve(r: CodecResponse): void;
  reject(e: Error): void;
}

interface Slot {
  worker: Worker;
  outstanding: Map<number, Pending>;
}

function spawnWorker(): Worker {
  return startWorker(import.meta.url, 'codec-worker');
}

function toTransferable(b: Buffer): ArrayBuffer {
  if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength && b.buffer instanceof ArrayBuffer) return b.buffer;
  const copy = new ArrayBuffer(b.byteLength);
  new Uint8Array(copy).set(b);
  return copy;
}

export class CodecPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closed = false;
  private broken: string | null = null;
  private respawns = 0;
  private readonly free = new Map<number, ArrayBuffer[]>();
  /** ArrayBuffers acquire() made: whole-buffer transfer is safe even when a shorter view is passed. */
  private readonly owned = new WeakSet<ArrayBuffer>();

  constructor(
    private readonly log: Logger,
    size: number = availableParallelism(),
  ) {
    for (let i = 0; i < Math.max(1, size); i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const worker = spawnWorker();
    const slot: Slot = { worker, outstanding: new Map() };
    let online = false;
    worker.unref();
    worker.on('online', () => (online = true));
    worker.on('message', (res: CodecResponse) => {
      const p = slot.outstanding.get(res.id);
      if (!p) return;
      slot.outstanding.delete(res.id);
      p.resolve(res);
    });
    let failed = false;
    const fail = (err: Error): void => {
      if (failed) return;
      failed = true;
      for (const p of slot.outstanding.values()) p.reject(err);
      slot.outstanding.clear();
      if (this.closed) return;
      const i = this.slots.indexOf(slot);
      // A worker that never came up (missing or broken build) would fail again at once: no respawn loop.
      if (!online || this.respawns >= MAX_RESPAWNS) {
        this.broken = `codec worker cannot run (${err.message}); check that the build output includes codec-worker.js`;
        this.log.error({ err: err.message }, 'codec worker failed; image store cannot encode or decode chunks');
        if (i >= 0) this.slots.splice(i, 1);
        return;
      }
      this.respawns++;
      this.log.error({ err: err.message }, 'codec worker died; starting a new one');
      if (i >= 0) this.slots[i] = this.spawn();
    };
    worker.on('error', (err) => fail(err));
    worker.on('exit', (code) => fail(new Error(`codec worker exited with code ${code}`)));
    return slot;
  }

  private send(make: (id: number) => { req: CodecRequest; transfer: ArrayBuffer[] }): Promise<CodecResponse> {
    if (this.closed) return Promise.reject(new Error('image store is closed'));
    if (this.broken !== null || this.slots.length === 0) return Promise.reject(new Error(this.broken ?? 'no codec workers are running'));
    let best = this.slots[0];
    for (const s of this.slots) if (s.outstanding.size < best.outstanding.size) best = s;
    const id = this.nextId++;
    const { req, transfer } = make(id);
    return new Promise<CodecResponse>((resolve, reject) => {
      best.outstanding.set(id, { resolve, reject });
      if (best.outstanding.size === 1) best.worker.ref();
      best.worker.postMessage(req, transfer);
    }).finally(() => {
      if (best.outstanding.size === 0) best.worker.unref();
    });
  }

  /**
   * Reads the chunk file at `path` in a worker, decodes it and checks it as `check` says: 'fast' (the
   * file's own content checksum; sha256 against the name for format-1 files, which have none) on the
   * read path, 'full' (always sha256 against the name) for verify. Throws ChunkCorruptError when the
   * file is missing, damaged or does not match, ChunkTooNewError when its format is newer than ours.
   */
  async load(path: string, expectHash: string, check: ChunkCheck): Promise<Buffer> {
    const res = await this.send((id) => ({ req: { id, op: 'load', path, expectHash, check }, transfer: [] }));
    if (!res.ok) {
      if (res.kind === 'corrupt') throw new ChunkCorruptError(expectHash, res.message);
      if (res.kind === 'too-new') throw new ChunkTooNewError(expectHash, res.message);
      throw new Error(`reading chunk ${expectHash} failed: ${res.message}`);
    }
    if (res.op !== 'load') throw new Error('codec worker answered the wrong operation');
    return Buffer.from(res.data, res.offset, res.length);
  }

  /**
   * A buffer of `size` bytes with undefined contents, reusing one a worker handed back when possible.
   * It owns its whole ArrayBuffer, so store() can transfer it without a copy.
   */
  acquire(size: number): ChunkBuffer {
    const ab = this.free.get(size)?.pop();
    if (ab !== undefined) return new ChunkBuffer(Buffer.from(ab));
    const b = Buffer.allocUnsafeSlow(size);
    this.owned.add(b.buffer as ArrayBuffer);
    return new ChunkBuffer(b);
  }

  /** `b`'s ArrayBuffer if b starts it and nothing else can share it; else a copy. */
  private transferable(b: Buffer): ArrayBuffer {
    const ab = b.buffer;
    if (ab instanceof ArrayBuffer && b.byteOffset === 0 && (b.length === ab.byteLength || this.owned.has(ab))) return ab;
    return toTransferable(b);
  }

  /** Gives a buffer from acquire() (or store()) back for reuse; the handle is spent afterwards. */
  release(handle: ChunkBuffer): void {
    if (handle.spent) return;
    this.recycle(handle.take());
  }

  private recycle(buf: Buffer): void {
    const ab = buf.buffer;
    if (!(ab instanceof ArrayBuffer) || buf.byteOffset !== 0 || buf.length !== ab.byteLength || ab.byteLength === 0) return;
    let list = this.free.get(ab.byteLength);
    if (!list) this.free.set(ab.byteLength, (list = []));
    if (list.length < MAX_FREE_BUFFERS) {
      list.push(ab);
      this.owned.add(ab);
    }
  }

  /**
   * Hashes one chunk and, unless it is all zeroes or an intact chunk file of its name exists under
   * `chunksDir` (and `force` is false), compresses it and writes it to a fsynced temp file in `tmpDir`
   * (`tmpPath` in the outcome) for ChunkStore.adopt() to rename into place. An existing file counts only if it decodes to exactly these bytes; a damaged one is
   * replaced. `chunk` is spent by this call: the bytes come back as `data` in the outcome.
   */
  async store(chunk: ChunkBuffer, level: number, chunksDir: string, tmpDir: string, force = false): Promise<StoreOutcome> {
    const length = chunk.length;
    const res = await this.send((id) => {
      const data = chunk.take();
      const ab = this.transferable(data);
      return { req: { id, op: 'store', data: ab, length, level, chunksDir, tmpDir, force }, transfer: [ab] };
    });
    if (!res.ok) {
      if (res.data) this.recycle(Buffer.from(res.data));
      throw new Error(`storing a chunk failed: ${res.message}`);
    }
    if (res.op !== 'store') throw new Error('codec worker answered the wrong operation');
    return { zero: res.zero, hash: res.hash, stored: res.stored, existed: res.existed, fresh: res.fresh, tmpPath: res.tmpPath, data: new ChunkBuffer(Buffer.from(res.data, 0, length)) };
  }

  /**
   * Checks an uploaded chunk file in a worker and, unless an intact file of that name is in place (or
   * `force`), writes it to a temp file for ChunkStore.adopt(). `file` is copied, never taken. Throws
   * ChunkRejectedError when a check fails (nothing is written then).
   */
  async put(file: Buffer, expectHash: string, maxLength: number, chunksDir: string, tmpDir: string, force = false): Promise<PutOutcome> {
    const res = await this.send((id) => {
      const copy = new ArrayBuffer(file.length);
      new Uint8Array(copy).set(file);
      return { req: { id, op: 'put', file: copy, expectHash, maxLength, chunksDir, tmpDir, force }, transfer: [copy] };
    });
    if (!res.ok) {
      if (res.kind === 'rejected') throw new ChunkRejectedError(expectHash, res.message);
      throw new Error(`storing uploaded chunk ${expectHash} failed: ${res.message}`);
    }
    if (res.op !== 'put') throw new Error('codec worker answered the wrong operation');
    return { length: res.length, stored: res.stored, existed: res.existed, fresh: res.fresh, tmpPath: res.tmpPath };
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
