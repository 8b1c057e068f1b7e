import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importStream } from '../../src/imaging/image-import.js';
import { readBytes } from '../../src/imaging/image-export.js';
import { chunkHashesOf, imageDigest } from '../../src/imaging/manifest.js';
import { nullLogger } from '../../src/lib/log.js';
import { tempDir, mixedDisk, sha256, readAll, chunkPaths } from './helpers.js';

const MiB = 1024 * 1024;



/** Fisher–Yates with a fixed seed so a failure is reproducible. */
function shuffled<T>(xs: T[], seed = 42): T[] {
  const a = [...xs];
  let s = seed;
  for (let i = a.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const j = s % (i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

describe('captures', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('capture'));
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger() });
  });
  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('assembles out-of-order 256 KiB pieces from several writers, spilling partial chunks', async () => {
    const size = 20 * MiB + 4096 * 3;
    const disk = mixedDisk(size, 3);
    // Few RAM slots force partial chunks through the spill file.
    const cap = store.beginCapture('ooo', { size, source: 'test', maxPartialChunks: 4 });
    const pieces: [number, number][] = [];
    for (let o = 0; o < size; o += 256 * 1024) pieces.push([o, Math.min(256 * 1024, size - o)]);
    const order = shuffled(pieces);
    // Four "connections", each with 8 requests in flight.
    let next = 0;
    const conn = async (): Promise<void> => {
      const inflight = new Set<Promise<void>>();
      while (next < order.length) {
        const [o, n] = order[next++];
        const p = cap.write(o, disk.subarray(o, o + n));
        inflight.add(p);
        void p.finally(() => inflight.delete(p));
        if (inflight.size >= 8) await Promise.race(inflight);
      }
      await Promise.all(inflight);
    };
    await Promise.all([conn(), conn(), conn(), conn()]);
    await cap.flush();
    const v = await cap.commit();
    expect(cap.bytesWritten).toBe(size);
    const back = await readAll(store, 'ooo');
    expect(back.equals(disk)).toBe(true);
    // The digest is what a client computes with dd bs=1M | sha256sum per chunk.
    const perChunk: string[] = [];
    for (let o = 0; o < size; o += MiB) perChunk.push(sha256(disk.subarray(o, Math.min(size, o + MiB))));
    expect(v.digest).toBe(imageDigest(perChunk));
  });

  it('accepts a write as a list of slices that straddle chunk boundaries', async () => {
    const size = 3 * MiB + 777;
    const disk = mixedDisk(size, 5);
    const cap = store.beginCapture('sliced', { size, source: 'test' });
    // Uneven slices, like socket reads: 100 KiB, then 64 KiB pieces, then odd remainders.
    const sliced = (o: number, n: number): Buffer[] => {
      const out: Buffer[] = [];
      let at = o;
      let step = 100 * 1024;
      while (at < o + n) {
        const k = Math.min(step, o + n - at);
        out.push(disk.subarray(at, at + k));
        at += k;
        step = 64 * 1024 + 3;
      }
      return out;
    };
    await cap.write(MiB - 5000, sliced(MiB - 5000, MiB + 10_000)); // spans chunks 0, 1 and 2
    await cap.write(0, sliced(0, MiB - 5000));
    await cap.write(2 * MiB + 5000, sliced(2 * MiB + 5000, size - 2 * MiB - 5000)); // into the short last chunk
    await cap.write(2 * MiB + 5000, []); // an empty list writes nothing
    await cap.flush();
    await cap.commit();
    expect(cap.bytesWritten).toBe(size);
    expect((await readAll(store, 'sliced')).equals(disk)).toBe(true);
  });

  it('bounds RAM by spilling partial chunks to a temp file', async () => {
    const size = 16 * MiB;
    const disk = randomBytes(size);
    const cap = store.beginCapture('spill', { size, source: 'test', maxPartialChunks: 2 });
    // First half of every chunk, then second halves: 16 partial chunks at once.
    for (let c = 0; c < 16; c++) await cap.write(c * MiB, disk.subarray(c * MiB, c * MiB + MiB / 2));
    await cap.flush();
    expect(cap.bufferedChunks).toBeLessThanOrEqual(3);
    const tmp = await readdir(join(dir, 'store', 'tmp'));
    expect(tmp.some((n) => n.startsWith('spill-'))).toBe(true);
    const mid = await cap.read(3 * MiB, MiB);
    expect(Buffer.concat(mid.map((p) => (p.kind === 'data' ? p.data : Buffer.alloc(p.length)))).equals(Buffer.concat([disk.subarray(3 * MiB, 3.5 * MiB), Buffer.alloc(MiB / 2)]))).toBe(true);
    for (let c = 15; c >= 0; c--) await cap.write(c * MiB + MiB / 2, disk.subarray(c * MiB + MiB / 2, (c + 1) * MiB));
    await cap.commit();
    expect((await readAll(store, 'spill')).equals(disk)).toBe(true);
    expect((await readdir(join(dir, 'store', 'tmp'))).filter((n) => n.startsWith('spill-'))).toEqual([]);
  });

  it('merges writes over already stored chunks and zero-fills what was never written', async () => {
    const size = 8 * MiB + 100;
    const cap = store.beginCapture('rw', { size, source: 'test' });
    const a = randomBytes(4 * MiB);
    await cap.write(0, a); // four whole chunks, stored at once
    await cap.flush();
    const patch = randomBytes(300 * 1024);
    await cap.write(MiB - 1000, patch); // straddles stored chunks 0 and 1
    await cap.writeZeroes(2 * MiB + 10, 20); // punches a few bytes into stored chunk 2
    await cap.writeZeroes(3 * MiB, MiB); // whole chunk → hole
    await cap.write(size - 50, Buffer.alloc(50, 7)); // tail of the short last chunk
    const v = await cap.commit();
    const expectDisk = Buffer.alloc(size);
    a.copy(expectDisk, 0);
    patch.copy(expectDisk, MiB - 1000);
    expectDisk.fill(0, 2 * MiB + 10, 2 * MiB + 30);
    expectDisk.fill(0, 3 * MiB, 4 * MiB);
    expectDisk.fill(7, size - 50);
    expect((await readAll(store, 'rw')).equals(expectDisk)).toBe(true);
    expect(v.dataBytes).toBe(3 * MiB + 100);
    const r = await store.openVersion('rw');
    expect(r.isHole(3)).toBe(true);
    expect(r.isHole(5)).toBe(true);
    expect(imageDigest(chunkHashesOf(Buffer.alloc(0), 0, MiB))).toBe(sha256(Buffer.alloc(0)));
    r.close();
  });

  it('abort leaves the previous version current and intact, and removes the chunk files it wrote', async () => {
    const v1 = randomBytes(3 * MiB);
    await importStream(store, 'img', Readable.from([v1]), v1.length, { source: 'v1' });
    const before = await chunkPaths(join(dir, 'store'));
    // Two RAM slots: writing five chunks stores at least three of them before the abort.
    const cap = store.beginCapture('img', { size: 5 * MiB, source: 'v2', maxPartialChunks: 2 });
    await cap.write(0, randomBytes(5 * MiB));
    await cap.flush();
    expect((await chunkPaths(join(dir, 'store'))).length).toBeGreaterThanOrEqual(before.length + 3);
    await cap.abort('client vanished');
    expect(await chunkPaths(join(dir, 'store'))).toEqual(before);
    await expect(cap.write(0, Buffer.alloc(10))).rejects.toThrow(/aborted/);
    expect(await store.versions('img')).toEqual([1]);
    expect((await readAll(store, 'img')).equals(v1)).toBe(true);
    expect((await store.verify('img')).ok).toBe(true);
    // Nothing left for gc: the abort already removed what only it had written.
    const g = await store.gc();
    expect(g.removedChunks).toBe(0);
    expect(g.keptChunks).toBe(before.length);
    expect((await readAll(store, 'img')).equals(v1)).toBe(true);
  });

  it('refuses a second concurrent capture of one image and bad names', async () => {
    const cap = store.beginCapture('one', { size: MiB, source: 't' });
    expect(() => store.beginCapture('one', { size: MiB, source: 't' })).toThrow(/already being captured/);
    for (const bad of ['../etc', 'a/b', '', '.hidden', 'x'.repeat(65), 'a..b']) expect(() => store.beginCapture(bad, { size: MiB, source: 't' })).toThrow(/invalid image name/);
    await cap.abort('test');
  });

  it('keeps the newest N versions and prunes older ones on commit', async () => {
    await store.close();
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger(), keepVersions: 2 });
    const datas: Buffer[] = [];
    for (let i = 0; i < 4; i++) {
      const d = randomBytes(MiB + 1);
      datas.push(d);
      const v = await importStream(store, 'ret', Readable.from([d]), d.length, { source: `v${i + 1}` });
      expect(v.version).toBe(i + 1);
    }
    expect(await store.versions('ret')).toEqual([3, 4]);
    expect((await readAll(store, 'ret')).equals(datas[3])).toBe(true);
    expect((await readAll(store, 'ret', 3)).equals(datas[2])).toBe(true);
    const d = await store.show('ret');
    expect(d.versions.map((v) => v.source)).toEqual(['v3', 'v4']);
    await store.removeVersion('ret', 4);
    expect((await readAll(store, 'ret')).equals(datas[2])).toBe(true);
    await store.renameImage('ret', 'ret2');
    expect((await store.list()).map((i) => i.name)).toEqual(['ret2']);
    await store.remove('ret2');
    expect(await store.list()).toEqual([]);
    const g = await store.gc();
    expect(g.keptChunks).toBe(0);
  });

  it('gc keeps chunks pinned by an open reader of a pruned version and by a live capture', async () => {
    await store.close();
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger(), keepVersions: 1 });
    const old = randomBytes(2 * MiB);
    await importStream(store, 'p', Readable.from([old]), old.length, { source: 'v1' });
    const reader = await store.openVersion('p');
    await importStream(store, 'p', Readable.from([randomBytes(2 * MiB)]), 2 * MiB, { source: 'v2' });
    expect(await store.versions('p')).toEqual([2]);
    const cap = store.beginCapture('q', { size: 2 * MiB, source: 'live' });
    const live = randomBytes(MiB);
    await cap.write(0, live);
    await cap.flush();
    const g1 = await store.gc();
    expect(g1.removedChunks).toBe(0);
    expect((await readBytes(reader, 0, 2 * MiB)).equals(old)).toBe(true);
    reader.close();
    const g2 = await store.gc();
    expect(g2.removedChunks).toBe(2); // v1's chunks, now unpinned
    await cap.commit();
    const q = await readAll(store, 'q');
    expect(q.subarray(0, MiB).equals(live)).toBe(true);
  });

  it('a flipped byte in a stored chunk fails verify naming it, and reads of it throw', async () => {
    const d = Buffer.concat([randomBytes(MiB), randomBytes(MiB), Buffer.alloc(MiB)]);
    await importStream(store, 'bad', Readable.from([d]), d.length, { source: 't' });
    const r0 = await store.openVersion('bad');
    const victim = r0.chunkHash(1) as string;
    r0.close();
    const path = join(dir, 'store', 'chunks', victim.slice(0, 2), victim);
    const f = await readFile(path);
    f[f.length - 100] ^= 0x01;
    await writeFile(path, f);
    const res = await store.verify('bad');
    expect(res.ok).toBe(false);
    expect(res.damaged).toEqual([{ hash: victim, offset: MiB, reason: expect.stringMatching(/does not match/) }]);
    const r = await store.openVersion('bad');
    await expect(r.read(MiB + 10, 10)).rejects.toThrow(new RegExp(`chunk ${victim} is damaged`));
    expect((await r.read(0, 10))[0]).toMatchObject({ kind: 'data' });
    r.close();
  });
});
