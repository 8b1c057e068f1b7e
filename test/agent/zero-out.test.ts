/**
 * The deploy's zeroing: on a block device (a loop device over a file here) adjacent ranges become one
 * BLKZEROOUT through blkdiscard -z; on a regular file, or without blkdiscard, the zeros are written.
 * Either way exactly the asked ranges read as zeros afterwards and nothing else changed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ZeroWriter } from '../../src/agent/zero-out.js';
import { noise } from '../lib/prng.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;
const SIZE = 8 * MiB;
/** Two adjacent ranges (one call), then a sector-sized one apart. */
const RANGES: ReadonlyArray<readonly [number, number]> = [[MiB, MiB], [2 * MiB, MiB], [5 * MiB + 4096, 512]];

let dir: string;
beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('this test attaches a loop device: run it as root');
  dir = await mkdtemp(path.join(tmpdir(), 'nc-zero-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function expected(original: Buffer): Buffer {
  const want = Buffer.from(original);
  for (const [o, l] of RANGES) want.fill(0, o, o + l);
  return want;
}

async function zeroAll(target: string, isBlockDevice: boolean, warnings: string[], minZeroOut = 0): Promise<ZeroWriter> {
  const fh = await open(target, 'r+');
  try {
    const z = new ZeroWriter(fh, target, isBlockDevice, (m) => warnings.push(m), minZeroOut);
    for (const [o, l] of RANGES) await z.zero(o, l);
    await z.flush();
    await fh.sync();
    return z;
  } finally {
    await fh.close();
  }
}

describe('zeroing on the deploy target', () => {
  it('uses BLKZEROOUT on a block device, one call for adjacent ranges, and zeroes exactly those bytes', async () => {
    const file = path.join(dir, 'disk.img');
    const original = noise(61, SIZE);
    await writeFile(file, original);
    const { stdout } = await exec('losetup', ['-f', '--show', file]);
    const loop = stdout.trim();
    const warnings: string[] = [];
    try {
      const z = await zeroAll(loop, true, warnings);
      expect(warnings).toEqual([]);
      expect(z.zeroedOut).toBe(2 * MiB + 512);
      expect(z.written).toBe(0);
    } finally {
      await exec('losetup', ['-d', loop]);
    }
    expect((await readFile(file)).equals(expected(original))).toBe(true);
  });

  it('writes runs shorter than the BLKZEROOUT minimum instead of starting a process for each', async () => {
    const file = path.join(dir, 'short-runs.img');
    const original = noise(64, SIZE);
    await writeFile(file, original);
    const { stdout } = await exec('losetup', ['-f', '--show', file]);
    const loop = stdout.trim();
    const warnings: string[] = [];
    try {
      // The joined 2 MiB run reaches a 2 MiB minimum; the lone 512 bytes do not.
      const z = await zeroAll(loop, true, warnings, 2 * MiB);
      expect(warnings).toEqual([]);
      expect(z.zeroedOut).toBe(2 * MiB);
      expect(z.written).toBe(512);
    } finally {
      await exec('losetup', ['-d', loop]);
    }
    expect((await readFile(file)).equals(expected(original))).toBe(true);
  });

  it('writes the zeros into a regular file', async () => {
    const file = path.join(dir, 'file.img');
    const original = noise(62, SIZE);
    await writeFile(file, original);
    const z = await zeroAll(file, false, []);
    expect(z.zeroedOut).toBe(0);
    expect(z.written).toBe(2 * MiB + 512);
    expect((await readFile(file)).equals(expected(original))).toBe(true);
  });

  it('writes the zeros, saying why, when blkdiscard is missing', async () => {
    const file = path.join(dir, 'nozero.img');
    const original = noise(63, SIZE);
    await writeFile(file, original);
    const { stdout } = await exec('losetup', ['-f', '--show', file]);
    const loop = stdout.trim();
    const warnings: string[] = [];
    const saved = process.env.PATH;
    process.env.PATH = path.join(dir, 'empty-bin');
    try {
      const z = await zeroAll(loop, true, warnings);
      expect(z.zeroedOut).toBe(0);
      expect(z.written).toBe(2 * MiB + 512);
    } finally {
      process.env.PATH = saved;
      await exec('losetup', ['-d', loop]);
    }
    expect(warnings).toEqual(['blkdiscard is not in this imaging client; writing zeros instead of BLKZEROOUT']);
    expect((await readFile(file)).equals(expected(original))).toBe(true);
  });
});
