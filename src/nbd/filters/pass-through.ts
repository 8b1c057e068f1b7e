/**
 * The base of every filter, as in nbdkit: a filter wraps the next export and each call it does
 * not override reaches that export unchanged, with its arguments and its result. A filter then
 * states only what it changes or watches.
 */
import type { BlockSizes, DetachInfo, ExportCapabilities, Extent, NbdExport, PeerInfo, ReadPiece, WriteZeroesOptions } from '../export.js';

export type VectoredWrite = (offset: number, slices: readonly Buffer[], fua: boolean) => Promise<void>;

export class PassThroughExport implements NbdExport {
  /**
   * Present exactly when the next export has writev, so the server sees the same choice the next
   * export offers: without it the server assembles the payload and calls write(), and a filter
   * sees every write there. A filter that watches vectored writes overrides vectoredWrite().
   */
  declare writev?: VectoredWrite;

  constructor(protected readonly next: NbdExport) {
    if (next.writev) this.writev = (offset, slices, fua) => this.vectoredWrite(offset, slices, fua);
  }

  get description(): string {
    return this.next.description;
  }

  get size(): number {
    return this.next.size;
  }

  get capabilities(): ExportCapabilities {
    return this.next.capabilities;
  }

  get blockSizes(): BlockSizes {
    return this.next.blockSizes;
  }

  attach(peer: PeerInfo): void {
    this.next.attach(peer);
  }

  detach(peer: PeerInfo, info: DetachInfo): void {
    this.next.detach(peer, info);
  }

  read(offset: number, length: number): Promise<ReadPiece[]> {
    return this.next.read(offset, length);
  }

  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    return this.next.write(offset, data, fua);
  }

  /**
   * What writev does; installed only when the next export has writev. A subclass that calls it
   * for a next export without one still gets a correct write: the slices joined into one buffer.
   */
  protected vectoredWrite(offset: number, slices: readonly Buffer[], fua: boolean): Promise<void> {
    if (this.next.writev) return this.next.writev(offset, slices, fua);
    return this.next.write(offset, slices.length === 1 ? slices[0] : Buffer.concat(slices), fua);
  }

  writeZeroes(offset: number, length: number, options: WriteZeroesOptions): Promise<void> {
    return this.next.writeZeroes(offset, length, options);
  }

  trim(offset: number, length: number, fua: boolean): Promise<void> {
    return this.next.trim(offset, length, fua);
  }

  flush(): Promise<void> {
    return this.next.flush();
  }

  cache(offset: number, length: number): Promise<void> {
    return this.next.cache(offset, length);
  }

  blockStatus(offset: number, length: number): Promise<Extent[]> {
    return this.next.blockStatus(offset, length);
  }
}
