import { describe, expect, it } from 'vitest';
import type { ByteRange } from '../../src/imaging/domain-map.js';
import { UsedMap } from '../../src/agent/used-map.js';
import { prng } from '../lib/prng.js';

/** The obvious per-byte model, for small disks: which bytes are used. */
function model(ranges: readonly ByteRange[], size: number): Uint8Array {
  const m = new Uint8Array(size);
  for (const [s, e] of ranges) m.fill(1, Math.min(s, size), Math.min(e, size));
  return m;
}

/** The maximal runs of used bytes of the model within [lo, hi). */
function runsOf(m: Uint8Array, lo: number, hi: number): ByteRange[] {
  const out: ByteRange[] = [];
  let start = -1;
  for (let b = lo; b <= hi; b++) {
    const on = b < hi && m[b] === 1;
    if (on && start < 0) start = b;
    if (!on && start >= 0) {
      out.push([start, b]);
      start = -1;
    }
  }
  return out;
}

describe('UsedMap', () => {
  it('answers per chunk: free, the used ranges inside, the free runs', () => {
    // 10 chunks of 100 bytes, the last one 50.
    const u = new UsedMap([[0, 10], [250, 260], [255, 420], [900, 2000]], 950, 100);
    expect(u.chunkCount).toBe(10);
    expect(u.usedBytes).toBe(10 + 170 + 50);
    expect([...Array(10).keys()].filter((c) => u.isFree(c))).toEqual([1, 5, 6, 7, 8]);
    expect(u.usedIn(0)).toEqual([[0, 10]]);
    expect(u.usedIn(1)).toEqual([]);
    expect(u.usedIn(2)).toEqual([[250, 300]]);
    expect(u.usedIn(3)).toEqual([[300, 400]]);
    expect(u.usedIn(4)).toEqual([[400, 420]]);
    expect(u.usedIn(9)).toEqual([[900, 950]]);
    expect(u.pieces(4)).toEqual([{ at: 0, diskOffset: 400, length: 20 }]);
    expect(u.freeRuns()).toEqual([
      [1, 1],
      [5, 4],
    ]);
    expect(() => u.isFree(10)).toThrow(RangeError);
    expect(() => u.usedIn(-1)).toThrow(RangeError);
  });

  it('an empty map is one free run; a full one none', () => {
    expect(new UsedMap([], 1000, 100).freeRuns()).toEqual([[0, 10]]);
    expect(new UsedMap([[0, 1000]], 1000, 100).freeRuns()).toEqual([]);
    expect(() => new UsedMap([[5, 2]], 1000, 100)).toThrow(/not a byte range/);
  });

  it('agrees with a per-byte model on random maps', () => {
    const r = prng(12);
    for (let round = 0; round < 200; round++) {
      const size = 1 + Math.floor(r() * 3000);
      const chunk = 1 + Math.floor(r() * 300);
      const ranges: ByteRange[] = [];
      const n = Math.floor(r() * 20);
      for (let i = 0; i < n; i++) {
        const s = Math.floor(r() * (size + 50));
        ranges.push([s, s + Math.floor(r() * 200)]);
      }
      const u = new UsedMap(ranges, size, chunk);
      const m = model(ranges, size);
      expect(u.usedBytes).toBe(m.reduce((a, b) => a + b, 0));
      const free: number[] = [];
      for (let c = 0; c < u.chunkCount; c++) {
        const lo = c * chunk;
        const hi = Math.min(size, lo + chunk);
        expect(u.usedIn(c)).toEqual(runsOf(m, lo, hi));
        const isFree = m.subarray(lo, hi).every((b) => b === 0);
        expect(u.isFree(c)).toBe(isFree);
        if (isFree) free.push(c);
      }
      expect(u.freeRuns().flatMap(([f, k]) => [...Array(k).keys()].map((i) => f + i))).toEqual(free);
    }
  });

  it('handles a 512 GB disk with 100 000 ranges', () => {
    const size = 512 * 1024 ** 3;
    const chunk = 1024 * 1024;
    const ranges: ByteRange[] = [];
    // Used 4 KiB blocks every 3 MiB + 4 KiB: two of three chunks end up free or nearly.
    for (let i = 0; i < 100_000; i++) ranges.push([i * 3 * chunk + i * 4096, i * 3 * chunk + i * 4096 + 4096]);
    const u = new UsedMap(ranges, size, chunk);
    expect(u.usedBytes).toBe(100_000 * 4096);
    const runs = u.freeRuns();
    const free = runs.reduce((n, [, c]) => n + c, 0);
    let used = 0;
    for (let c = 0; c < u.chunkCount; c++) if (!u.isFree(c)) used++;
    expect(free + used).toBe(u.chunkCount);
    expect(used).toBe(100_000);
  });
});
