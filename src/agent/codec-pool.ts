/**
 * Compressing and decoding chunk files on all cores. zstd-napi's calls are synchronous: on the main
 * thread they would stop the agent from reading the disk and talking to the server while they run,
 * and would use one core of the client's several.
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { startWorker } from '../lib/worker.js';

export type CodecRequest =
  | { readonly id: number; readonly op: 'encode'; readonly data: Uint8Array; readonly level: number }
  | { readonly id: number; readonly op: 'decode'; readonly file: Uint8Array; readonly hash: string }
  | { readonly id: number; readonly op: 'name'; readonly buffer: ArrayBuffer; readonly length: number; readonly zeroIsNull: boolean };

export type CodecResponse =
  | { readonly id: number; readonly ok: true; readonly bytes: Uint8Array }
  | { readonly id: number; readonly ok: true; readonly hash: string | null; readonly buffer: ArrayBuffer }
  | { readonly id: number; readonly ok: false; readonly error: string };

/** A chunk name from a compression thread, with the buffer it was asked about handed back. */
export interface NameAnswer {
  /** sha256 of the bytes, or null for all-zero bytes asked with zeroIsNull. */
  readonly hash: string | null;
  readonly buffer: ArrayBuffer;
}

/** A chunk file from the server failed its checks (damaged, or not the chunk it was asked for). */
export class BadChunkError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BadChunkError';
  }
}

interface Slot {
  readonly worker: Worker;
  busy: number;
}

interface Pending {
  readonly slot: Slot;
  readonly op: CodecRequest['op'];
  readonly resolve: (res: CodecResponse & { ok: true }) => void;
  readonly reject: (e: Error) => void;
}

export class CodecPool {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  constructor(threads: number = availableParallelism()) {
    for (let i = 0; i < Math.max(1, threads); i++) {
      const worker = startWorker(import.meta.url, 'codec-worker');
      const slot: Slot = { worker, busy: 0 };
      worker.on('message', (res: CodecResponse) => {
        const p = this.pending.get(res.id);
        if (!p) return;
        this.pending.delete(res.id);
        if (--p.slot.busy === 0) worker.unref();
        if (res.ok) p.resolve(res);
        else p.reject(p.op === 'decode' ? new BadChunkError(res.error) : new Error(`${p.op === 'encode' ? 'compressing' : 'naming'} a chunk failed: ${res.error}`));
      });
      worker.on('error', (err: Error) => this.failAll(new Error(`a compression thread failed: ${err.message}`)));
      worker.unref();
      this.slots.push(slot);
    }
  }

  /**
   * The chunk file (header and payload, format 2) of `data` at zstd `level`. With `give`, a `data`
   * that spans its whole ArrayBuffer is moved to the thread, not copied: the caller must not use it again.
   */
  encode(data: Uint8Array, level: number, give = false): Promise<Buffer<ArrayBuffer>> {
    return this.bytes(this.run((id) => ({ id, op: 'encode', data, level }), give ? data : null));
  }

  /**
   * The decoded bytes of a chunk file, checked in full against `hash` (sha256 of the decoded bytes),
   * whatever the file's format; a file that fails is a BadChunkError saying why. With `give`, the
   * file is moved to the thread as encode's data is.
   */
  decode(file: Uint8Array, hash: string, give = false): Promise<Buffer<ArrayBuffer>> {
    return this.bytes(this.run((id) => ({ id, op: 'decode', file, hash }), give ? file : null));
  }

  /**
   * The chunk name (sha256, as chunk-format names chunks) of `length` bytes at the start of `buffer`,
   * or null when they are all zero and `zeroIsNull`. The buffer is moved to the thread and comes back
   * in the answer. A HashPool may name chunks on these threads instead of starting threads of its own.
   */
  async name(buffer: ArrayBuffer, length: number, zeroIsNull: boolean): Promise<NameAnswer> {
    const res = await this.run((id) => ({ id, op: 'name', buffer, length, zeroIsNull }), new Uint8Array(buffer));
    if (!('buffer' in res)) throw new Error('a compression thread answered a naming request with bytes; the agent\'s files are from different builds');
    return { hash: res.hash, buffer: res.buffer };
  }

  private async bytes(answer: Promise<CodecResponse & { ok: true }>): Promise<Buffer<ArrayBuffer>> {
    const res = await answer;
    if (!('bytes' in res)) throw new Error('a compression thread answered with a name instead of bytes; the agent\'s files are from different builds');
    return Buffer.from(res.bytes.buffer as ArrayBuffer, res.bytes.byteOffset, res.bytes.byteLength);
  }

  private run(make: (id: number) => CodecRequest, given: Uint8Array | null): Promise<CodecResponse & { ok: true }> {
    if (this.closed) return Promise.reject(new Error('the compression pool is closed'));
    const slot = this.slots.reduce((a, b) => (b.busy < a.busy ? b : a));
    const id = this.nextId++;
    // A thread with work holds the process open (an idle one does not), as in HashPool.
    if (slot.busy++ === 0) slot.worker.ref();
    const req = make(id);
    return new Promise<CodecResponse & { ok: true }>((resolve, reject) => {
      this.pending.set(id, { slot, op: req.op, resolve, reject });
      // Moved only when the caller gave it up and it is the whole of its memory (not a view into a
      // larger buffer, such as Node's shared pool); otherwise copied.
      const move = given !== null && given.byteOffset === 0 && given.byteLength === given.buffer.byteLength && given.buffer instanceof ArrayBuffer;
      slot.worker.postMessage(req, move ? [given.buffer as ArrayBuffer] : []);
    });
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.failAll(new Error('the compression pool closed before the chunk was done'));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
