/**
 * Where a deploy puts each chunk (src/agent/placement.ts), checked byte by byte against a model: a
 * map from every image byte to its disk byte (or nowhere) built straight from the segments. And the
 * swap header the deploy writes, against what mkswap writes for the same UUID and label.
 */
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Placement } from '../../src/agent/placement.js';
import { swapHeader, SwapHeaderError } from '../../src/agent/swap-header.js';
import type { Segment } from '../../src/imaging/layout-plan.js';
import { prng } from '../lib/prng.js';

const exec = promisify(execFile);

/** Random non-overlapping segments over an image of `size` bytes, sorted by `from`, mapped to random non-overlapping places. */
function randomSegments(rand: () => number, size: number): Segment[] {
  const cuts = new Set<number>([0, size]);
  for (let i = 0; i < 6; i++) cuts.add(Math.floor(rand() * size));
  const points = [...cuts].sort((a, b) => a - b);
  const segs: Segment[] = [];
  let to = 0;
  for (let i = 0; i + 1 < points.length; i++) {
    const length = points[i + 1] - points[i];
    if (length === 0 || rand() < 0.3) continue; // a dropped region
    to += Math.floor(rand() * 3000);
    segs.push({ from: points[i], to, length });
    to += length;
  }
  return segs;
}

describe('placement of chunks on the deploy disk', () => {
  it('gives, for every chunk, exactly the disk bytes the segments send its bytes to', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const rand = prng(seed);
      const chunkSize = 512 * (1 + Math.floor(rand() * 8));
      const size = chunkSize * (2 + Math.floor(rand() * 10)) - Math.floor(rand() * chunkSize);
      const segments = randomSegments(rand, size);
      const freeFirst = Math.floor(rand() * 3);
      const freeRuns: [number, number][] = rand() < 0.5 ? [[freeFirst, 1]] : [];
      const p = new Placement(size, chunkSize, { freeChunks: freeRuns }, { segments });
      // The model: image byte → disk byte, or -1.
      const model = new Float64Array(size).fill(-1);
      for (const s of segments) for (let b = 0; b < s.length; b++) model[s.from + b] = s.to + b;
      const count = Math.ceil(size / chunkSize);
      for (let i = 0; i < count; i++) {
        const offset = i * chunkSize;
        const length = Math.min(chunkSize, size - offset);
        const got = new Float64Array(length).fill(-1);
        const pieces = p.pieces(i);
        const free = freeRuns.some(([f, c]) => i >= f && i < f + c);
        if (free) {
          expect(pieces, `seed ${seed} chunk ${i}`).toEqual([]);
          expect(p.isPartial(i)).toBe(false);
          continue;
        }
        if (pieces === null) {
          for (let b = 0; b < length; b++) got[b] = offset + b;
        } else {
          for (const x of pieces) {
            expect(x.at >= 0 && x.at + x.length <= length, `seed ${seed} chunk ${i}: piece inside the chunk`).toBe(true);
            for (let b = 0; b < x.length; b++) got[x.at + b] = x.diskOffset + b;
          }
        }
        expect(Array.from(got), `seed ${seed} chunk ${i}`).toEqual(Array.from(model.subarray(offset, offset + length)));
        // Partial: some byte of the chunk has no place on the disk.
        expect(p.isPartial(i), `seed ${seed} chunk ${i}`).toBe(Array.from(got).some((d) => d === -1));
      }
    }
  });

  it('puts every chunk in place without a plan, and nowhere for a free chunk', () => {
    const p = new Placement(10_000, 4096, { freeChunks: [[1, 1]] }, null);
    expect(p.pieces(0)).toBeNull();
    expect(p.pieces(1)).toEqual([]);
    expect(p.pieces(2)).toBeNull();
    expect(p.isFree(1)).toBe(true);
    expect(p.isPartial(2)).toBe(false);
  });
});

describe('swap header', () => {
  it('is the page mkswap writes for the same size, UUID and label', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'nc-swap-'));
    try {
      const file = path.join(dir, 'swap.img');
      const size = 8 * 1024 * 1024;
      await exec('truncate', ['-s', String(size), file]);
      const uuid = '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
      await exec('mkswap', ['-U', uuid, '-L', 'swappy', file]);
      const theirs = (await readFile(file)).subarray(0, 4096);
      expect(swapHeader(size, uuid, 'swappy').equals(theirs)).toBe(true);
      const { stdout } = await exec('blkid', ['-p', '-o', 'export', file]);
      expect(stdout).toContain(`UUID=${uuid}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses what a swap header cannot hold', () => {
    expect(() => swapHeader(4096 * 5, null, null)).toThrow(SwapHeaderError);
    expect(() => swapHeader(1 << 24, 'not-a-uuid', null)).toThrow(/not a UUID/);
    expect(() => swapHeader(1 << 24, null, 'x'.repeat(17))).toThrow(/longer than 16 bytes/);
  });
});
