/**
 * ImageStore.chunkFile keeps the files it read lately (several PCs deploying one image ask for the
 * same ones): what it serves must still be the file on disk, also after a file was replaced (a
 * repaired chunk is renamed into place) or rewritten where it is.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageStore } from '../../src/imaging/image-store.js';
import { CHUNK_HEADER_SIZE, ChunkCodecContext, maxChunkFileSize } from '../../src/imaging/chunk-format.js';
import { nullLogger } from '../../src/lib/log.js';
import { tempDir, compressible, sha256 } from './helpers.js';

const CHUNK = 64 * 1024;
const codec = new ChunkCodecContext();

function encodeChunk(data: Buffer, level: number): Buffer {
  const [header, payload] = codec.encode(data, level, Buffer.allocUnsafe(maxChunkFileSize(data.length) - CHUNK_HEADER_SIZE));
  return Buffer.concat([header, payload]);
}

describe('ImageStore.chunkFile, read again', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('chunkfile-served'));
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger(), chunkSize: CHUNK });
  });
  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('serves the file as it is on disk now, after a rename over it and after a rewrite in place', async () => {
    const data = compressible(CHUNK, 7);
    const h = sha256(data);
    const up = store.beginUpload('pc', { size: CHUNK, source: 'agent' });
    await up.put(h, encodeChunk(data, 3));
    await up.commit([h]);
    const r = await store.openVersion('pc');
    try {
      const path = store.chunks.pathOf(h);
      const first = await store.chunkFile(h, r);
      expect(first.bytes.equals(await readFile(path))).toBe(true);
      expect((await store.chunkFile(h, r)).bytes.equals(first.bytes)).toBe(true);

      // The same chunk encoded otherwise (another level): a different file of the same name, renamed in.
      const other = encodeChunk(data, 19);
      expect(other.equals(first.bytes)).toBe(false);
      await writeFile(`${path}.new`, other);
      await rename(`${path}.new`, path);
      expect((await store.chunkFile(h, r)).bytes.equals(other)).toBe(true);

      // Rewritten in place (same inode): the file's new size and mtime show it.
      const third = encodeChunk(data, 1);
      await new Promise((resolve) => setTimeout(resolve, 20));
      await writeFile(path, third);
      const got = await store.chunkFile(h, r);
      expect(got.bytes.equals(third)).toBe(true);
      expect(got.size).toBe(third.length);
    } finally {
      r.close();
    }
  });
});
