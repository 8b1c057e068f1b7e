// The chunk transport end to end (issue 11): the real thin client network-boots in QEMU and its agent
// captures a disk, the disk changes a little, the agent captures it again, and a second PC whose disk
// holds the second version gets the first back (issue 13: a restore of version 1 after version 2 exists).
// What crossed each VM's tap device must be about the change, not the disk: the re-capture uploads only
// the changed chunks and the restore fetches only those.
import { execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureClientBuild } from '../client/helpers.js';
import { noise } from '../lib/prng.js';
import { buildSourceDisk, MiB, type SourceDisk } from './disks.js';
import { artifactsDir, Lab, repoRoot, type NetcloneServer, type TapBytes } from './lab.js';

const DISK_SIZE = 128 * MiB;
const SOURCE_MAC = '52:54:00:e2:0c:01';
const TARGET_MAC = '52:54:00:e2:0c:02';
/**
 * Scattered changes between the two captures, as disk offsets and lengths. They rewrite bytes of a file
 * (random.bin's blocks, found with debugfs), as a PC's changes do: the capture reads only the blocks
 * the filesystem uses (issue 12), so a raw write into free space would be, rightly, not captured.
 */
function fileChanges(disk: SourceDisk): Array<readonly [number, number]> {
  const part = join(lab.tmp, 'source', 'part.ext4');
  const blockSize = Number(/Block size:\s+(\d+)/.exec(execFileSync('dumpe2fs', ['-h', part], { stdio: ['ignore', 'pipe', 'ignore'] }).toString())?.[1]);
  const blocks = execFileSync('debugfs', ['-R', 'blocks /random.bin', part], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim().split(/\s+/).map(Number);
  if (!(blockSize > 0) || blocks.length < 1024) throw new Error(`random.bin's blocks not found (block size ${blockSize}, ${blocks.length} blocks)`);
  // Three stretches of the file's blocks, each as the disk runs its blocks lie in (a file crossing a block
  // group's metadata is in pieces).
  const at = (fraction: number, length: number): Array<readonly [number, number]> => {
    const first = Math.floor(blocks.length * fraction);
    const runs: Array<[number, number]> = [];
    for (let i = first; i < first + Math.ceil(length / blockSize); i++) {
      const offset = disk.partition.startBytes + blocks[i] * blockSize;
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === offset) last[1] += blockSize;
      else runs.push([offset, blockSize]);
    }
    return runs;
  };
  return [...at(0.1, 512 * 1024), ...at(0.45, 1 * MiB), ...at(0.8, 256 * 1024)];
}

/** The 1 MiB chunks the changes touch: what a re-capture and a deploy must move. */
function changedChunks(changes: ReadonlyArray<readonly [number, number]>): number {
  return new Set(changes.flatMap(([off, len]) => {
    const out: number[] = [];
    for (let c = Math.floor(off / MiB); c <= Math.floor((off + len - 1) / MiB); c++) out.push(c);
    return out;
  })).size;
}

interface TaskJson {
  id: string;
  state: string;
  reason: string | null;
  transport: string;
  result: { version: number | null; digest: string | null; bytesOnWire: number } | null;
}

interface ImageJson {
  latestVersion: number;
  dataBytes: number;
  versions: Array<{ version: number; digest: string; dataBytes: number }>;
}

let lab: Lab;
let server: NetcloneServer;
let source: SourceDisk;
const results: Record<string, unknown> = {};

const fileSize = (p: string): number => statSync(p).size;
/**
 * A full TCP segment on the tap is 1448 bytes of payload in a 1514-byte frame (Ethernet, IPv4, TCP with
 * timestamps): bytes a download puts on the wire per byte of file.
 */
const FRAMING = 1514 / 1448;
/** What the boot itself sends a PC, as frames: its loader, the client kernel and initrd (scripts and DHCP are noise). */
function bootDownloadBytes(firmware: 'bios' | 'uefi'): number {
  const loader = firmware === 'bios' ? 'undionly.kpxe' : 'snponly.efi';
  const files = fileSize(join(lab.bootDir, 'loaders', loader)) + fileSize(join(repoRoot, 'boot', 'dist', 'vmlinuz')) + fileSize(join(repoRoot, 'boot', 'dist', 'initrd.img'));
  return Math.floor(files * FRAMING);
}

async function runTask(kind: 'capture' | 'deploy', mac: string, name: string, firmware: 'bios' | 'uefi', disk: string, bus: 'ahci' | 'nvme', extra: readonly string[] = []): Promise<{ task: TaskJson; tap: TapBytes; serial: string }> {
  const created = await lab.cliJson<TaskJson>(['task', kind, mac, '--image', 'office', '--transport', 'chunks', ...extra]);
  expect(created.transport).toBe('chunks');
  const vm = lab.startVm({ name, firmware, mac, disk: { path: disk, bus, serial: `NCAG${name.length}` } });
  let tap: TapBytes;
  try {
    expect(await vm.finished(420_000)).toBe(0);
    tap = vm.tapBytes();
  } finally {
    await vm.kill();
  }
  const task = await lab.cliJson<TaskJson>(['task', 'show', created.id]);
  return { task, tap, serial: vm.serial() };
}

beforeAll(async () => {
  ensureClientBuild();
  lab = await Lab.create('agent');
  source = buildSourceDisk(join(lab.tmp, 'source'), DISK_SIZE, 64 * MiB, 24 * MiB);
  server = await lab.startServer('full', 'server-agent', ['--menu-timeout', '2']);
}, 600_000);

afterAll(async () => {
  writeFileSync(join(artifactsDir, 'agent.results.json'), `${JSON.stringify(results, null, 2)}\n`);
  await server?.stop();
  await lab?.close();
}, 60_000);

describe('the agent moves only changed chunks (BIOS capture, UEFI deploy)', () => {
  const target = (): string => join(lab.tmp, 'target.raw');

  it('captures a BIOS PC, then after a few MiB change captures again sending about the change; a UEFI PC holding the second version gets the first back', async () => {
    expect((await lab.cli(['host', 'add', SOURCE_MAC])).code).toBe(0);

    const first = await runTask('capture', SOURCE_MAC, 'agent-capture-1', 'bios', source.path, 'ahci');
    expect(first.task, first.serial.slice(-3000)).toMatchObject({ state: 'done', result: { version: 1 } });
    expect(first.serial).toContain('netclone: capture done');
    const v1 = await lab.cliJson<ImageJson>(['image', 'show', 'office']);
    // The first capture uploads the data (24 MiB of random file content is most of it), not the disk.
    expect(first.tap.fromVm).toBeGreaterThan(24 * MiB);
    expect(first.tap.fromVm).toBeLessThan(v1.dataBytes + 4 * MiB);

    // Version 1's disk, to compare the restore of version 1 with.
    const v1Disk = join(lab.tmp, 'v1.raw');
    copyFileSync(source.path, v1Disk);

    const CHANGES = fileChanges(source);
    const CHANGED_CHUNKS = changedChunks(CHANGES);
    const fd = openSync(source.path, 'r+');
    try {
      CHANGES.forEach(([off, len], i) => writeSync(fd, noise(1100 + i, len), 0, len, off));
    } finally {
      closeSync(fd);
    }
    const second = await runTask('capture', SOURCE_MAC, 'agent-capture-2', 'bios', source.path, 'ahci');
    expect(second.task, second.serial.slice(-3000)).toMatchObject({ state: 'done', result: { version: 2 } });
    const image = await lab.cliJson<ImageJson>(['image', 'show', 'office']);
    expect(image.latestVersion).toBe(2);
    const v1Entry = image.versions.find((v) => v.version === 1) as ImageJson['versions'][number];
    // Only the changed chunks went up: random data does not compress, so each is about 1 MiB on the wire.
    const changedBytes = CHANGED_CHUNKS * MiB;
    Object.assign(results, { changedChunks: CHANGED_CHUNKS, firstCaptureFromVm: first.tap.fromVm, recaptureFromVm: second.tap.fromVm, v1DataBytes: v1.dataBytes });
    expect(second.tap.fromVm).toBeLessThan(changedBytes + 2 * MiB);
    // About the change, not the disk.
    expect(second.tap.fromVm).toBeLessThan(DISK_SIZE / 10);
    expect(second.task.result?.bytesOnWire).toBeGreaterThanOrEqual(CHANGED_CHUNKS * 256 * 1024);
    expect(second.task.result?.bytesOnWire).toBeLessThanOrEqual(changedBytes + 64 * 1024);

    // The PC that will be restored holds version 2; it is given version 1 back.
    copyFileSync(source.path, target());
    const deploy = await runTask('deploy', TARGET_MAC, 'agent-deploy', 'uefi', target(), 'nvme', ['--version', '1']);
    expect(deploy.task, deploy.serial.slice(-3000)).toMatchObject({ state: 'done', result: { version: 1, digest: v1Entry.digest } });
    expect(deploy.serial).toContain(`netclone: verified: digest ${v1Entry.digest}`);
    const fetched = deploy.tap.toVm - bootDownloadBytes('uefi');
    results.deployToVmMinusBoot = fetched;
    // The changed chunks' files, framed, plus a MiB for the chunk list, scripts, DHCP and TFTP; the image's data is 30 MiB.
    expect(fetched).toBeLessThan(changedBytes * FRAMING + MiB);
    // Byte for byte version 1's disk: the unchanged chunks already on the disk and the fetched ones.
    expect(readFileSync(target()).equals(readFileSync(v1Disk))).toBe(true);
    expect(readFileSync(target()).equals(readFileSync(source.path))).toBe(false);

    // The restored PC reported its own model: QEMU's q35 machine (UEFI), not the i440FX machine (BIOS) the image
    // came from. A deploy onto it now needs confirming (issue 13: hardware mismatch), from the real DMI strings.
    const refused = await lab.cli(['task', 'deploy', TARGET_MAC, '--image', 'office', '--transport', 'chunks']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(new RegExp(`captured from a QEMU Standard PC \\(i440FX[^)]*\\), but PC ${TARGET_MAC} is a QEMU Standard PC \\(Q35[^)]*\\).*--force`));
    const forced = await lab.cliJson<TaskJson>(['task', 'deploy', TARGET_MAC, '--image', 'office', '--transport', 'chunks', '--force']);
    expect(forced.state).toBe('queued');
    expect((await lab.cli(['task', 'cancel', forced.id])).code).toBe(0);
  }, 1_500_000);
});
