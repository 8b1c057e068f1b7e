/**
 * The agent's worker pools: chunk files made on a compression thread decode on another and are checked
 * against their names; and a process waiting only on a thread is not ended under it by Node.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { CodecPool, BadChunkError } from '../../src/agent/codec-pool.js';
import { ChunkCodecContext, chunkName, decodeChunkHeader } from '../../src/imaging/chunk-format.js';
import { noise } from '../lib/prng.js';
import { run } from '../lib/run.js';

const pool = new CodecPool(2);
afterAll(async () => {
  await pool.close();
});

describe('codec pool', () => {
  it('encodes format-2 chunk files the server decodes, and decodes them checked against the name', async () => {
    const text = Buffer.alloc(100_000, 'netclone ');
    const random = noise(3, 65_536);
    for (const data of [text, random]) {
      const file = await pool.encode(data, 3);
      expect(decodeChunkHeader(file)).toMatchObject({ format: 2, uncompressedLength: data.length });
      expect(new ChunkCodecContext().decodeChecked(file, chunkName(data), 'full').equals(data)).toBe(true);
      expect((await pool.decode(file, chunkName(data))).equals(data)).toBe(true);
    }
    expect((await pool.encode(text, 3)).length).toBeLessThan(text.length / 50);
  });

  it('refuses a file under another name, or damaged, with the reason', async () => {
    const data = noise(4, 65_536);
    const file = await pool.encode(data, 3);
    await expect(pool.decode(file, chunkName(noise(5, 10)))).rejects.toThrow(BadChunkError);
    await expect(pool.decode(file, chunkName(noise(5, 10)))).rejects.toThrow(/does not match chunk name/);
    const cut = file.subarray(0, file.length - 1);
    await expect(pool.decode(cut, chunkName(data))).rejects.toThrow(/does not match file length/);
  });
});

describe('worker threads and the process', () => {
  it('a process awaiting only a worker runs on until the answer comes', async () => {
    const r = await run(process.execPath, ['--import', 'tsx', new URL('./fixtures/await-only-a-worker.ts', import.meta.url).pathname], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^[0-9a-f]{64} true\n$/);
  });
});
