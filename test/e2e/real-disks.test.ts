// Issue 12 end to end: the real thin client network-boots in QEMU and its agent captures a Windows-like
// GPT disk (ESP, MSR, NTFS C:, NTFS Recovery; free space full of random bytes) reading only the used
// blocks, then restores it onto a larger NVMe disk (C: grows, Recovery moves to the end) and onto a
// smaller disk (the server derives a fitted version with C: shrunk). Each restored disk is checked with
// the real tools: sgdisk -v, ntfsfix -n / fsck.vfat -n, every file, GUIDs and UUIDs.
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdir, open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureClientBuild } from '../client/helpers.js';
import { buildWindowsDisk, checkDisk, seededBytes, type BuiltDisk } from '../lib/real-disks.js';
import { artifactsDir, Lab, type NetcloneServer } from './lab.js';
import { parseDiskLayout } from '../../src/imaging/disk-layout.js';
import { planRestore } from '../../src/imaging/layout-plan.js';

const MiB = 1024 * 1024;
const SOURCE_MAC = '52:54:00:e2:12:01';
const LARGE_MAC = '52:54:00:e2:12:02';
const SMALL_MAC = '52:54:00:e2:12:03';

interface TaskJson {
  id: string;
  state: string;
  reason: string | null;
  result: { version: number | null; digest: string | null; bytesOnWire: number } | null;
}

interface LayoutJson {
  partitions: Array<{ index: number; label: string | null; startBytes: number; sizeBytes: number; mode: string }>;
}

interface ImageJson {
  dataBytes: number;
  fitsDiskBytes: number;
  layout: LayoutJson | null;
}

let lab: Lab;
let server: NetcloneServer;
let built: BuiltDisk;
const results: Record<string, unknown> = {};

async function runTask(kind: 'capture' | 'deploy', mac: string, name: string, firmware: 'bios' | 'uefi', disk: string, bus: 'ahci' | 'nvme'): Promise<{ task: TaskJson; serial: string; fromVm: number }> {
  const created = await lab.cliJson<TaskJson>(['task', kind, mac, '--image', 'win', '--transport', 'chunks']);
  const vm = lab.startVm({ name, firmware, mac, disk: { path: disk, bus, serial: `NC12${name.length}` } });
  let fromVm: number;
  try {
    expect(await vm.finished(600_000)).toBe(0);
    fromVm = vm.tapBytes().fromVm;
  } finally {
    await vm.kill();
  }
  const task = await lab.cliJson<TaskJson>(['task', 'show', created.id]);
  return { task, serial: vm.serial(), fromVm };
}

/** Where the restore plan puts each partition on a disk of `size` bytes, from the layout the server keeps beside version 1 (<data>/images/images/<image>/versions/). */
function placementFor(size: number): Map<number, { startBytes: number; sizeBytes: number }> {
  const layout = parseDiskLayout(JSON.parse(readFileSync(join(lab.dataDir, 'images', 'images', 'win', 'versions', '1.layout.json'), 'utf8')));
  return new Map(planRestore(layout, size).partitions.map((p) => [p.index, { startBytes: p.toStart, sizeBytes: p.toSize }]));
}

/** A replacement disk: never blank. */
async function dirtyDisk(path: string, sizeMiB: number, seed: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    for (let i = 0; i < sizeMiB; i++) await fh.write(seededBytes(seed, `replacement ${i}`, MiB));
  } finally {
    await fh.close();
  }
}

beforeAll(async () => {
  ensureClientBuild();
  lab = await Lab.create('real-disks');
  await mkdir(join(lab.tmp, 'win'), { recursive: true });
  built = await buildWindowsDisk(join(lab.tmp, 'win'), { sizeMiB: 512, seed: 12, dataMiB: 48 });
  server = await lab.startServer('full', 'server-real-disks', ['--menu-timeout', '2']);
}, 600_000);

afterAll(async () => {
  writeFileSync(join(artifactsDir, 'real-disks.results.json'), `${JSON.stringify(results, null, 2)}\n`);
  await server?.stop();
  await lab?.close();
}, 60_000);

describe('a Windows-like GPT disk through the thin client', () => {
  it('captures only the used blocks, then restores onto a larger NVMe disk and onto a smaller disk', async () => {
    for (const mac of [SOURCE_MAC, LARGE_MAC, SMALL_MAC]) expect((await lab.cli(['host', 'add', mac])).code).toBe(0);

    const capture = await runTask('capture', SOURCE_MAC, 'rd-capture', 'bios', built.path, 'ahci');
    expect(capture.task, capture.serial.slice(-3000)).toMatchObject({ state: 'done', result: { version: 1 } });
    const image = await lab.cliJson<ImageJson>(['image', 'show', 'win']);
    results.capture = { fromVm: capture.fromVm, dataBytes: image.dataBytes, usedBytes: built.usedBytes, fitsDiskBytes: image.fitsDiskBytes };
    // The 512 MiB disk's free space is random bytes: a zero-skipping capture would send most of it.
    expect(capture.fromVm).toBeLessThan(built.usedBytes + 100 * MiB);
    expect(image.layout?.partitions.find((p) => p.label === 'Windows')?.mode).toBe('used-blocks');
    expect(image.fitsDiskBytes).toBeLessThan(300 * MiB);

    const large = join(lab.tmp, 'large.raw');
    await dirtyDisk(large, 1024, 1201);
    const grow = await runTask('deploy', LARGE_MAC, 'rd-deploy-large', 'uefi', large, 'nvme');
    expect(grow.task, grow.serial.slice(-3000)).toMatchObject({ state: 'done', result: { version: 1 } });
    const c = image.layout?.partitions.find((p) => p.label === 'Windows');
    const recovery = image.layout?.partitions.find((p) => p.label === 'Recovery');
    if (!c || !recovery) throw new Error('the layout lacks C: or Recovery');
    const largePlacement = placementFor(1024 * MiB);
    expect(largePlacement.get(c.index)?.sizeBytes).toBeGreaterThan(c.sizeBytes + 400 * MiB);
    expect(largePlacement.get(recovery.index)?.startBytes).toBeGreaterThan(recovery.startBytes + 400 * MiB);
    await checkDisk(large, built, { placement: largePlacement });

    const small = join(lab.tmp, 'small.raw');
    await dirtyDisk(small, 320, 1202);
    const shrink = await runTask('deploy', SMALL_MAC, 'rd-deploy-small', 'bios', small, 'ahci');
    expect(shrink.task, shrink.serial.slice(-3000)).toMatchObject({ state: 'done' });
    const smallPlacement = placementFor(320 * MiB);
    expect(smallPlacement.get(c.index)?.sizeBytes).toBeLessThan(c.sizeBytes - 150 * MiB);
    await checkDisk(small, built, { placement: smallPlacement });
    results.deploys = { largeTask: grow.task.result, smallTask: shrink.task.result };
  }, 2_400_000);
});
