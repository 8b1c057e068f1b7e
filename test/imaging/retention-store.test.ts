import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { ImageStore, VersionProtectedError } from '../../src/imaging/image-store.js';
import { importStream } from '../../src/imaging/image-import.js';
import { nullLogger } from '../../src/lib/log.js';
import { prng } from '../lib/prng.js';
import { tempDir } from './helpers.js';

const CHUNK = 64 * 1024;

async function chunkFileBytes(dir: string): Promise<{ count: number; bytes: number }> {
  let count = 0;
  let bytes = 0;
  for (const sub of await readdir(join(dir, 'chunks'))) {
    for (const f of await readdir(join(dir, 'chunks', sub))) {
      count++;
      bytes += (await stat(join(dir, 'chunks', sub, f))).size;
    }
  }
  return { count, bytes };
}

/** `n` chunks, chunk i filled from seed `seeds[i]` (0: all zero, a hole), random so compression cannot hide sharing. */
function disk(seeds: readonly number[]): Buffer {
  return Buffer.concat(seeds.map((s) => {
    if (s === 0) return Buffer.alloc(CHUNK);
    const r = prng(s);
    const b = Buffer.alloc(CHUNK);
    for (let i = 0; i < CHUNK; i += 4) b.writeUInt32LE(Math.floor(r() * 2 ** 32), i);
    return b;
  }));
}

describe('image store: protect flags, notes, retention removal, changed bytes, store-wide space', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  const storeDir = (): string => join(dir, 'store');
  const open = (keepVersions = 1000): Promise<ImageStore> => ImageStore.open(storeDir(), { logger: nullLogger(), chunkSize: CHUNK, keepVersions, workers: 1 });
  const put = async (name: string, seeds: readonly number[], source = 'test'): Promise<number> => {
    const b = disk(seeds);
    return (await importStream(store, name, Readable.from([b]), b.length, { source })).version;
  };
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('retention-store'));
    store = await open();
  });
  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('a protect flag, a note and a retention policy survive reopening the store and follow a rename', async () => {
    await put('pc', [1, 2]);
    await put('pc', [1, 3]);
    await store.setVersionMeta('pc', 1, { protected: true });
    await store.setVersionMeta('pc', 2, { note: 'before the update\nof Office' });
    await store.setRetention('pc', { keepDaily: 7 });
    await store.close();
    store = await open();
    await store.renameImage('pc', 'office');
    const d = await store.show('office');
    expect(d.versions.map((v) => [v.version, v.protected, v.note])).toEqual([[1, true, ''], [2, false, 'before the update of Office']]);
    expect(d.retention).toEqual({ keepDaily: 7 });
    await expect(store.removeVersion('office', 1)).rejects.toBeInstanceOf(VersionProtectedError);
    await store.setVersionMeta('office', 1, { protected: false });
    await store.removeVersion('office', 1);
    expect(await store.versions('office')).toEqual([2]);
  });

  it('removeVersions never removes a protected version, one a task uses, or the newest; gc then frees only their chunks', async () => {
    for (let v = 1; v <= 5; v++) await put('pc', [100 + v, 1]); // each version has one chunk of its own
    await store.setVersionMeta('pc', 2, { protected: true });
    store.setVersionsInUse((image) => new Map(image === 'pc' ? [[3, ['deploy task t1']]] : []));
    const before = await chunkFileBytes(storeDir());
    const removed = await store.removeVersions('pc', [1, 2, 3, 4, 5]);
    expect(removed).toEqual([1, 4]);
    expect(await store.versions('pc')).toEqual([2, 3, 5]);
    const gc = await store.gc();
    expect(gc.removedChunks).toBe(2);
    const after = await chunkFileBytes(storeDir());
    expect(after.count).toBe(before.count - 2);
    expect(before.bytes - after.bytes).toBe(gc.freedBytes);
  });

  it('keep-versions at commit skips protected and in-use versions, and leaves an image with a policy alone', async () => {
    await store.close();
    store = await open(2);
    for (let v = 1; v <= 2; v++) await put('pc', [10 + v]);
    await store.setVersionMeta('pc', 1, { protected: true });
    await put('pc', [13]);
    expect(await store.versions('pc')).toEqual([1, 2, 3]); // 1 is protected and does not count
    store.setVersionsInUse(() => new Map([[2, ['deploy task t2']]]));
    await put('pc', [14]);
    expect(await store.versions('pc')).toEqual([1, 2, 3, 4]);
    store.setVersionsInUse(() => new Map());
    await put('pc', [15]);
    expect(await store.versions('pc')).toEqual([1, 4, 5]);
    await store.setRetention('pc', { keepLast: 1 });
    await put('pc', [16]);
    expect(await store.versions('pc')).toEqual([1, 4, 5, 6]);
  });

  it('a new version that takes a removed version\'s number does not inherit its note or protect flag', async () => {
    await put('pc', [1]);
    await put('pc', [2]);
    await store.setVersionMeta('pc', 2, { note: 'old two' });
    await store.removeVersion('pc', 2);
    expect(await put('pc', [3])).toBe(2);
    expect((await store.show('pc')).versions.map((v) => v.note)).toEqual(['', '']);
  });

  it('changed bytes per version match a model of the chunk contents', async () => {
    const r = prng(42);
    const versions: number[][] = [];
    let cur = Array.from({ length: 24 }, () => (r() < 0.2 ? 0 : 1 + Math.floor(r() * 40)));
    for (let v = 0; v < 6; v++) {
      versions.push(cur);
      await put('m', cur);
      // Change some chunks: to zero, to a new content, to another chunk's content.
      cur = cur.map((s) => (r() < 0.25 ? (r() < 0.3 ? 0 : 1 + Math.floor(r() * 60)) : s));
    }
    const hashOf = (seed: number): string => createHash('sha256').update(disk([seed])).digest('hex');
    const d = await store.show('m');
    versions.forEach((seeds, i) => {
      const prev = new Set((versions[i - 1] ?? []).filter((s) => s !== 0).map(hashOf));
      const expected = seeds.filter((s) => s !== 0 && !prev.has(hashOf(s))).length * CHUNK;
      expect(d.versions[i].changedBytes, `version ${i + 1}`).toBe(expected);
      expect(d.versions[i].previousVersion).toBe(i === 0 ? null : i);
    });
  });

  it('store-wide space: two images sharing chunks add up to what the store holds, and each is charged half the shared part', async () => {
    // A and B share chunks 1–9; A has 20, B has 30 and 31; B's second version adds 32.
    await put('a', [1, 2, 3, 4, 5, 6, 7, 8, 9, 20]);
    await put('b', [1, 2, 3, 4, 5, 6, 7, 8, 9, 30, 31]);
    await put('b', [1, 2, 3, 4, 5, 6, 7, 8, 9, 30, 32]);
    const files = await chunkFileBytes(storeDir());
    const space = await store.space();
    expect(space.storedBytes).toBe(files.bytes);
    const fileSize = files.bytes / files.count; // random chunks: every file the same size
    expect(files.count).toBe(13);
    expect(space.logicalBytes).toBe(32 * CHUNK);
    expect(space.referencedBytes).toBe(32 * fileSize);
    expect(space.dedupSavings).toBe((32 - 13) * fileSize);
    const list = await store.list();
    expect(list.reduce((s, i) => s + i.storedBytes, 0)).toBeCloseTo(space.storedBytes, -1);
    const a = await store.show('a');
    expect(a.sharedBytes).toBe(9 * fileSize);
    expect(a.exclusiveBytes).toBe(fileSize);
    expect(a.storedBytes).toBe(Math.round(4.5 * fileSize + fileSize));
    expect(a.dedupSavings).toBe(10 * fileSize - a.storedBytes); // "Dedup saves 0 B" before issue 13
    const b = await store.show('b');
    expect(b.exclusiveBytes).toBe(3 * fileSize);
    expect(b.versions.map((v) => v.changedBytes)).toEqual([11 * CHUNK, CHUNK]);
    // Removing a version changes the figures at once (the count is not kept stale).
    await store.removeVersion('b', 2);
    expect((await store.space()).referencedBytes).toBe(21 * fileSize);
  });

  it('a damaged image.json stops pruning but not captures', async () => {
    await store.close();
    store = await open(1);
    await put('pc', [1]);
    await store.setVersionMeta('pc', 1, { protected: true });
    await writeFile(join(storeDir(), 'images', 'pc', 'image.json'), '{"versions": 7');
    expect(await put('pc', [2])).toBe(2);
    expect(await store.versions('pc')).toEqual([1, 2]);
    await expect(store.removeVersions('pc', [1])).rejects.toThrow(/image.json is damaged.*nothing of image pc is pruned/);
  });
});
