/**
 * A filter in nbdkit's sense: wraps any export and reports the bytes that cross it,
 * so task progress comes from the NBD stream itself rather than from the client.
 * Every call it does not count passes through unchanged (PassThroughExport).
 */
import type { NbdExport, PeerInfo, DetachInfo, ReadPiece, WriteZeroesOptions } from '../export.js';
import { PassThroughExport } from './pass-through.js';

export interface TransferObserver {
  /** Data bytes read (holes are not bytes on the wire). */
  onRead?(bytes: number): void;
  /** Data bytes written: what crossed the wire. */
  onWrite?(bytes: number): void;
  /** Ranges zeroed or trimmed: they cover the disk as well as data, but cost a 28-byte request. */
  onZero?(bytes: number): void;
  onAttach?(peer: PeerInfo): void;
  onDetach?(peer: PeerInfo, info: DetachInfo): void;
}

class ObservedExport extends PassThroughExport {
  constructor(
    next: NbdExport,
    private readonly observer: TransferObserver,
  ) {
    super(next);
  }

  override attach(peer: PeerInfo): void {
    super.attach(peer);
    this.observer.onAttach?.(peer);
  }

  override detach(peer: PeerInfo, info: DetachInfo): void {
    super.detach(peer, info);
    this.observer.onDetach?.(peer, info);
  }

  override async read(offset: number, length: number): Promise<ReadPiece[]> {
    const pieces = await super.read(offset, length);
    let data = 0;
    for (const p of pieces) if (p.kind === 'data') data += p.data.length;
    if (data > 0) this.observer.onRead?.(data);
    return pieces;
  }

  override async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    await super.write(offset, data, fua);
    this.observer.onWrite?.(data.length);
  }

  protected override async vectoredWrite(offset: number, slices: readonly Buffer[], fua: boolean): Promise<void> {
    let n = 0;
    for (const b of slices) n += b.length;
    await super.vectoredWrite(offset, slices, fua);
    this.observer.onWrite?.(n);
  }

  override async writeZeroes(offset: number, length: number, options: WriteZeroesOptions): Promise<void> {
    await super.writeZeroes(offset, length, options);
    this.observer.onZero?.(length);
  }

  override async trim(offset: number, length: number, fua: boolean): Promise<void> {
    await super.trim(offset, length, fua);
    this.observer.onZero?.(length);
  }
}

export function observeExport(inner: NbdExport, observer: TransferObserver): NbdExport {
  return new ObservedExport(inner, observer);
}
