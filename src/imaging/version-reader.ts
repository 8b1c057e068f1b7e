/**
 * Read access to one committed version. Holds the manifest's table in memory (36 bytes per data chunk)
 * and pins it, so gc keeps every chunk it names until close(), even if the version is pruned.
 */
import { chunkLength, dataIndexOf, manifestEntries, manifestHashAt, type Manifest, type TableEntry } from './manifest.js';
import { EXTENT_DATA, EXTENT_HOLE_ZERO, type HashPin, type ImageExtent, type ImagePiece, type StoreContext } from './types.js';

export class VersionReader {
  readonly size: number;
  readonly sectorSize: number;
  readonly chunkSize: number;
  readonly digest: string;
  readonly version: number;
  readonly dataBytes: number;
  readonly created: string;
  readonly source: string;
  private closed = false;
  private readonly pin: HashPin;
  private named: Set<string> | null = null;

  constructor(
    private readonly ctx: StoreContext,
    readonly name: string,
    private readonly manifest: Manifest,
  ) {
    const h = manifest.header;
    this.size = h.size;
    this.sectorSize = h.sectorSize;
    this.chunkSize = h.chunkSize;
    this.digest = h.digest;
    this.version = h.version;
    this.dataBytes = h.dataBytes;
    this.created = h.created;
    this.source = h.source;
    this.pin = { hashBlocks: () => [manifest.hashes] };
    ctx.addPin(this.pin);
  }

  get chunkCount(): number {
    return this.manifest.header.chunkCount;
  }

  isHole(index: number): boolean {
    return dataIndexOf(this.manifest, index) < 0;
  }

  /** Hex hash of chunk `index`, or null for a hole. */
  chunkHash(index: number): string | null {
    return manifestHashAt(this.manifest, index);
  }

  /** The data chunks in disk order (index, 32-byte hash, chunk file size); holes are skipped. */
  entries(): Iterable<TableEntry> {
    return manifestEntries(this.manifest);
  }

  /**
   * Does this version name chunk `hash`? Lets a deploy serve a chunk file only to a holder of a version
   * that uses it. The set is built on first use (≈100 bytes per distinct data chunk).
   */
  names(hash: string): boolean {
    if (this.named === null) {
      this.named = new Set();
      for (const e of manifestEntries(this.manifest)) this.named.add(e.hash.toString('hex'));
    }
    return this.named.has(hash);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  chunkLength(index: number): number {
    return chunkLength(this.size, this.chunkSize, index);
  }

  /** The whole chunk's verified bytes, or null for a hole. The buffer may be shared: do not modify it. */
  async readChunk(index: number): Promise<Buffer | null> {
    this.checkOpen();
    const hash = this.chunkHash(index);
    if (hash === null) return null;
    return this.ctx.loadChunk(hash, { image: `${this.name}@${this.version}`, offset: index * this.chunkSize });
  }

  private checkOpen(): void {
    if (this.closed) throw new Error(`reader for ${this.name} version ${this.version} is closed`);
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new RangeError(`range ${offset}+${length} is outside the ${this.size}-byte image ${this.name}`);
    }
  }

  async read(offset: number, length: number): Promise<ImagePiece[]> {
    this.checkOpen();
    this.checkRange(offset, length);
    const cs = this.chunkSize;
    const jobs: Promise<ImagePiece>[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const idx = Math.floor(pos / cs);
      const inChunk = pos - idx * cs;
      const n = Math.min(end - pos, cs - inChunk);
      const at = pos;
      if (this.isHole(idx)) {
        jobs.push(Promise.resolve({ kind: 'hole', offset: at, length: n }));
      } else {
        jobs.push(this.readChunk(idx).then((c) => ({ kind: 'data', offset: at, data: (c as Buffer).subarray(inChunk, inChunk + n) })));
      }
      pos += n;
    }
    const pieces = await Promise.all(jobs);
    // Adjacent holes merge so a big sparse read is one piece per run.
    const out: ImagePiece[] = [];
    for (const p of pieces) {
      const last = out[out.length - 1];
      if (p.kind === 'hole' && last && last.kind === 'hole') out[out.length - 1] = { kind: 'hole', offset: last.offset, length: last.length + p.length };
      else out.push(p);
    }
    return out;
  }

  /** Extents over [offset, offset+length): holes read as zeroes, data chunks as allocated. */
  blockStatus(offset: number, length: number): ImageExtent[] {
    this.checkOpen();
    this.checkRange(offset, length);
    const out: { length: number; flags: number }[] = [];
    const cs = this.chunkSize;
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const idx = Math.floor(pos / cs);
      const n = Math.min(end - pos, (idx + 1) * cs - pos);
      const flags = this.isHole(idx) ? EXTENT_HOLE_ZERO : EXTENT_DATA;
      const last = out[out.length - 1];
      if (last && last.flags === flags) last.length += n;
      else out.push({ length: n, flags });
      pos += n;
    }
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.named = null;
    this.ctx.removePin(this.pin);
  }
}
