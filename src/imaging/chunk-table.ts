/**
 * A capture's chunk table: for each chunk, whether it is settled (stored or a hole) and, if stored,
 * its hash and file size. Pages are allocated when a chunk in them is first settled, so a capture's
 * memory grows with the chunks a client actually touched, not with the size it declared: a client
 * claiming a 64 TiB disk and writing 1 MiB costs one page.
 */
const HASH_LEN = 32;
const PAGE_CHUNKS = 4096;

interface Page {
  readonly hashes: Buffer;
  readonly sizes: Uint32Array;
  readonly settled: Uint8Array;
}

export class ChunkTable {
  private readonly pages = new Map<number, Page>();

  constructor(readonly chunkCount: number) {}

  private page(i: number, create: boolean): Page | undefined {
    const n = Math.floor(i / PAGE_CHUNKS);
    let p = this.pages.get(n);
    if (!p && create) {
      p = { hashes: Buffer.alloc(PAGE_CHUNKS * HASH_LEN), sizes: new Uint32Array(PAGE_CHUNKS), settled: new Uint8Array(PAGE_CHUNKS / 8) };
      this.pages.set(n, p);
    }
    return p;
  }

  isSettled(i: number): boolean {
    const p = this.page(i, false);
    const k = i % PAGE_CHUNKS;
    return p !== undefined && (p.settled[k >> 3] & (1 << (k & 7))) !== 0;
  }

  /** Hex hash of a stored chunk; null for a hole or a chunk not settled yet. */
  hashOf(i: number): string | null {
    const p = this.page(i, false);
    if (!p) return null;
    const o = (i % PAGE_CHUNKS) * HASH_LEN;
    for (let j = 0; j < HASH_LEN; j += 8) if (p.hashes.readBigUInt64LE(o + j) !== 0n) return p.hashes.toString('hex', o, o + HASH_LEN);
    return null;
  }

  /** Settles chunk `i` as stored (`hash` hex) or as a hole (`hash` null); returns the hash it replaces. */
  set(i: number, hash: string | null, size: number): string | null {
    const old = this.hashOf(i);
    const p = this.page(i, true) as Page;
    const k = i % PAGE_CHUNKS;
    if (hash === null) p.hashes.fill(0, k * HASH_LEN, (k + 1) * HASH_LEN);
    else p.hashes.write(hash, k * HASH_LEN, HASH_LEN, 'hex');
    p.sizes[k] = hash === null ? 0 : size;
    p.settled[k >> 3] |= 1 << (k & 7);
    return old;
  }

  /** Every page's hash block, for gc to mark (all-zero entries are holes). */
  *hashBlocks(): Generator<Buffer> {
    for (const p of this.pages.values()) yield p.hashes;
  }

  /** Every stored chunk's hash, once per chunk that uses it. */
  *storedHashes(): Generator<string> {
    for (const n of this.pages.keys()) {
      for (let k = 0; k < PAGE_CHUNKS; k++) {
        const i = n * PAGE_CHUNKS + k;
        if (i >= this.chunkCount) break;
        const h = this.hashOf(i);
        if (h !== null) yield h;
      }
    }
  }

  /** The dense table a manifest is encoded from (unsettled chunks are holes). */
  dense(): { hashes: Buffer; sizes: Uint32Array } {
    const hashes = Buffer.alloc(this.chunkCount * HASH_LEN);
    const sizes = new Uint32Array(this.chunkCount);
    for (const [n, p] of this.pages) {
      const first = n * PAGE_CHUNKS;
      const count = Math.min(PAGE_CHUNKS, this.chunkCount - first);
      p.hashes.copy(hashes, first * HASH_LEN, 0, count * HASH_LEN);
      sizes.set(p.sizes.subarray(0, count), first);
    }
    return { hashes, sizes };
  }

  clear(): void {
    this.pages.clear();
  }
}
