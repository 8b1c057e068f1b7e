/**
 * Which bytes of a disk a capture reads, seen chunk by chunk. Pure. Holds the used ranges as two
 * sorted arrays, so a 512 GB disk with 100 000 ranges costs a few MB, and answers a chunk with a
 * binary search.
 */
import { mergeRanges, type ByteRange } from '../imaging/domain-map.js';

/** Bytes [at, at + length) of a chunk are disk bytes [diskOffset, diskOffset + length) (disk-chunks.ts reads these). */
export interface UsedPiece {
  readonly at: number;
  readonly diskOffset: number;
  readonly length: number;
}

export class UsedMap {
  readonly diskSize: number;
  readonly chunkSize: number;
  readonly chunkCount: number;
  /** Bytes of the disk in used ranges. */
  readonly usedBytes: number;
  private readonly starts: Float64Array;
  private readonly ends: Float64Array;

  /** `ranges` in any order, overlapping or not; bytes past the disk's end are ignored. */
  constructor(ranges: readonly ByteRange[], diskSize: number, chunkSize: number) {
    if (!Number.isSafeInteger(diskSize) || diskSize <= 0) throw new RangeError(`used map: disk size ${diskSize} must be a positive integer`);
    if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) throw new RangeError(`used map: chunk size ${chunkSize} must be a positive integer`);
    for (const [s, e] of ranges) {
      if (!Number.isSafeInteger(s) || !Number.isSafeInteger(e) || s < 0 || e < s) throw new RangeError(`used map: [${s}, ${e}) is not a byte range`);
    }
    const merged = mergeRanges(ranges.map(([s, e]): ByteRange => [s, Math.min(e, diskSize)]));
    this.diskSize = diskSize;
    this.chunkSize = chunkSize;
    this.chunkCount = Math.ceil(diskSize / chunkSize);
    this.starts = Float64Array.from(merged, (r) => r[0]);
    this.ends = Float64Array.from(merged, (r) => r[1]);
    this.usedBytes = merged.reduce((n, [s, e]) => n + (e - s), 0);
  }

  /** The used ranges, sorted and merged. */
  ranges(): ByteRange[] {
    return Array.from(this.starts, (s, i): ByteRange => [s, this.ends[i]]);
  }

  private bounds(chunk: number): [number, number] {
    if (!Number.isInteger(chunk) || chunk < 0 || chunk >= this.chunkCount) throw new RangeError(`used map: chunk ${chunk} is not one of the disk's ${this.chunkCount}`);
    const start = chunk * this.chunkSize;
    return [start, Math.min(start + this.chunkSize, this.diskSize)];
  }

  /** Index of the first range ending after `offset` (ranges.length when none). */
  private firstEndingAfter(offset: number): number {
    let lo = 0;
    let hi = this.ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid] <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** No byte of the chunk is used: it is neither read nor sent. */
  isFree(chunk: number): boolean {
    const [start, end] = this.bounds(chunk);
    const i = this.firstEndingAfter(start);
    return i >= this.starts.length || this.starts[i] >= end;
  }

  /** The used disk byte ranges within the chunk, ascending. */
  usedIn(chunk: number): readonly ByteRange[] {
    const [start, end] = this.bounds(chunk);
    const out: ByteRange[] = [];
    for (let i = this.firstEndingAfter(start); i < this.starts.length && this.starts[i] < end; i++) {
      out.push([Math.max(start, this.starts[i]), Math.min(end, this.ends[i])]);
    }
    return out;
  }

  /** usedIn() as the pieces readDiskChunks() reads: [] for a free chunk. */
  pieces(chunk: number): UsedPiece[] {
    const start = chunk * this.chunkSize;
    return this.usedIn(chunk).map(([s, e]) => ({ at: s - start, diskOffset: s, length: e - s }));
  }

  /** The free chunks as [first, count] runs, ascending (DiskLayout.freeChunks). */
  freeRuns(): [number, number][] {
    const out: [number, number][] = [];
    // Chunks before `next` are known to hold a used byte or to be in a run already.
    let next = 0;
    for (let i = 0; i < this.starts.length; i++) {
      const first = Math.floor(this.starts[i] / this.chunkSize);
      const last = Math.ceil(this.ends[i] / this.chunkSize);
      if (first > next) out.push([next, first - next]);
      next = Math.max(next, last);
    }
    if (next < this.chunkCount) out.push([next, this.chunkCount - next]);
    return out;
  }

  /** Total chunks with no used byte. */
  freeChunkCount(): number {
    return this.freeRuns().reduce((n, [, c]) => n + c, 0);
  }
}
