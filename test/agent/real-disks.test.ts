/**
 * Issue 12 end to end on the host: real disks (a Windows-like GPT disk and a Linux MBR disk, free space
 * full of random bytes) captured by the agent against a real appliance on loopback, then deployed onto
 * random-filled disks of the same size and of a larger size, each checked with the real tools
 * (checkDisk: sgdisk -v, fsck, every file, GUIDs and UUIDs). Disks are files; the agent reaches their
 * partitions through loop devices.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { loopbackConfig } from '../lib/appliance-config.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { nullLogger } from '../../src/lib/log.js';
import type { TaskRecord } from '../../src/domain/database.js';
import type { RunResult } from '../lib/run.js';
import { postAgentResult, queueChunkTask } from './appliance-tasks.js';
import { agentLine, agentReason, runAgentCli } from './disks.js';
import { buildLinuxDisk, buildWindowsDisk, checkDisk, seededBytes, type BuiltDisk } from '../lib/real-disks.js';
import { planRestore } from '../../src/imaging/layout-plan.js';
import type { DiskLayout } from '../../src/imaging/disk-layout.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;

let dir: string;
let app: RunningAppliance;
let base: string;
let macs = 0;

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('the agent reaches partitions of disk files through loop devices: run this test as root');
  dir = await mkdtemp(path.join(tmpdir(), 'nc-real-disks-'));
  app = await startAppliance(loopbackConfig(dir), nullLogger());
  base = `http://127.0.0.1:${app.ports.http}`;
});

afterAll(async () => {
  await app?.stop();
  await rm(dir, { recursive: true, force: true });
});

afterEach(async () => {
  for (const t of app.core.tasks.list({ active: true })) await app.core.tasks.cancel(t.id);
  // Every loop device the agent attached must be gone again.
  const { stdout } = await exec('losetup', ['-a']);
  expect(stdout.split('\n').filter((l) => l.includes(dir))).toEqual([]);
});

function nextMac(): string {
  macs++;
  return `52:54:00:00:c2:${macs.toString(16).padStart(2, '0')}`;
}

async function queue(kind: 'capture' | 'deploy', image: string): Promise<{ task: TaskRecord; token: string }> {
  return queueChunkTask(app, kind, nextMac(), image);
}

async function postResult(token: string, r: RunResult): Promise<{ state: string; reason: string | null }> {
  return postAgentResult(app, token, r);
}

interface RunLine {
  readonly examined: number;
  readonly readBytes: number;
  readonly freeChunks: number;
  readonly sentChunks: number;
}

async function agent(mode: 'capture' | 'deploy', image: string, disk: string, extra: readonly string[] = []): Promise<{ line: RunLine; r: RunResult; task: TaskRecord }> {
  const { task, token } = await queue(mode, image);
  const r = await runAgentCli([mode, '--server', base, '--token', token, '--disk', disk, '--disk-name', 'sda', '--serial', 'D1', ...extra], 300_000);
  expect(r.code, r.stderr).toBe(0);
  expect(await postResult(token, r)).toMatchObject({ state: 'done' });
  return { line: agentLine(r) as unknown as RunLine, r, task: app.core.tasks.get(task.id) ?? task };
}

/** A disk file of `sizeMiB` full of random bytes (a used PC's replacement disk is never blank). */
async function dirtyDisk(name: string, sizeMiB: number, seed: number): Promise<string> {
  const file = path.join(dir, name);
  const fh = await open(file, 'w');
  try {
    for (let i = 0; i < sizeMiB; i++) await fh.write(seededBytes(seed, `dirty ${i}`, MiB));
  } finally {
    await fh.close();
  }
  return file;
}

/** Where checkDisk should find each partition after a restore onto `targetSize` bytes. */
function placementFor(layout: DiskLayout, targetSize: number): Map<number, { startBytes: number; sizeBytes: number }> {
  const plan = planRestore(layout, targetSize);
  return new Map(plan.partitions.map((p) => [p.index, { startBytes: p.toStart, sizeBytes: p.toSize }]));
}

async function ntfsVolumeBytes(disk: string, start: number, size: number): Promise<number> {
  const part = path.join(dir, 'ntfs-part.img');
  await exec('dd', [`if=${disk}`, `of=${part}`, 'bs=1M', `skip=${start / MiB}`, `count=${size / MiB}`, 'status=none']);
  try {
    const { stdout } = await exec('ntfsresize', ['--info', '--force', '--no-progress-bar', part]);
    const m = /Current volume size: (\d+) bytes/.exec(stdout);
    if (!m) throw new Error(`ntfsresize --info said:\n${stdout}`);
    return Number(m[1]);
  } finally {
    await rm(part, { force: true });
  }
}

describe('a Windows-like GPT disk', () => {
  let built: BuiltDisk;
  let layout: DiskLayout;
  let capture: RunLine;
  let captureTask: TaskRecord;

  beforeAll(async () => {
    await mkdir(path.join(dir, 'win'));
    built = await buildWindowsDisk(path.join(dir, 'win'), { sizeMiB: 512, seed: 7, dataMiB: 40 });
    const c = await agent('capture', 'win', built.path);
    capture = c.line;
    captureTask = c.task;
    const l = await app.core.store.layout('win');
    if (!l) throw new Error('the capture kept no disk layout');
    layout = l;
  }, 600_000);

  it('capture reads and sends about the used data, not the partitions, and records the layout', async () => {
    expect(capture.examined).toBe(built.size);
    // ESP and MSR and the filesystems' metadata come on top of the files; the 512 MiB of random free space does not.
    expect(capture.readBytes).toBeGreaterThan(built.usedBytes);
    expect(capture.readBytes).toBeLessThan(built.usedBytes + 100 * MiB);
    expect(capture.freeChunks).toBeGreaterThan(300);
    const info = await app.core.store.show('win');
    expect(info.dataBytes).toBeLessThan(built.usedBytes + 100 * MiB);

    expect(layout.scheme).toBe('gpt');
    expect(layout.diskGuid).toBe(built.diskGuid);
    const byIndex = new Map(layout.partitions.map((p) => [p.index, p]));
    for (const b of built.partitions) {
      const p = byIndex.get(b.index);
      expect(p, `partition ${b.index}`).toBeDefined();
      expect(p?.guid).toBe(b.guid);
      expect(p?.startBytes).toBe(b.startBytes);
      expect(p?.sizeBytes).toBe(b.sizeBytes);
    }
    const c = layout.partitions.find((p) => p.filesystem === 'ntfs' && p.label === 'Windows');
    expect(c?.mode).toBe('used-blocks');
    expect(c?.minSizeBytes).toBeGreaterThan(built.usedBytes / 2);
    expect(c?.minSizeBytes).toBeLessThan(c?.sizeBytes ?? 0);
    expect(layout.partitions.find((p) => p.typeId === 'E3C9E316-0B5C-4DB8-817D-F92DF00215AE')?.mode).toBe('whole');
    // The task says how the disk was captured: the MSR (no filesystem) whole, the rest by used blocks.
    const log = captureTask.log.map((l) => l.message);
    expect(log).toContain('partition 2: no filesystem netclone can read: sent whole');
    expect(log.some((m) => /^3 of 4 partitions captured by their filesystems' used blocks; \d+ bytes of free space neither read nor stored$/.test(m))).toBe(true);
  });

  it('deploys onto a dirty disk of the same size: every file, table and GUID as captured', async () => {
    const target = await dirtyDisk('win-same.raw', 512, 70);
    const { line } = await agent('deploy', 'win', target);
    expect(line.freeChunks).toBeGreaterThan(300);
    await checkDisk(target, built);
    await rm(target);
  });

  it('deploys onto a block device, zeroing the MSR (real zeros, not free space) with BLKZEROOUT', async () => {
    const target = await dirtyDisk('win-block.raw', 512, 75);
    const { stdout } = await exec('losetup', ['-f', '--show', target]);
    const loop = stdout.trim();
    try {
      const { line } = await agent('deploy', 'win', loop, ['--size', String(512 * MiB)]);
      // The MSR's 16 MiB are all zeros in the image: zeroed on the device, not written.
      expect((line as RunLine & { zeroedOut: number }).zeroedOut).toBeGreaterThanOrEqual(16 * MiB);
    } finally {
      await exec('losetup', ['-d', loop]);
    }
    await checkDisk(target, built);
    await rm(target);
  });

  it('deploys onto a larger disk: C: grows, Recovery moves to the end unchanged, the GPT backup sits at the new end', async () => {
    const target = await dirtyDisk('win-large.raw', 768, 71);
    await agent('deploy', 'win', target);
    const placement = placementFor(layout, 768 * MiB);
    const c = layout.partitions.find((p) => p.label === 'Windows');
    const recovery = layout.partitions[layout.partitions.length - 1];
    if (!c) throw new Error('no C: in the layout');
    expect(placement.get(c.index)?.sizeBytes).toBeGreaterThan(c.sizeBytes + 200 * MiB);
    expect(placement.get(recovery.index)?.startBytes).toBeGreaterThan(recovery.startBytes + 200 * MiB);
    await checkDisk(target, built, { placement });
    const grown = placement.get(c.index) as { startBytes: number; sizeBytes: number };
    // The filesystem, not only the partition, took the new space.
    expect(await ntfsVolumeBytes(target, grown.startBytes, grown.sizeBytes)).toBeGreaterThan(c.sizeBytes + 200 * MiB);
    await rm(target);
  });

  it('deploys onto a smaller disk: the server fits a version with C: shrunk, Recovery moves up, the original stays as it was', async () => {
    const before = await app.core.store.show('win');
    const target = await dirtyDisk('win-small.raw', 320, 73);
    const { task } = await agent('deploy', 'win', target);
    const placement = placementFor(layout, 320 * MiB);
    const c = layout.partitions.find((p) => p.label === 'Windows');
    if (!c) throw new Error('no C: in the layout');
    expect(placement.get(c.index)?.sizeBytes).toBeLessThan(c.sizeBytes - 150 * MiB);
    await checkDisk(target, built, { placement });
    expect(task.log.map((l) => l.message).some((m) => /deploying win\.fit-320m version 1, fitted to it from win version 1/.test(m))).toBe(true);
    const after = await app.core.store.show('win');
    expect(after.versions.map((v) => v.digest)).toEqual(before.versions.map((v) => v.digest));
    expect((await app.core.store.verify('win')).ok).toBe(true);
    await rm(target);
  });

  it('refuses a disk too small for the used data, saying by how much', async () => {
    const target = await dirtyDisk('win-tiny.raw', 96, 74);
    const { task, token } = await queue('deploy', 'win');
    const r = await runAgentCli(['deploy', '--server', base, '--token', token, '--disk', target, '--disk-name', 'sda'], 300_000);
    expect(r.code).toBe(1);
    expect(agentReason(r)).toMatch(/the image needs a disk of at least [\d.]+ MiB \([\d.]+ MiB more than this [\d.]+ MiB disk\)/);
    expect(app.core.tasks.get(task.id)?.state).toBe('failed');
    await rm(target);
  });

  it('deploys again onto the disk it restored: the unchanged chunks are reused, nothing is sent', async () => {
    const target = await dirtyDisk('win-again.raw', 512, 72);
    await agent('deploy', 'win', target);
    const { line } = await agent('deploy', 'win', target);
    expect(line.sentChunks).toBe(0);
    await checkDisk(target, built);
    await rm(target);
  });
});

describe('a Linux MBR disk with ext4 and swap', () => {
  let built: BuiltDisk;
  let layout: DiskLayout;

  beforeAll(async () => {
    await mkdir(path.join(dir, 'lin'));
    built = await buildLinuxDisk(path.join(dir, 'lin'), { sizeMiB: 256, seed: 9, dataMiB: 24 });
    const c = await agent('capture', 'lin', built.path);
    expect(c.task.log.map((l) => l.message)).toContain(`partition 2 (swap "${built.partitions[1].label}"): swap, not sent; a restore recreates it with its UUID and label`);
    const l = await app.core.store.layout('lin');
    if (!l) throw new Error('the capture kept no disk layout');
    layout = l;
  }, 600_000);

  it('deploys onto a dirty disk of the same size: ext4 files, table signature and swap as captured', async () => {
    const target = await dirtyDisk('lin-same.raw', 256, 89);
    await agent('deploy', 'lin', target);
    await checkDisk(target, built);
    await rm(target);
  });

  it('sends no swap, and deploys onto a larger disk with ext4 grown and swap recreated with its UUID and label', async () => {
    const swap = layout.partitions.find((p) => p.mode === 'swap');
    const built_swap = built.partitions.find((p) => p.fs === 'swap');
    expect(swap?.uuid).toBe(built_swap?.uuid);
    expect(swap?.label).toBe(built_swap?.label);
    const target = await dirtyDisk('lin-large.raw', 384, 90);
    await agent('deploy', 'lin', target);
    const placement = placementFor(layout, 384 * MiB);
    await checkDisk(target, built, { placement });
    const ext = layout.partitions.find((p) => p.filesystem === 'ext4');
    if (!ext) throw new Error('no ext4 in the layout');
    const grown = placement.get(ext.index) as { startBytes: number; sizeBytes: number };
    const part = path.join(dir, 'ext.img');
    await exec('dd', [`if=${target}`, `of=${part}`, 'bs=1M', `skip=${grown.startBytes / MiB}`, `count=${grown.sizeBytes / MiB}`, 'status=none']);
    const { stdout } = await exec('dumpe2fs', ['-h', part]);
    const blocks = Number(/Block count:\s+(\d+)/.exec(stdout)?.[1]);
    const blockSize = Number(/Block size:\s+(\d+)/.exec(stdout)?.[1]);
    expect(blocks * blockSize).toBeGreaterThan(ext.sizeBytes + 100 * MiB);
    await rm(part);
    await rm(target);
  });

  it('deploys onto a smaller disk: ext4 shrunk by the server, swap moved up and recreated', async () => {
    const target = await dirtyDisk('lin-small.raw', 160, 91);
    await agent('deploy', 'lin', target);
    const placement = placementFor(layout, 160 * MiB);
    const ext = layout.partitions.find((p) => p.filesystem === 'ext4');
    if (!ext) throw new Error('no ext4 in the layout');
    expect(placement.get(ext.index)?.sizeBytes).toBeLessThan(ext.sizeBytes - 60 * MiB);
    await checkDisk(target, built, { placement });
    await rm(target);
  });
});
