import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { readFile, writeFile, stat, readdir } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importFile, importStream } from '../../src/imaging/image-import.js';
import { exportTo } from '../../src/imaging/image-export.js';
import { nullLogger } from '../../src/lib/log.js';
import { tempDir, mixedDisk, compressible } from './helpers.js';

const MiB = 1024 * 1024;

async function chunkFiles(dir: string): Promise<{ count: number; bytes: number }> {
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

describe('image store: import, export, dedup', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('store'));
    store = await ImageStore.open(join(dir, 'images'), { logger: nullLogger() });
  });
  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('round-trips an odd-sized mixed disk byte for byte, sparse on export', async () => {
    const size = 13 * MiB + 12345;
    const disk = mixedDisk(size);
    disk.fill(0, 2 * MiB, 5 * MiB); // whole zero chunks → holes
    const src = join(dir, 'src.img');
    await writeFile(src, disk);
    const v = await importFile(store, 'win10', src);
    expect(v.version).toBe(1);
    expect(v.size).toBe(size);
    expect(v.dataBytes).toBeLessThanOrEqual(size - 3 * MiB);
    const out = join(dir, 'out.img');
    await exportTo(store, 'win10', out);
    const back = await readFile(out);
    expect(back.length).toBe(size);
    expect(back.equals(disk)).toBe(true);
    // The holes were not written: the file occupies fewer blocks than its size.
    const st = await stat(out);
    expect(st.blocks * 512).toBeLessThan(size - 2 * MiB);

    const r = await store.openVersion('win10');
    try {
      const pieces = await r.read(2 * MiB - 10, 20);
      expect(pieces[0]).toMatchObject({ kind: 'data', offset: 2 * MiB - 10 });
      expect(pieces[1]).toMatchObject({ kind: 'hole', offset: 2 * MiB, length: 10 });
      expect(r.blockStatus(0, 6 * MiB)).toEqual([
        { length: 2 * MiB, flags: 0 },
        { length: 3 * MiB, flags: 3 },
        { length: MiB, flags: 0 },
      ]);
      expect(r.digest).toBe(v.digest);
    } finally {
      r.close();
    }
  });

  it('exports to an open fd, replacing old contents and keeping holes', async () => {
    const disk = Buffer.concat([Buffer.alloc(MiB), randomBytes(MiB), Buffer.alloc(MiB + 3)]);
    await importStream(store, 'fd', Readable.from([disk]), disk.length, { source: 'test' });
    const out = join(dir, 'fd.img');
    await writeFile(out, randomBytes(5 * MiB)); // stale, longer contents must not survive
    const { open } = await import('node:fs/promises');
    const fh = await open(out, 'r+');
    try {
      await exportTo(store, 'fd', fh.fd);
    } finally {
      await fh.close();
    }
    expect((await readFile(out)).equals(disk)).toBe(true);
  });

  it('exports to a stream with holes as zeroes', async () => {
    const disk = Buffer.concat([compressible(MiB + 5), Buffer.alloc(2 * MiB), randomBytes(777)]);
    await importStream(store, 's', Readable.from([disk.subarray(0, 1000), disk.subarray(1000)]), disk.length, { source: 'test' });
    const parts: Buffer[] = [];
    const { Writable } = await import('node:stream');
    const sink = new Writable({
      write(c: Buffer, _e, cb) {
        parts.push(Buffer.from(c));
        cb();
      },
    });
    await exportTo(store, 's', sink);
    expect(Buffer.concat(parts).equals(disk)).toBe(true);
  });

  it('stores holes as nothing and compressible data small', async () => {
    const size = 64 * MiB;
    const disk = Buffer.alloc(size);
    compressible(4 * MiB).copy(disk, 8 * MiB);
    await importStream(store, 'sparse', Readable.from([disk]), size, { source: 'test' });
    const files = await chunkFiles(join(dir, 'images'));
    expect(files.count).toBe(4);
    expect(files.bytes).toBeLessThan(2 * MiB);
    const d = await store.show('sparse');
    expect(d.dataBytes).toBe(4 * MiB);
    expect(d.compressionRatio).toBeGreaterThan(2);
  });

  it('two nearly identical images share chunks', async () => {
    const size = 24 * MiB;
    const a = randomBytes(size);
    const b = Buffer.from(a);
    b[5 * MiB + 3] ^= 0xff; // one byte differs: one chunk differs
    await importStream(store, 'a', Readable.from([a]), size, { source: 'a' });
    const one = await chunkFiles(join(dir, 'images'));
    await importStream(store, 'b', Readable.from([b]), size, { source: 'b' });
    const two = await chunkFiles(join(dir, 'images'));
    expect(two.count).toBe(one.count + 1);
    expect(two.bytes).toBeLessThan(one.bytes * 1.1);
    const list = await store.list();
    expect(list.map((i) => i.name)).toEqual(['a', 'b']);
  });
});
