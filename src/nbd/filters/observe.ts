/**
 * A filter in nbdkit's sense: wraps any export and reports the bytes that cross it,
 * so task progress comes from the NBD stream itself rather than from the client.
 */
import type { NbdExport, PeerInfo, DetachInfo, ReadPiece, Extent, WriteZeroesOptions } from '../export.js';

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

export function observeExport(inner: NbdExport, observer: TransferObserver): NbdExport {
  return {
    get description() {
      return inner.description;
    },
    get size() {
      return inner.size;
    },
    get capabilities() {
      return inner.capabilities;
    },
    get blockSizes() {
      return inner.blockSizes;
    },
    attach(peer: PeerInfo): void {
      inner.attach(peer);
      observer.onAttach?.(peer);
    },
    detach(peer: PeerInfo, info: DetachInfo): void {
      inner.detach(peer, info);
      observer.onDetach?.(peer, info);
    },
    async read(offset: number, length: number): Promise<ReadPiece[]> {
      const pieces = await inner.read(offset, length);
      let data = 0;
      for (const p of pieces) if (p.kind === 'data') data += p.data.length;
      if (data > 0) observer.onRead?.(data);
      return pieces;
    },
    async write(offset: number, buf: Buffer, fua: boolean): Promise<void> {
      await inner.write(offset, buf, fua);
      observer.onWrite?.(buf.length);
    },
    async writev(offset: number, slices: readonly Buffer[], fua: boolean): Promise<void> {
      let n = 0;
      for (const b of slices) n += b.length;
      if (inner.writev) await inner.writev(offset, slices, fua);
      else await inner.write(offset, slices.length === 1 ? slices[0] : Buffer.concat(slices, n), fua);
      observer.onWrite?.(n);
    },
    async writeZeroes(offset: number, length: number, options: WriteZeroesOptions): Promise<void> {
      await inner.writeZeroes(offset, length, options);
      observer.onZero?.(length);
    },
    async trim(offset: number, length: number, fua: boolean): Promise<void> {
      await inner.trim(offset, length, fua);
      observer.onZero?.(length);
    },
    flush: () => inner.flush(),
    cache: (offset: number, length: number) => inner.cache(offset, length),
    blockStatus: (offset: number, length: number): Promise<Extent[]> => inner.blockStatus(offset, length),
  };
}
