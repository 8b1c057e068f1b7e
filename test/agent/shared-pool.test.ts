/**
 * The agent's run names chunks on its compression threads (HashPool over a CodecPool): the names must
 * be the store's, a chunk of zeros is null only where asked, and each buffer comes back whole.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { CodecPool } from '../../src/agent/codec-pool.js';
import { HashPool } from '../../src/agent/hash-pool.js';
import { chunkName } from '../../src/imaging/chunk-format.js';
import { noise } from '../lib/prng.js';

const codec = new CodecPool(2);
const hashes = new HashPool(codec);
afterAll(async () => {
  await hashes.close();
  await codec.close();
});

function owned(bytes: Buffer): ArrayBuffer {
  const buffer = new ArrayBuffer(bytes.length);
  Buffer.from(buffer).set(bytes);
  return buffer;
}

describe('a hash pool on a codec pool\'s threads', () => {
  it('names chunks as the store does and hands each buffer back', async () => {
    const data = noise(11, 100_000);
    const res = await hashes.hash(owned(data), 60_000);
    expect(res.hash).toBe(chunkName(data.subarray(0, 60_000)));
    expect(Buffer.from(res.buffer).equals(data)).toBe(true);
    const named = await hashes.name(owned(data), data.length);
    expect(named.hash).toBe(chunkName(data));
  });

  it('answers null for zeros only when asked through name()', async () => {
    const zeros = Buffer.alloc(65_536);
    expect((await hashes.name(owned(zeros), zeros.length)).hash).toBeNull();
    expect((await hashes.hash(owned(zeros), zeros.length)).hash).toBe(chunkName(zeros));
    const almost = Buffer.alloc(65_536);
    almost[65_535] = 1;
    expect((await hashes.name(owned(almost), almost.length)).hash).toBe(chunkName(almost));
    // Compression still works on the same threads, between and after namings.
    const file = await codec.encode(almost, 3);
    expect((await codec.decode(file, chunkName(almost))).equals(almost)).toBe(true);
  });
});
