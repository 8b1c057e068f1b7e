/**
 * Issue 12: after a deploy onto a larger disk, xfs and btrfs grow into their enlarged partition. Each
 * test builds a disk file (MBR with xfs, GPT with btrfs) holding a few files, probes it as a capture
 * would, enlarges the file, and runs the deploy's last step (finishRestore: the table for the new
 * size, then the mounted grow) against it; the filesystem must then span the partition, check clean,
 * keep its UUID and hold every file. Nothing may stay mounted or attached, and no mount directory may
 * stay behind, also when the grow fails.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { finishRestore } from '../../src/agent/restore-finish.js';
import { probeDisk } from '../../src/agent/probe.js';
import { planRestore, type RestorePlan } from '../../src/imaging/layout-plan.js';
import type { DiskLayout } from '../../src/imaging/disk-layout.js';
import { noise } from '../lib/prng.js';
import { run, type RunResult } from '../lib/run.js';

const MiB = 1024 * 1024;
const SECTOR = 512;
const LINUX_FS_GUID = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';

type GrowFs = 'xfs' | 'btrfs';

interface Built {
  readonly disk: string;
  readonly fs: GrowFs;
  readonly uuid: string;
  readonly partBytes: number;
  readonly files: ReadonlyMap<string, Buffer>;
}

let dir: string;
/** The temp dir the code under test mounts in (os.tmpdir() follows TMPDIR): empty again after every test. */
let mountTmp: string;
let savedEnv: { TMPDIR: string | undefined; PATH: string | undefined };

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('this test mounts filesystems and attaches loop devices: run it as root');
  dir = await mkdtemp(join(tmpdir(), 'nc-mounted-grow-'));
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  savedEnv = { TMPDIR: process.env.TMPDIR, PATH: process.env.PATH };
  mountTmp = await mkdtemp(join(dir, 'tmp-'));
  process.env.TMPDIR = mountTmp;
});

afterEach(async () => {
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  const loops = await must('losetup', ['-a']);
  expect(loops.stdout.split('\n').filter((l) => l.includes(dir))).toEqual([]);
  const mounts = await readFile('/proc/mounts', 'utf8');
  expect(mounts.split('\n').filter((l) => l.includes(dir))).toEqual([]);
  expect(await readdir(mountTmp)).toEqual([]);
});

async function must(cmd: string, args: readonly string[], input?: string): Promise<RunResult> {
  const r = await run(cmd, args, { timeoutMs: 120_000, ...(input === undefined ? {} : { input }) });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r;
}

/** Runs `fn` on a loop device over bytes [start, start+size) of `file`, detached afterwards. */
async function withLoop<T>(file: string, start: number, size: number, readOnly: boolean, fn: (dev: string) => Promise<T>): Promise<T> {
  const dev = (await must('losetup', [...(readOnly ? ['-r'] : []), '-f', '--show', '-o', String(start), '--sizelimit', String(size), file])).stdout.trim();
  try {
    return await fn(dev);
  } finally {
    await must('losetup', ['-d', dev]);
  }
}

/** Runs `fn` with `dev` mounted on a fresh directory, unmounted afterwards. */
async function withMount<T>(dev: string, fs: GrowFs, options: string, fn: (mnt: string) => Promise<T>): Promise<T> {
  const mnt = await mkdtemp(join(dir, 'mnt-'));
  await must('mount', ['-t', fs, '-o', fs === 'xfs' ? `${options},nouuid` : options, dev, mnt]);
  try {
    return await fn(mnt);
  } finally {
    await must('umount', [mnt]);
    await rm(mnt, { recursive: true });
  }
}

const seedFiles = (seed: number): Map<string, Buffer> => new Map([
  ['big.bin', noise(seed, 3 * MiB)],
  ['docs/readme.txt', Buffer.from(`netclone mounted grow test ${seed}\n`.repeat(200))],
  ['docs/deep/small.bin', noise(seed + 1, 12_345)],
]);

/**
 * A disk file: 1 MiB of table, partition 1 of `partMiB` holding `fs` with a few files, 1 MiB behind it
 * (room for the GPT backup). The filesystem is made on a partition file and copied in.
 */
async function buildDisk(name: string, fs: GrowFs, scheme: 'mbr' | 'gpt', partMiB: number, seed: number): Promise<Built> {
  const disk = join(dir, `${name}.img`);
  const part = join(dir, `${name}.part`);
  const partBytes = partMiB * MiB;
  const uuid = `5e1f0a${String(seed).padStart(2, '0')}-1234-4abc-8def-0123456789ab`;
  await writeFile(disk, '');
  await truncate(disk, partBytes + 2 * MiB);
  const entry = `start=${MiB / SECTOR}, size=${partBytes / SECTOR}`;
  const script = scheme === 'mbr'
    ? `label: dos\nlabel-id: 0x5eed00${String(seed).padStart(2, '0')}\n${entry}, type=83\n`
    : `label: gpt\nlabel-id: 6A0C7B52-2D11-4E4F-9A3B-0000000000${String(seed).padStart(2, '0')}\n${entry}, type=${LINUX_FS_GUID}, uuid=1B7E2C44-9D0A-4F6B-8C21-0000000000${String(seed).padStart(2, '0')}, name=data\n`;
  await must('sfdisk', ['--quiet', disk], script);

  await writeFile(part, '');
  await truncate(part, partBytes);
  if (fs === 'xfs') await must('mkfs.xfs', ['-q', '-f', '-L', 'ncdata', '-m', `uuid=${uuid}`, part]);
  else await must('mkfs.btrfs', ['-q', '-f', '-L', 'ncdata', '-U', uuid, part]);
  const files = seedFiles(seed);
  await withLoop(part, 0, partBytes, false, (dev) => withMount(dev, fs, 'rw', async (mnt) => {
    for (const [path, data] of files) {
      await mkdir(dirname(join(mnt, path)), { recursive: true });
      await writeFile(join(mnt, path), data);
    }
  }));
  await must('dd', [`if=${part}`, `of=${disk}`, 'bs=1M', 'seek=1', 'conv=notrunc,sparse', 'status=none']);
  await rm(part);
  return { disk, fs, uuid, partBytes, files };
}

/** What a capture of the built disk records, as the agent's probe finds it. */
async function probe(built: Built): Promise<DiskLayout> {
  const warnings: string[] = [];
  const probed = await probeDisk(built.disk, built.partBytes + 2 * MiB, SECTOR, MiB, (m) => warnings.push(m));
  expect(warnings).toEqual([]);
  expect(probed).not.toBeNull();
  const layout = probed!.layout;
  expect(layout.partitions.map((p) => [p.index, p.filesystem, p.mode, p.uuid])).toEqual([[1, built.fs, 'used-blocks', built.uuid]]);
  return layout;
}

/** The filesystem's own idea of its size, from the tools the issue names. */
async function filesystemBytes(fs: GrowFs, dev: string): Promise<number> {
  if (fs === 'xfs') {
    const out = (await must('xfs_info', [dev])).stdout;
    const m = /^data\s+=\s+bsize=(\d+)\s+blocks=(\d+)/m.exec(out);
    if (!m) throw new Error(`no data section in xfs_info's output: ${out}`);
    return Number(m[1]) * Number(m[2]);
  }
  const out = (await must('btrfs', ['inspect-internal', 'dump-super', dev])).stdout;
  const total = /^total_bytes\s+(\d+)$/m.exec(out);
  const device = /^dev_item\.total_bytes\s+(\d+)$/m.exec(out);
  if (!total || !device) throw new Error(`no total_bytes in btrfs dump-super's output: ${out}`);
  expect(Number(device[1])).toBe(Number(total[1]));
  return Number(total[1]);
}

/** Partition 1's start and size in the disk file's table, from sfdisk. */
async function tablePartition(disk: string): Promise<{ start: number; size: number }> {
  const json = JSON.parse((await must('sfdisk', ['-J', disk])).stdout) as { partitiontable: { partitions: { start: number; size: number }[] } };
  const p = json.partitiontable.partitions[0];
  return { start: p.start * SECTOR, size: p.size * SECTOR };
}

async function checkPartition(built: Built, start: number, size: number, expectBytes: (fsBytes: number) => void): Promise<void> {
  await withLoop(built.disk, start, size, true, async (dev) => {
    expectBytes(await filesystemBytes(built.fs, dev));
    if (built.fs === 'xfs') await must('xfs_repair', ['-n', dev]);
    else await must('btrfs', ['check', '--readonly', dev]);
    expect((await must('blkid', ['-p', '-o', 'value', '-s', 'UUID', dev])).stdout.trim()).toBe(built.uuid);
    await withMount(dev, built.fs, 'ro', async (mnt) => {
      for (const [path, data] of built.files) expect((await readFile(join(mnt, path))).equals(data), path).toBe(true);
    });
  });
}

/** Enlarges the disk file and plans the restore onto it, as a deploy onto a larger disk does. */
async function enlarge(built: Built, layout: DiskLayout, diskMiB: number): Promise<{ plan: RestorePlan; start: number; size: number }> {
  await truncate(built.disk, diskMiB * MiB);
  const plan = planRestore(layout, diskMiB * MiB);
  expect(plan).toMatchObject({ resize: 'grow', main: 1 });
  const placed = plan.partitions.find((p) => p.index === 1)!;
  expect(placed.toSize).toBeGreaterThan(built.partBytes + 100 * MiB);
  return { plan, start: placed.toStart, size: placed.toSize };
}

describe('finishRestore grows a mounted-only filesystem into its enlarged partition', () => {
  // xfs refuses to make a filesystem under 300 MB; the files are sparse.
  const cases: { fs: GrowFs; scheme: 'mbr' | 'gpt'; partMiB: number; diskMiB: number }[] = [
    { fs: 'xfs', scheme: 'mbr', partMiB: 320, diskMiB: 512 },
    { fs: 'btrfs', scheme: 'gpt', partMiB: 256, diskMiB: 448 },
  ];

  for (const [n, c] of cases.entries()) {
    it(`${c.fs} on ${c.scheme}: spans the new partition, checks clean, keeps its UUID and every file`, async () => {
      const built = await buildDisk(`${c.fs}-${c.scheme}`, c.fs, c.scheme, c.partMiB, 10 + n);
      const layout = await probe(built);
      await checkPartition(built, MiB, built.partBytes, (bytes) => expect(bytes).toBeLessThanOrEqual(built.partBytes));
      const { plan, start, size } = await enlarge(built, layout, c.diskMiB);

      const warnings: string[] = [];
      const report = await finishRestore(built.disk, layout, plan, (m) => warnings.push(m));
      expect(warnings).toEqual([]);
      expect(report).toEqual({ tableWritten: true, swapAreas: [], grown: { index: 1, sizeBytes: size } });

      expect(await tablePartition(built.disk)).toEqual({ start, size });
      await checkPartition(built, start, size, (bytes) => {
        // The whole partition, but for the tail a filesystem cannot use (under one allocation unit).
        expect(bytes).toBeLessThanOrEqual(size);
        expect(bytes).toBeGreaterThan(size - MiB);
      });
    }, 180_000);
  }

  it('says what failed and what to do when the grow fails, and leaves nothing mounted or attached', async () => {
    const built = await buildDisk('xfs-fail', 'xfs', 'gpt', 320, 30);
    const layout = await probe(built);
    const { plan, start, size } = await enlarge(built, layout, 480);
    // A planted xfs_growfs that fails after the mount: the umount must still happen.
    const fakeBin = join(dir, 'fake-bin');
    await mkdir(fakeBin, { recursive: true });
    await writeFile(join(fakeBin, 'xfs_growfs'), '#!/bin/sh\necho "planted failure on $1" >&2\nexit 3\n', { mode: 0o755 });
    process.env.PATH = `${fakeBin}:${process.env.PATH ?? ''}`;

    const err = await finishRestore(built.disk, layout, plan, () => undefined).then(() => null, (e: unknown) => e as Error);
    expect(err).toBeInstanceOf(Error);
    expect(err?.message).toMatch(/^growing the xfs filesystem of partition 1: xfs_growfs \S+ exited 3: planted failure on \S+\. /);
    expect(err?.message).toContain(`the partition is ${size} bytes, but its filesystem still has its old size: mount it and run xfs_growfs <mount point>, or deploy again`);

    process.env.PATH = savedEnv.PATH;
    await checkPartition(built, start, size, (bytes) => expect(bytes).toBe(built.partBytes));
  }, 180_000);
});
