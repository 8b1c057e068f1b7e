/**
 * The manifest codec against a dense reference: random sparse tables (long hole runs, a short last
 * chunk, data at both ends) encode from entries exactly as from a dense table, parse back to the same
 * chunks, and digest exactly as the per-chunk definition the imaging client recomputes.
 */
import { describe, it, expect } from 'vitest';
import { randomBytes } from 'node:crypto';
import {
  chunkCountFor,
  chunkHashesOf,
  dataIndexOf,
  encodeManifestFromEntries,
  encodeManifestWithHeader,
  hashAt,
  imageDigest,
  imageDigestFromEntries,
  manifestEntries,
  manifestHashAt,
  parseManifest,
  type TableEntry,
} from '../../src/imaging/manifest.js';
import { prng } from '../lib/prng.js';

const KiB = 1024;

describe('manifest table, sparse and dense', () => {
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    it(`seed ${seed}: entries and dense tables encode alike, parse back, and digest as defined`, () => {
      const rnd = prng(seed);
      const chunkSize = 64 * KiB;
      const n = 1 + Math.floor(rnd() * 20000);
      const size = (n - 1) * chunkSize + 1 + Math.floor(rnd() * chunkSize);
      expect(chunkCountFor(size, chunkSize)).toBe(n);
      const hashes = Buffer.alloc(n * 32);
      const sizes = new Uint32Array(n);
      const density = rnd() < 0.5 ? 0.001 : 0.3;
      for (let i = 0; i < n; i++) {
        if (i === 0 || i === n - 1 ? rnd() < 0.5 : rnd() < density) {
          randomBytes(32).copy(hashes, i * 32);
          sizes[i] = 1 + Math.floor(rnd() * chunkSize);
        }
      }
      const input = { version: 1, size, sectorSize: 512, chunkSize, digest: 'b'.repeat(64), created: '2026-12-04T00:00:00.000Z', source: 't', storedBytes: 1 };
      const dense = encodeManifestWithHeader(input, hashes, sizes);
      const entries: TableEntry[] = [];
      for (let i = 0; i < n; i++) if (hashAt(hashes, i) !== null) entries.push({ index: i, hash: hashes.subarray(i * 32, i * 32 + 32), size: sizes[i] });
      const sparse = encodeManifestFromEntries(input, () => entries);
      expect(sparse.bytes.equals(dense.bytes)).toBe(true);
      const m = parseManifest(sparse.bytes);
      expect(m.header.dataChunks).toBe(entries.length);
      for (let i = 0; i < n; i++) {
        expect(manifestHashAt(m, i)).toBe(hashAt(hashes, i));
        if (hashAt(hashes, i) === null) expect(dataIndexOf(m, i)).toBe(-1);
      }
      expect([...manifestEntries(m)].map((e) => [e.index, e.hash.toString('hex'), e.size])).toEqual(entries.map((e) => [e.index, e.hash.toString('hex'), e.size]));
      expect(imageDigestFromEntries(size, chunkSize, entries)).toBe(imageDigest(chunkHashesOf(hashes, size, chunkSize)));
    });
  }
});
