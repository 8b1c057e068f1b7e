/**
 * A capture's chunk table: for each chunk, whether it is settled (stored or a hole) and, if stored,
 * its hash and file size. Pages are allocated when a chunk in them is first settled, so a capture's
 * memory grows with the chunks a client actually touched, not with the size it declared: a client
 * claiming a 64 TiB disk and writing 1 MiB costs one page.
 */
import type { TableEntry } from './manifest.js';

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
    for (const e of this.entries()) yield e.hash.toString('hex');
  }

  /** Stored chunks in ascending order (unsettled chunks are holes), as a manifest is encoded from. */
  *entries(): Generator<TableEntry> {
    for (const n of [...this.pages.keys()].sort((a, b) => a - b)) {
      const p = this.pages.get(n) as Page;
      for (let k = 0; k < PAGE_CHUNKS; k++) {
        const i = n * PAGE_CHUNKS + k;
        if (i >= this.chunkCount) break;
        const o = k * HASH_LEN;
        if (p.hashes.readBigUInt64LE(o) === 0n && p.hashes.readBigUInt64LE(o + 8) === 0n && p.hashes.readBigUInt64LE(o + 16) === 0n && p.hashes.readBigUInt64LE(o + 24) === 0n) continue;
        yield { index: i, hash: p.hashes.subarray(o, o + HASH_LEN), size: p.sizes[k] };
      }
    }
  }

  /** Pages allocated so far (memory follows the chunks touched). */
  get pageCount(): number {
    return this.pages.size;
  }

  clear(): void {
    this.pages.clear();
  }
}
