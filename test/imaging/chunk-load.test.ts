/**
 * Chunk files are read by the codec workers (CodecPool.load): missing, truncated, padded or
 * oversized files must fail the read (never serve bytes), and the buffers the workers reuse between
 * reads must never leak one chunk's bytes into another's answer.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { appendFile, readFile, truncate, unlink, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importStream } from '../../src/imaging/image-import.js';
import { nullLogger } from '../../src/lib/log.js';
import { compressible, sha256, tempDir } from './helpers.js';

const MiB = 1024 * 1024;

describe('chunk reads in the codec workers', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('chunkload'));
    // No decoded-chunk cache: every read goes to a worker and its file.
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger(), workers: 2, cacheBytes: 0 });
  });

  afterEach(async () => {
    await store?.close();
    await cleanup();
  });

  const chunkPath = (hash: string): string => join(dir, 'store', 'chunks', hash.slice(0, 2), hash);

  it('serves interleaved raw and zstd chunks byte for byte, many at once', async () => {
    const parts: Buffer[] = [];
    for (let i = 0; i < 12; i++) parts.push(i % 2 === 0 ? randomBytes(MiB) : compressible(MiB, i + 1));
    const d = Buffer.concat(parts);
    await importStream(store, 'mix', Readable.from([d]), d.length, { source: 't' });
    const r = await store.openVersion('mix');
    try {
      for (let round = 0; round < 3; round++) {
        const got = await Promise.all(parts.map((_, i) => r.readChunk(i)));
        got.forEach((c, i) => expect(sha256(c as Buffer)).toBe(sha256(parts[i])));
      }
    } finally {
      r.close();
    }
  });

  it('a missing, truncated, padded or oversized chunk file fails the read and verify, naming the chunk', async () => {
    const parts = [randomBytes(MiB), compressible(MiB, 3), randomBytes(MiB), compressible(MiB, 4), randomBytes(MiB)];
    const d = Buffer.concat(parts);
    await importStream(store, 'bad', Readable.from([d]), d.length, { source: 't' });
    const r = await store.openVersion('bad');
    try {
      const h = [0, 1, 2, 3, 4].map((i) => r.chunkHash(i) as string);
      // Incompressible: stored whole (chunk format 2 keeps it in zstd raw blocks, ~40 bytes of framing).
      expect((await readFile(chunkPath(h[0]))).length).toBeGreaterThan(MiB + 16);
      expect((await readFile(chunkPath(h[0]))).length).toBeLessThan(MiB + 16 + 64);
      expect((await readFile(chunkPath(h[1]))).length).toBeLessThan(MiB / 2); // zstd
      await unlink(chunkPath(h[0]));
      await truncate(chunkPath(h[1]), 100);
      await appendFile(chunkPath(h[2]), Buffer.alloc(1)); // one byte more than an incompressible 1 MiB chunk's file
      const big = await readFile(chunkPath(h[3]));
      await writeFile(chunkPath(h[3]), Buffer.concat([big, Buffer.alloc(2 * MiB)])); // past any read buffer
      const reasons = [/missing/, /payload length|does not decode|shorter/, /payload length/, /payload length/];
      for (let i = 0; i < 4; i++) {
        await expect(r.readChunk(i)).rejects.toThrow(new RegExp(`chunk ${h[i]} is damaged: .*(${reasons[i].source})`));
      }
      expect(sha256((await r.readChunk(4)) as Buffer)).toBe(sha256(parts[4]));
      const v = await store.verify('bad');
      expect(v.ok).toBe(false);
      expect(v.damaged.map((x) => x.hash)).toEqual(h.slice(0, 4));
    } finally {
      r.close();
    }
  });
});
