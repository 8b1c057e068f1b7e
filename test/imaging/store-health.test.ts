/**
 * Store health: what the store trusts on disk, and what it hands between threads.
 * - Dedup trusts a chunk file only if it decodes to exactly the incoming bytes; a damaged one is
 *   rewritten, so a capture that reports success is readable.
 * - The codec pool hands a stored chunk's bytes back whole (they are stored again after a gc race),
 *   and a handle given to a worker cannot be read any more.
 * - Rewrites of the same blocks keep the store at the final version's size.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importStream } from '../../src/imaging/image-import.js';
import { readBytes } from '../../src/imaging/image-export.js';
import { CodecPool } from '../../src/imaging/codec-pool.js';
import { nullLogger } from '../../src/lib/log.js';
import { tempDir, compressible, sha256, readAll, chunkPaths } from './helpers.js';

const MiB = 1024 * 1024;



describe('store health', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  const storeDir = (): string => join(dir, 'store');
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('health'));
    store = await ImageStore.open(storeDir(), { logger: nullLogger() });
  });
  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('an import over damaged chunk files (one bit-flipped, one truncated) rewrites them: the new version reads back and verifies', async () => {
    // Chunk 0 compressible (zstd file), chunk 1 random (raw file): both codecs' checks are exercised.
    const data = Buffer.concat([compressible(MiB, 3), randomBytes(MiB), compressible(MiB, 5)]);
    await importStream(store, 'first', Readable.from([data]), data.length, { source: 't' });
    const files = await chunkPaths(storeDir());
    expect(files.length).toBe(3);
    const [a, b] = files;
    const fa = await readFile(a);
    fa[fa.length - 10] ^= 0xff;
    await writeFile(a, fa);
    await truncate(b, (await stat(b)).size - 100);
    expect((await store.verify('first')).ok).toBe(false);

    await importStream(store, 'second', Readable.from([data]), data.length, { source: 't' });
    expect((await readAll(store, 'second')).equals(data)).toBe(true);
    expect((await store.verify('second')).ok).toBe(true);
    // The files were repaired in place, so the first image is whole again too.
    expect((await store.verify('first')).ok).toBe(true);
    expect((await readAll(store, 'first')).equals(data)).toBe(true);
  });

  it('rewriting the same blocks a thousand times keeps the store at the final version (no superseded chunk files)', async () => {
    // Two RAM slots and a walk over four chunks: each chunk is evicted, stored and rewritten many times.
    const size = 4 * MiB;
    const cap = store.beginCapture('rewrite', { size, source: 't', maxPartialChunks: 2 });
    const model = Buffer.alloc(size);
    for (let i = 0; i < 1000; i++) {
      if (i % 50 === 0) {
        const whole = randomBytes(MiB);
        whole.copy(model, ((i / 50) % 4) * MiB);
        await cap.write(((i / 50) % 4) * MiB, whole);
      }
      const off = ((i * 7919) % 4) * MiB + ((i * 104729) % (MiB - 4096));
      const piece = randomBytes(4096);
      piece.copy(model, off);
      await cap.write(off, piece);
    }
    await cap.flush();
    const during = (await chunkPaths(storeDir())).length;
    expect(during).toBeLessThanOrEqual(4);
    await cap.commit();
    expect((await chunkPaths(storeDir())).length).toBe(4);
    expect((await readAll(store, 'rewrite')).equals(model)).toBe(true);
    expect((await store.gc()).removedChunks).toBe(0);
  });
});

describe('sizes and locking', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('sizes'));
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger(), keepVersions: 1 });
  });
  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('a 64 TiB capture costs memory for the chunks touched only, commits, and reads back; more than 64 TiB is refused', async () => {
    const TiB = 1024 ** 4;
    expect(() => store.beginCapture('too-big', { size: 64 * TiB + 512, source: 't' })).toThrow(/out of range/);
    const cap = store.beginCapture('huge', { size: 64 * TiB, source: 't', maxPartialChunks: 2 });
    // Two RAM slots: the first three regions are evicted into the table by the last two writes.
    const at = [0, 17 * TiB + 3 * MiB, 64 * TiB - MiB, MiB, 17 * TiB + 4 * MiB];
    const data = at.map(() => randomBytes(MiB));
    for (let i = 0; i < at.length; i++) await cap.write(at[i], data[i]);
    await cap.flush();
    // One 4096-chunk page of table per region touched, not 64 Mi chunks' worth.
    expect(cap.table.pageCount).toBe(3);
    const v = await cap.commit();
    expect(v.dataBytes).toBe(5 * MiB);
    const r = await store.openVersion('huge');
    try {
      for (let i = 0; i < at.length; i++) expect((await readBytes(r, at[i], MiB)).equals(data[i])).toBe(true);
      expect(r.isHole(2)).toBe(true);
    } finally {
      r.close();
    }
  });

  it('a reader opened before a version is removed and gc runs keeps every chunk of it readable', async () => {
    const v1 = randomBytes(4 * MiB);
    await importStream(store, 'x', Readable.from([v1]), v1.length, { source: 'v1' });
    // Issued in this order, without waiting: the open must pin v1 before the removal and gc take it away.
    const opening = store.openVersion('x', 1);
    const removing = store.removeVersion('x', 1);
    const collecting = store.gc();
    const r = await opening;
    await removing;
    expect((await collecting).removedChunks).toBe(0);
    try {
      expect((await readBytes(r, 0, r.size)).equals(v1)).toBe(true);
    } finally {
      r.close();
    }
    expect((await store.gc()).removedChunks).toBe(4);
  });
});

describe('codec pool buffer ownership', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let pool: CodecPool;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('pool'));
    pool = new CodecPool(nullLogger(), 1);
  });
  afterEach(async () => {
    await pool.close();
    await cleanup();
  });

  it('store() hands the same bytes back, whole, and storing them again (the gc-race path) is not a hole', async () => {
    const { mkdir } = await import('node:fs/promises');
    const chunks = join(dir, 'chunks');
    const tmp = join(dir, 'tmp');
    await mkdir(tmp);
    const data = randomBytes(MiB);
    const hash = sha256(data);
    await mkdir(join(chunks, hash.slice(0, 2)), { recursive: true });
    const buf = pool.acquire(MiB);
    data.copy(buf.bytes);
    const first = await pool.store(buf, 1, chunks, tmp);
    expect(first.zero).toBe(false);
    expect(first.hash).toBe(hash);
    expect(first.data.length).toBe(MiB);
    expect(first.data.bytes.equals(data)).toBe(true);
    // The handle given to the worker is spent: reading it throws instead of seeing a detached buffer.
    expect(() => buf.bytes).toThrow(/handed to a codec worker/);
    const again = await pool.store(first.data, 1, chunks, tmp, true);
    expect(again.zero).toBe(false);
    expect(again.hash).toBe(hash);
    expect(again.data.bytes.equals(data)).toBe(true);
    pool.release(again.data);
    // A released buffer comes back from acquire().
    const reused = pool.acquire(MiB);
    expect(reused.bytes.equals(data)).toBe(true);
  });
});
