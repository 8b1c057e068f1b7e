import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { partitionNode, withPartition } from '../../src/agent/partition-source.js';
import { noise } from '../lib/prng.js';

const MiB = 1024 * 1024;

function loopsOn(file: string): string {
  return execFileSync('losetup', ['-j', file]).toString().trim();
}

describe('partition nodes of a block device (a sysfs and /dev of the test’s own)', () => {
  let dir: string;
  const roots = (): { sys: string; dev: string } => ({ sys: join(dir, 'sys'), dev: join(dir, 'dev') });

  /** A disk `name` whose partition `child` starts at `start` and spans `size` 512-byte units; the nodes are real block devices (loop0's numbers). */
  async function fakeDisk(name: string, child: string, start: number, size: number): Promise<void> {
    await mkdir(join(dir, 'sys', name, child), { recursive: true });
    await writeFile(join(dir, 'sys', name, child, 'start'), `${start}\n`);
    await writeFile(join(dir, 'sys', name, child, 'size'), `${size}\n`);
    for (const n of [name, child]) execFileSync('mknod', [join(dir, 'dev', n), 'b', '7', '0']);
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'netclone-partsrc-'));
    await mkdir(join(dir, 'dev'));
    await fakeDisk('sda', 'sda2', 2048, 4096);
    await fakeDisk('nvme0n1', 'nvme0n1p3', 10240, 8192);
    await mkdir(join(dir, 'sys', 'sdb', 'sdb1'), { recursive: true });
    await writeFile(join(dir, 'sys', 'sdb', 'sdb1', 'start'), '2048\n');
    execFileSync('mknod', [join(dir, 'dev', 'sdb'), 'b', '7', '0']);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('finds sdXN and nvme…pN when their start and size match the table', async () => {
    expect(await partitionNode(join(dir, 'dev', 'sda'), { index: 2, startBytes: 2048 * 512, sizeBytes: 4096 * 512 }, roots())).toBe(join(dir, 'dev', 'sda2'));
    expect(await partitionNode(join(dir, 'dev', 'nvme0n1'), { index: 3, startBytes: 10240 * 512, sizeBytes: 8192 * 512 }, roots())).toBe(join(dir, 'dev', 'nvme0n1p3'));
  });

  it('refuses a node that lies elsewhere, does not exist, or is missing from /dev', async () => {
    expect(await partitionNode(join(dir, 'dev', 'sda'), { index: 2, startBytes: 4096 * 512, sizeBytes: 4096 * 512 }, roots())).toBeNull();
    expect(await partitionNode(join(dir, 'dev', 'sda'), { index: 2, startBytes: 2048 * 512, sizeBytes: 2048 * 512 }, roots())).toBeNull();
    expect(await partitionNode(join(dir, 'dev', 'sda'), { index: 1, startBytes: 2048 * 512, sizeBytes: 4096 * 512 }, roots())).toBeNull();
    expect(await partitionNode(join(dir, 'dev', 'sdb'), { index: 1, startBytes: 2048 * 512, sizeBytes: 4096 * 512 }, roots())).toBeNull();
  });
});

describe('withPartition on a disk image file', () => {
  let dir: string;
  let disk: string;
  const part = { index: 1, startBytes: 3 * MiB, sizeBytes: 2 * MiB };
  const bytes = noise(41, 8 * MiB);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'netclone-withpart-'));
    disk = join(dir, 'disk.img');
    await writeFile(disk, bytes);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('hands over a read-only loop device holding exactly the partition, detached afterwards', async () => {
    const seen = await withPartition(disk, part, async (dev) => {
      expect(dev).toMatch(/^\/dev\/loop\d+$/);
      expect(execFileSync('blockdev', ['--getro', dev]).toString().trim()).toBe('1');
      return readFile(dev);
    });
    expect(seen.equals(bytes.subarray(part.startBytes, part.startBytes + part.sizeBytes))).toBe(true);
    expect(loopsOn(disk)).toBe('');
  });

  it('detaches also when the function fails', async () => {
    await expect(
      withPartition(disk, part, async () => {
        expect(loopsOn(disk)).not.toBe('');
        throw new Error('planted failure');
      }),
    ).rejects.toThrow('planted failure');
    expect(loopsOn(disk)).toBe('');
  });

  it('writable access writes into the partition only', async () => {
    await withPartition(disk, part, { writable: true }, async (dev) => {
      const fh = await open(dev, 'r+');
      await fh.write(Buffer.from('written'), 0, 7, 0);
      await fh.close();
    });
    expect(loopsOn(disk)).toBe('');
    const after = await readFile(disk);
    expect(after.toString('latin1', part.startBytes, part.startBytes + 7)).toBe('written');
    expect(after.subarray(0, part.startBytes).equals(bytes.subarray(0, part.startBytes))).toBe(true);
    expect(after.subarray(part.startBytes + 7).equals(bytes.subarray(part.startBytes + 7))).toBe(true);
  });
});
