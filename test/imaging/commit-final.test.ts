/**
 * The manifest rename is the commit: a failure after it (syncing the versions directory) is logged,
 * and the commit is still reported as done, because the version is current either way.
 */
import { describe, it, expect, vi, beforeEach, afterEach } from 'vitest';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importStream } from '../../src/imaging/image-import.js';
import { readBytes } from '../../src/imaging/image-export.js';
import { nullLogger } from '../../src/lib/log.js';
import { tempDir } from './helpers.js';

const failing = vi.hoisted(() => ({ dir: null as string | null, hits: 0 }));

vi.mock('../../src/lib/durable-write.js', async (importOriginal) => {
  const orig = await importOriginal<typeof import('../../src/lib/durable-write.js')>();
  return {
    ...orig,
    fsyncDir: async (dir: string): Promise<void> => {
      if (failing.dir !== null && dir === failing.dir) {
        failing.hits++;
        throw Object.assign(new Error(`EIO: i/o error, fsync '${dir}'`), { code: 'EIO' });
      }
      return orig.fsyncDir(dir);
    },
  };
});

const MiB = 1024 * 1024;

describe('commit is final once the manifest is renamed', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('commit-final'));
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger() });
  });
  afterEach(async () => {
    failing.dir = null;
    await store.close();
    await cleanup();
  });

  it('a failing fsync of the versions directory after the rename still reports the new version as committed', async () => {
    const v1 = randomBytes(2 * MiB);
    await importStream(store, 'img', Readable.from([v1]), v1.length, { source: 'v1' });
    failing.dir = join(dir, 'store', 'images', 'img', 'versions');
    const v2 = randomBytes(2 * MiB);
    const cap = store.beginCapture('img', { size: v2.length, source: 'v2' });
    await cap.write(0, v2);
    const info = await cap.commit();
    expect(failing.hits).toBeGreaterThan(0);
    expect(info.version).toBe(2);
    expect(cap.status).toBe('committed');
    expect(await store.versions('img')).toEqual([1, 2]);
    const r = await store.openVersion('img');
    try {
      expect(r.version).toBe(2);
      expect((await readBytes(r, 0, r.size)).equals(v2)).toBe(true);
    } finally {
      r.close();
    }
    // Its chunks are the committed version's now: gc keeps them.
    failing.dir = null;
    expect((await store.gc()).removedChunks).toBe(0);
    expect((await store.verify('img')).ok).toBe(true);
  });
});
