/**
 * A version fitted to a smaller disk (issue 12), on a real Windows-like disk: ESP (FAT32), MSR, NTFS C:
 * with data and the NTFS Recovery partition at the end, free space full of random bytes. The stored
 * version is what the agent's capture stores: the probe's layout, used bytes only.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { nullLogger } from '../../src/lib/log.js';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importFile } from '../../src/imaging/image-import.js';
import { exportTo } from '../../src/imaging/image-export.js';
import { freeChunkCount, freeChunkTest, type DiskLayout } from '../../src/imaging/disk-layout.js';
import { LayoutFitError, planRestore } from '../../src/imaging/layout-plan.js';
import { fitVersion, fittedImageName } from '../../src/imaging/fit-version.js';
import { isValidImageName } from '../../src/imaging/names.js';
import { probeDisk } from '../../src/agent/probe.js';
import { buildLinuxDisk, buildWindowsDisk, checkDisk, extractPartition, type BuiltDisk } from '../lib/real-disks.js';
import { run } from '../lib/run.js';
import { tempDir } from './helpers.js';

const MiB = 1024 * 1024;
const SOURCE_MIB = 320;

/** Copies only the used byte ranges into a new sparse file: the disk as the agent's capture stores it. */
async function capturedCopy(src: string, dst: string, size: number, used: readonly (readonly [number, number])[]): Promise<void> {
  const from = await open(src, 'r');
  const to = await open(dst, 'w');
  try {
    await to.truncate(size);
    const buf = Buffer.alloc(4 * MiB);
    for (const [s, e] of used) {
      for (let at = s; at < e; ) {
        const n = Math.min(buf.length, e - at);
        const { bytesRead } = await from.read(buf, 0, n, at);
        expect(bytesRead).toBe(n);
        await to.write(buf, 0, n, at);
        at += n;
      }
    }
  } finally {
    await to.close();
    await from.close();
  }
}

/** The probe's layout of a built disk, and the disk imported as the agent's capture would store it. */
async function captureBuilt(store: ImageStore, name: string, built: BuiltDisk, scratch: string): Promise<{ layout: DiskLayout; digest: string }> {
  const probe = await probeDisk(built.path, built.size, 512, MiB, (m) => {
    throw new Error(`probe warned: ${m}`);
  });
  if (probe === null) throw new Error('the probe found no partition table on the built disk');
  const captured = join(scratch, `${name}-captured.img`);
  await capturedCopy(built.path, captured, built.size, probe.used.ranges());
  const info = await importFile(store, name, captured, { source: 'test capture', layout: probe.layout });
  await rm(captured);
  return { layout: probe.layout, digest: info.digest };
}

const PARTCLONE: Record<string, string> = { ntfs: 'partclone.ntfs', vfat: 'partclone.fat', ext4: 'partclone.extfs' };

/**
 * Every chunk the layout calls free holds no byte in use on the disk file: bytes outside the partitions,
 * partitions without a filesystem, and whatever each filesystem's own partclone map marks used (or leaves
 * out) all count. Swap counts as free (a deploy recreates it).
 */
async function expectFreeChunksUnused(diskPath: string, layout: DiskLayout, scratch: string): Promise<void> {
  const used: [number, number][] = [];
  let at = 0;
  for (const p of [...layout.partitions].sort((a, b) => a.startBytes - b.startBytes)) {
    if (p.startBytes > at) used.push([at, p.startBytes]);
    at = Math.max(at, p.startBytes + p.sizeBytes);
    if (p.mode === 'swap') continue;
    const tool = p.filesystem === null ? undefined : PARTCLONE[p.filesystem];
    if (tool === undefined) {
      used.push([p.startBytes, p.startBytes + p.sizeBytes]);
      continue;
    }
    const part = join(scratch, 'map-part.img');
    const map = join(scratch, 'map.txt');
    await extractPartition(diskPath, p.startBytes, p.sizeBytes, part);
    const r = await run(tool, ['-D', '-I', '-s', part, '-O', map, '-L', join(scratch, 'map.log')]);
    expect(r.code, `${tool} on partition ${p.index}: ${r.stderr.slice(-500)}`).toBe(0);
    let mapped = 0;
    const lines = (await readFile(map, 'utf8')).split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#')).slice(1);
    for (const line of lines) {
      const [pos, size, status] = line.trim().split(/\s+/);
      const s = Number(pos);
      const e = s + Number(size);
      if (status === '+') used.push([p.startBytes + s, p.startBytes + e]);
      mapped = Math.max(mapped, e);
    }
    if (mapped < p.sizeBytes) used.push([p.startBytes + mapped, p.startBytes + p.sizeBytes]);
    await rm(part);
  }
  if (at < layout.diskSize) used.push([at, layout.diskSize]);
  const free = freeChunkTest(layout);
  for (const [s, e] of used) {
    for (let c = Math.floor(s / layout.chunkSize); c * layout.chunkSize < e; c++) {
      expect(free(c), `chunk ${c} is called free but holds used bytes ${s}..${e}`).toBe(false);
    }
  }
}

const placementOf = (plan: ReturnType<typeof planRestore>): Map<number, { startBytes: number; sizeBytes: number }> =>
  new Map(plan.partitions.map((p) => [p.index, { startBytes: p.toStart, sizeBytes: p.toSize }]));

describe('fitVersion', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  let built: BuiltDisk;
  let layout: DiskLayout;
  let digest: string;
  let work: string;
  const opts = (): { tmpDir: string; logger: ReturnType<typeof nullLogger> } => ({ tmpDir: work, logger: nullLogger() });

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('fit'));
    built = await buildWindowsDisk(dir, { sizeMiB: SOURCE_MIB, seed: 12, dataMiB: 40 });
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger(), workers: 2 });
    ({ layout, digest } = await captureBuilt(store, 'win', built, dir));
    work = join(dir, 'work');
    await mkdir(work);
  });

  afterAll(async () => {
    await store?.close();
    await cleanup?.();
  });

  it('stores the source version with its layout and free chunks as holes', async () => {
    expect(await store.layout('win', 1)).toEqual(layout);
    expect(freeChunkCount(layout)).toBeGreaterThan(0);
    const reader = await store.openVersion('win', 1);
    try {
      const free = freeChunkTest(layout);
      for (let i = 0; i < reader.chunkCount; i++) if (free(i)) expect(reader.isHole(i)).toBe(true);
    } finally {
      reader.close();
    }
  });

  it('refuses to commit an import whose layout calls a chunk holding data free', async () => {
    // The built disk's free space is full of random bytes: imported as it is, its free chunks hold data.
    await expect(importFile(store, 'dirty', built.path, { source: 'dirty', layout })).rejects.toThrow(/holds data, but its disk layout says it is free space/);
    expect(await store.exists('dirty')).toBe(false);
  });

  it('derives a version for a smaller disk that holds every partition, file and GUID, and leaves the original as it was', async () => {
    const target = 200 * MiB;
    const plan = planRestore(layout, target);
    expect(plan.resize).toBe('shrink');
    expect(plan.main).toBe(3);
    const steps: string[] = [];
    const r = await fitVersion(store, 'win', 1, target, { ...opts(), onProgress: (s) => steps.push(s) });
    expect(r).toEqual({ image: fittedImageName('win', target), version: 1, reused: false });
    expect(steps.some((s) => /shrinking the ntfs filesystem of partition 3/.test(s))).toBe(true);

    const out = join(dir, 'fitted.img');
    await exportTo(store, r.image, out, { version: r.version });
    expect((await stat(out)).size).toBe(target);
    await checkDisk(out, built, { placement: placementOf(plan) });
    const fitted = await store.layout(r.image, r.version);
    if (fitted === null) throw new Error('the fitted version has no layout');
    await expectFreeChunksUnused(out, fitted, dir);

    // The recovery partition moved to the end; C: shrank in place.
    const recovery = plan.partitions.find((p) => p.index === 4);
    expect(recovery?.toStart).toBeLessThan(recovery?.fromStart ?? 0);
    expect(fitted.diskSize).toBe(target);
    expect(fitted.diskGuid).toBe(layout.diskGuid);
    for (const p of plan.partitions) {
      const fp = fitted.partitions.find((x) => x.index === p.index);
      expect([fp?.startBytes, fp?.sizeBytes]).toEqual([p.toStart, p.toSize]);
    }
    // Free space stays free: the fitted version has free chunks, every one a hole, and its data is about the used data.
    expect(freeChunkCount(fitted)).toBeGreaterThan(0);
    const reader = await store.openVersion(r.image, r.version);
    try {
      const free = freeChunkTest(fitted);
      for (let i = 0; i < reader.chunkCount; i++) if (free(i)) expect(reader.isHole(i)).toBe(true);
      expect(reader.dataBytes).toBeLessThan(built.usedBytes + 40 * MiB);
    } finally {
      reader.close();
    }

    const original = await store.versionInfo('win', 1);
    expect(original.digest).toBe(digest);
    expect((await store.verify('win', { version: 1 })).ok).toBe(true);
    expect(await store.versions('win')).toEqual([1]);
    expect(await readdir(work)).toEqual([]);

    const again = await fitVersion(store, 'win', 1, target, opts());
    expect(again).toEqual({ image: r.image, version: r.version, reused: true });
    expect(await store.versions(r.image)).toEqual([1]);
  });

  it('builds a fit asked for twice at once only once', async () => {
    const target = 180 * MiB;
    const [a, b] = await Promise.all([fitVersion(store, 'win', 1, target, opts()), fitVersion(store, 'win', 1, target, opts())]);
    expect([a.reused, b.reused].sort()).toEqual([false, true]);
    expect(a.version).toBe(b.version);
    expect(await store.versions(a.image)).toEqual([a.version]);
  });

  it('refuses a disk the used data cannot fit, saying by how much', async () => {
    const target = 96 * MiB;
    const err = await fitVersion(store, 'win', 1, target, opts()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LayoutFitError);
    expect((err as LayoutFitError).shortBytes).toBeGreaterThan(0);
    expect((err as Error).message).toMatch(/more than this/);
    expect(await store.exists(fittedImageName('win', target))).toBe(false);
  });

  it('refuses a version captured without a layout, naming the smallest disk it fits', async () => {
    await importFile(store, 'raw', built.path, { source: 'raw import' });
    await expect(fitVersion(store, 'raw', 1, 200 * MiB, opts())).rejects.toThrow(`captured without a layout: can only be restored onto a disk of at least ${built.size} bytes`);
  });

  it('never adds to an image of the fitted name that fitting did not make', async () => {
    const target = 160 * MiB;
    await importFile(store, fittedImageName('win', target), built.path, { source: 'someone else' });
    await expect(fitVersion(store, 'win', 1, target, opts())).rejects.toThrow(/was not made by fitting/);
  });
  it('keeps a fit per original version: fitting version 1 again after version 2 was fitted reuses version 1\'s fit (issue 13)', async () => {
    const target = 200 * MiB;
    const first = await fitVersion(store, 'win', 1, target, opts());
    await captureBuilt(store, 'win', built, dir);
    expect(await store.versions('win')).toEqual([1, 2]);
    const second = await fitVersion(store, 'win', 2, target, opts());
    expect(second).toMatchObject({ image: first.image, reused: false });
    expect(second.version).toBeGreaterThan(first.version);
    const again = await fitVersion(store, 'win', 1, target, opts());
    expect(again).toEqual({ image: first.image, version: first.version, reused: true });
    expect((await store.versionInfo(first.image, again.version)).source).toMatch(/^fit of win version 1 onto/);
  });
});

describe('fitVersion on an MBR disk with ext4 and swap', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;

  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('fit-ext4'));
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger(), workers: 2 });
  });

  afterAll(async () => {
    await store?.close();
    await cleanup?.();
  });

  it('shrinks the ext4 with resize2fs and moves the swap to the new end', async () => {
    const built = await buildLinuxDisk(dir, { sizeMiB: SOURCE_MIB, seed: 12, dataMiB: 40 });
    const { layout, digest } = await captureBuilt(store, 'linux', built, dir);
    expect(layout.partitions.map((p) => [p.filesystem, p.mode])).toEqual([['ext4', 'used-blocks'], ['swap', 'swap']]);
    const target = 160 * MiB;
    const plan = planRestore(layout, target);
    expect([plan.resize, plan.main]).toEqual(['shrink', 1]);
    const work = join(dir, 'work');
    await mkdir(work);
    const r = await fitVersion(store, 'linux', 1, target, { tmpDir: work, logger: nullLogger() });
    expect(r.reused).toBe(false);
    const out = join(dir, 'fitted.img');
    await exportTo(store, r.image, out, { version: r.version });
    // The swap area is not stored: a deploy recreates it with its UUID and label, as here.
    const swap = built.partitions[1];
    const placed = plan.partitions[1];
    const fitted = await store.layout(r.image, r.version);
    const free = freeChunkTest(fitted as DiskLayout);
    for (let c = Math.ceil(placed.toStart / MiB); c < Math.floor((placed.toStart + placed.toSize) / MiB); c++) expect(free(c)).toBe(true);
    const swapFile = join(dir, 'swap.img');
    await extractPartition(out, placed.toStart, placed.toSize, swapFile);
    expect((await run('mkswap', ['-U', swap.uuid ?? '', '-L', swap.label ?? '', swapFile])).code).toBe(0);
    const fh = await open(out, 'r+');
    const from = await open(swapFile, 'r');
    try {
      const bytes = Buffer.alloc(placed.toSize);
      await from.read(bytes, 0, bytes.length, 0);
      await fh.write(bytes, 0, bytes.length, placed.toStart);
    } finally {
      await from.close();
      await fh.close();
    }
    await checkDisk(out, built, { placement: placementOf(plan) });
    await expectFreeChunksUnused(out, fitted as DiskLayout, dir);
    expect((await store.versionInfo('linux', 1)).digest).toBe(digest);
    expect(await readdir(work)).toEqual([]);
  });
});

describe('fittedImageName', () => {
  it('names the size in MiB, or in bytes when it is not whole MiB', () => {
    expect(fittedImageName('win11', 128 * 1024 * MiB)).toBe('win11.fit-131072m');
    expect(fittedImageName('win11', 500107862016)).toBe('win11.fit-500107862016b');
  });

  it('keeps long names valid and distinct', () => {
    const a = fittedImageName('a'.repeat(64), 200 * MiB);
    const b = fittedImageName(`${'a'.repeat(63)}b`, 200 * MiB);
    expect(a.length).toBeLessThanOrEqual(64);
    expect(isValidImageName(a) && isValidImageName(b)).toBe(true);
    expect(a).not.toBe(b);
    expect(fittedImageName('a'.repeat(64), 200 * MiB)).toBe(a);
    const dotted = fittedImageName('win.', 200 * MiB);
    expect(isValidImageName(dotted)).toBe(true);
    expect(dotted).not.toBe(fittedImageName('win', 200 * MiB));
  });
});
