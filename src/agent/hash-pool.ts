/**
 * Chunk names on all cores: hashing a 500 GB disk with sha256 is the agent's heaviest CPU work, so it
 * runs on one worker thread per core while the main thread reads the disk and talks to the server.
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { startWorker } from '../lib/worker.js';
import type { CodecPool } from './codec-pool.js';

export interface HashRequest {
  readonly id: number;
  readonly buffer: ArrayBuffer;
  readonly length: number;
  /** Answer null instead of a hash when every byte is zero (a hole of the image). */
  readonly zeroIsNull: boolean;
}

export interface HashResponse {
  readonly id: number;
  /** Null only for all-zero bytes asked with zeroIsNull. */
  readonly hash: string | null;
  /** The request's buffer, handed back: the caller may read or reuse it. */
  readonly buffer: ArrayBuffer;
}

interface Slot {
  readonly worker: Worker;
  busy: number;
}

export class HashPool {
  private readonly slots: Slot[] = [];
  private readonly pending = new Map<number, { resolve: (r: HashResponse) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private closed = false;
  /** The compression pool whose threads name the chunks, when given one instead of a thread count. */
  private readonly shared: CodecPool | null;

  /**
   * `threads` hashing threads of its own, or the threads of a CodecPool (the agent's run does that:
   * each thread costs its start-up, and naming and compressing rarely peak at once). Closing this pool
   * does not close a shared CodecPool.
   */
  constructor(threads: number | CodecPool = availableParallelism()) {
    this.shared = typeof threads === 'number' ? null : threads;
    const own = typeof threads === 'number' ? Math.max(1, threads) : 0;
    for (let i = 0; i < own; i++) {
      const worker = startWorker(import.meta.url, 'hash-worker');
      worker.on('message', (res: HashResponse) => {
        const p = this.pending.get(res.id);
        if (!p) return;
        this.pending.delete(res.id);
        if (--slot.busy === 0) worker.unref();
        p.resolve(res);
      });
      worker.on('error', (err: Error) => this.failAll(new Error(`a hashing thread failed: ${err.message}`)));
      worker.unref();
      const slot: Slot = { worker, busy: 0 };
      this.slots.push(slot);
    }
  }

  /**
   * The chunk name of `length` bytes at the start of `buffer`. The buffer is moved to the worker and
   * comes back in the answer; until then the caller must not touch it.
   */
  async hash(buffer: ArrayBuffer, length: number): Promise<HashResponse & { readonly hash: string }> {
    const res = await this.post(buffer, length, false);
    return res as HashResponse & { readonly hash: string };
  }

  /**
   * As hash(), but null when all `length` bytes are zero: the zero check runs on the thread that reads
   * the bytes anyway, not on the main thread.
   */
  name(buffer: ArrayBuffer, length: number): Promise<HashResponse> {
    return this.post(buffer, length, true);
  }

  private post(buffer: ArrayBuffer, length: number, zeroIsNull: boolean): Promise<HashResponse> {
    if (this.closed) return Promise.reject(new Error('the hash pool is closed'));
    if (this.shared) {
      const id = this.nextId++;
      return this.shared.name(buffer, length, zeroIsNull).then((r) => ({ id, hash: r.hash, buffer: r.buffer }));
    }
    const slot = this.slots.reduce((a, b) => (b.busy < a.busy ? b : a));
    const id = this.nextId++;
    // A thread with work holds the process open (an idle one does not): a caller awaiting only a hash
    // would otherwise see Node exit under it with an unsettled promise.
    if (slot.busy++ === 0) slot.worker.ref();
    return new Promise<HashResponse>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      const req: HashRequest = { id, buffer, length, zeroIsNull };
      slot.worker.postMessage(req, [buffer]);
    });
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.failAll(new Error('the hash pool closed before the chunk was hashed'));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
