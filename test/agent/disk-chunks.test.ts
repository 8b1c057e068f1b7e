/**
 * The agent reads a disk the way the store names it: the same chunk boundaries, the same holes and
 * the same sha256 names as the server's own import of that disk, so a chunk list the agent sends
 * means what the store would have written.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { HashPool } from '../../src/agent/hash-pool.js';
import { readDiskChunks, type DiskChunk } from '../../src/agent/disk-chunks.js';
import { chunkName } from '../../src/imaging/chunk-format.js';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importFile } from '../../src/imaging/image-import.js';
import { nullLogger } from '../../src/lib/log.js';
import { noise } from '../lib/prng.js';

const CHUNK = 64 * 1024;

let dir: string;
let pool: HashPool;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-agent-'));
  pool = new HashPool(2);
});
afterAll(async () => {
  await pool.close();
  await rm(dir, { recursive: true, force: true });
});

/** 10 full chunks and a short one: data, zeros, data with one non-zero byte at the very end, … */
function disk(): Buffer {
  const d = Buffer.alloc(10 * CHUNK + 12_345);
  noise(7, CHUNK).copy(d, 0);
  // chunk 1 stays zero
  d[3 * CHUNK - 1] = 1; // chunk 2: zero but for its last byte
  noise(8, 5 * CHUNK).copy(d, 4 * CHUNK); // chunks 4-8; chunk 9 stays zero
  noise(9, 12_345).copy(d, 10 * CHUNK);
  return d;
}

async function collect(file: string, ahead?: number): Promise<DiskChunk[]> {
  const out: DiskChunk[] = [];
  for await (const c of readDiskChunks(file, { chunkSize: CHUNK, pool, ahead })) out.push(c);
  return out;
}

describe('reading a disk into chunks', () => {
  it('yields every chunk in order with its bytes, the store name of each, and null for all-zero chunks', async () => {
    const d = disk();
    const file = path.join(dir, 'disk.raw');
    await writeFile(file, d);
    for (const ahead of [1, 3, 16]) {
      const chunks = await collect(file, ahead);
      expect(chunks.map((c) => c.index)).toEqual([...Array(11).keys()]);
      for (const c of chunks) {
        const bytes = d.subarray(c.offset, c.offset + c.length);
        expect(c.offset).toBe(c.index * CHUNK);
        expect(c.length).toBe(c.index === 10 ? 12_345 : CHUNK);
        expect(c.data.equals(bytes), `chunk ${c.index}`).toBe(true);
        expect(c.hash, `chunk ${c.index}`).toBe(bytes.every((b) => b === 0) ? null : chunkName(bytes));
      }
      expect(chunks.filter((c) => c.hash === null).map((c) => c.index)).toEqual([1, 3, 9]);
    }
  });

  it('names the chunks exactly as the server does when it imports the same disk', async () => {
    const d = disk();
    const file = path.join(dir, 'same.raw');
    await writeFile(file, d);
    const store = await ImageStore.open(path.join(dir, 'store'), { logger: nullLogger(), chunkSize: CHUNK, workers: 1 });
    try {
      await importFile(store, 'pc', file, { source: 'test' });
      const reader = await store.openVersion('pc');
      try {
        const agent = await collect(file);
        expect(reader.chunkCount).toBe(agent.length);
        for (const c of agent) expect(c.hash, `chunk ${c.index}`).toBe(reader.chunkHash(c.index));
      } finally {
        reader.close();
      }
    } finally {
      await store.close();
    }
  });

  it('says where a disk ended early instead of inventing its missing bytes', async () => {
    const file = path.join(dir, 'short.raw');
    await writeFile(file, noise(3, 2 * CHUNK));
    const read = async (): Promise<void> => {
      for await (const c of readDiskChunks(file, { chunkSize: CHUNK, pool, size: 3 * CHUNK })) void c;
    };
    await expect(read()).rejects.toThrow(/ended at byte 131072, before the 196608 this chunk needs: the disk shrank or could not be read/);
  });
});
