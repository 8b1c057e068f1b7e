/**
 * A sparse in-memory NbdExport for the NBD tests: fixed-size chunks allocated on first
 * write, absent chunks read as holes. It records attach/detach/flush so tests can assert
 * lifecycle behaviour.
 */
import type { BlockSizes, DetachInfo, ExportCapabilities, Extent, NbdExport, PeerInfo, ReadPiece, WriteZeroesOptions } from '../../src/nbd/export.js';
import { STATE_HOLE, STATE_ZERO } from '../../src/nbd/protocol.js';

export interface MemoryExportOptions {
  readonly size: number;
  readonly description?: string;
  readonly readOnly?: boolean;
  readonly multiConn?: boolean;
  readonly blockSizes?: BlockSizes;
  /** Allocation granularity; holes are reported at this resolution. Default 64 KiB. */
  readonly chunkSize?: number;
  /** Initial contents (copied); all-zero chunks stay holes. */
  readonly data?: Buffer;
}

export type LifecycleEvent =
  | { readonly kind: 'attach'; readonly peer: PeerInfo }
  | { readonly kind: 'detach'; readonly peer: PeerInfo; readonly info: DetachInfo };

export class MemoryExport implements NbdExport {
  readonly description: string;
  readonly size: number;
  readonly capabilities: ExportCapabilities;
  readonly blockSizes: BlockSizes;
  readonly events: LifecycleEvent[] = [];
  flushes = 0;
  private readonly chunkSize: number;
  private readonly chunks = new Map<number, Buffer>();
  private detachWaiters: Array<(e: LifecycleEvent) => void> = [];

  constructor(o: MemoryExportOptions) {
    this.size = o.size;
    this.description = o.description ?? `memory export (${o.size} bytes)`;
    this.chunkSize = o.chunkSize ?? 64 * 1024;
    const readOnly = o.readOnly ?? false;
    this.capabilities = {
      readOnly,
      // One shared buffer for every connection: completed writes are visible everywhere at once.
      multiConn: o.multiConn ?? true,
      trim: !readOnly,
      writeZeroes: !readOnly,
      fastZero: !readOnly,
      cache: true,
      blockStatus: true,
    };
    this.blockSizes = o.blockSizes ?? { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 };
    if (o.data !== undefined) this.writeSync(0, o.data.subarray(0, this.size));
  }

  attach(peer: PeerInfo): void {
    this.events.push({ kind: 'attach', peer });
  }

  detach(peer: PeerInfo, info: DetachInfo): void {
    const e: LifecycleEvent = { kind: 'detach', peer, info };
    this.events.push(e);
    const waiters = this.detachWaiters;
    this.detachWaiters = [];
    for (const w of waiters) w(e);
  }

  /** Resolves with the next detach event (or the n-th overall, counting from 1, if already seen). */
  waitForDetach(n = 1): Promise<LifecycleEvent> {
    const seen = this.events.filter((e) => e.kind === 'detach');
    if (seen.length >= n) return Promise.resolve(seen[n - 1]);
    return new Promise((resolve) => {
      const check = (): void => {
        const all = this.events.filter((e) => e.kind === 'detach');
        if (all.length >= n) resolve(all[n - 1]);
        else this.detachWaiters.push(check);
      };
      this.detachWaiters.push(check);
    });
  }

  async read(offset: number, length: number): Promise<ReadPiece[]> {
    const pieces: ReadPiece[] = [];
    for (const { idx, within, n, pos } of this.spans(offset, length)) {
      const chunk = this.chunks.get(idx);
      const last = pieces[pieces.length - 1];
      if (chunk === undefined) {
        if (last !== undefined && last.kind === 'hole') pieces[pieces.length - 1] = { kind: 'hole', offset: last.offset, length: last.length + n };
        else pieces.push({ kind: 'hole', offset: pos, length: n });
      } else {
        // Copy: the reply may sit in the socket queue while a later write changes the chunk.
        const data = Buffer.from(chunk.subarray(within, within + n));
        if (last !== undefined && last.kind === 'data') pieces[pieces.length - 1] = { kind: 'data', offset: last.offset, data: Buffer.concat([last.data, data]) };
        else pieces.push({ kind: 'data', offset: pos, data });
      }
    }
    return pieces;
  }

  async write(offset: number, data: Buffer, _fua: boolean): Promise<void> {
    this.writeSync(offset, data);
  }

  async writeZeroes(offset: number, length: number, options: WriteZeroesOptions): Promise<void> {
    this.zero(offset, length, options.mayTrim);
  }

  async trim(offset: number, length: number, _fua: boolean): Promise<void> {
    this.zero(offset, length, true);
  }

  async flush(): Promise<void> {
    this.flushes++;
  }

  async cache(_offset: number, _length: number): Promise<void> {
    // Everything is already in memory.
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    const out: Extent[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const idx = Math.floor(pos / this.chunkSize);
      const n = Math.min((idx + 1) * this.chunkSize, this.size) - pos;
      const flags = this.chunks.has(idx) ? 0 : STATE_HOLE | STATE_ZERO;
      const last = out[out.length - 1];
      if (last !== undefined && last.flags === flags) out[out.length - 1] = { length: last.length + n, flags };
      else out.push({ length: n, flags });
      pos += n;
    }
    return out;
  }

  /** The whole export as one buffer (holes as zeroes); for tests on small exports. */
  contents(): Buffer {
    const out = Buffer.alloc(this.size);
    for (const [idx, chunk] of this.chunks) {
      const start = idx * this.chunkSize;
      chunk.copy(out, start, 0, Math.min(this.chunkSize, this.size - start));
    }
    return out;
  }

  allocatedChunks(): number {
    return this.chunks.size;
  }

  /** The pieces of [offset, offset+length) that fall in each chunk, in order. */
  private *spans(offset: number, length: number): Generator<{ idx: number; within: number; n: number; pos: number }> {
    const end = offset + length;
    for (let pos = offset; pos < end; ) {
      const idx = Math.floor(pos / this.chunkSize);
      const within = pos - idx * this.chunkSize;
      const n = Math.min(this.chunkSize - within, end - pos);
      yield { idx, within, n, pos };
      pos += n;
    }
  }

  private writeSync(offset: number, data: Buffer): void {
    for (const { idx, within, n, pos } of this.spans(offset, data.length)) {
      const src = data.subarray(pos - offset, pos - offset + n);
      let chunk = this.chunks.get(idx);
      if (chunk === undefined) {
        // Writing zeroes into a hole keeps it a hole, as a sparse file would after detection.
        if (isZero(src)) continue;
        chunk = Buffer.alloc(this.chunkSize);
        this.chunks.set(idx, chunk);
      }
      src.copy(chunk, within);
    }
  }

  private zero(offset: number, length: number, mayPunch: boolean): void {
    for (const { idx, within, n } of this.spans(offset, length)) {
      const chunk = this.chunks.get(idx);
      if (chunk !== undefined) {
        if (mayPunch && n === this.chunkSize) this.chunks.delete(idx);
        else chunk.fill(0, within, within + n);
      } else if (!mayPunch) {
        // NO_HOLE: the range must end up allocated.
        this.chunks.set(idx, Buffer.alloc(this.chunkSize));
      }
    }
  }
}

const ZERO_PAGE = Buffer.alloc(64 * 1024);

function isZero(b: Buffer): boolean {
  for (let pos = 0; pos < b.length; pos += ZERO_PAGE.length) {
    const part = b.subarray(pos, pos + ZERO_PAGE.length);
    if (!part.equals(ZERO_PAGE.subarray(0, part.length))) return false;
  }
  return true;
}
