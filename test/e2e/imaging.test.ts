// Capture and deploy end to end over the NBD transport (issue 4; the chunk transport's is agent.test.ts): the real thin client (boot/dist) network-boots in QEMU from
// `netclone serve`, captures a GPT/ext4 disk built by the test into the image store, deploys it onto a
// blank NVMe disk of a UEFI PC, verifies it, and the PC then boots locally. Plus a refused deploy onto a
// disk too small, and a deploy with proxy DHCP next to an office DHCP server.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureClientBuild } from '../client/helpers.js';
import { buildDisk, buildSourceDisk, MiB, readExt4File, type SourceDisk } from './disks.js';
import { artifactsDir, Lab, type LogEntry, type NetcloneServer } from './lab.js';

const DISK_SIZE = 128 * MiB;
const SOURCE_MAC = '52:54:00:e2:0b:01';
const TARGET_MAC = '52:54:00:e2:0b:02';
const SMALL_MAC = '52:54:00:e2:0b:03';
const PROXY_MAC = '52:54:00:e2:0b:04';

interface TaskJson {
  id: string;
  kind: string;
  mac: string;
  image: string;
  state: string;
  reason: string | null;
  disk: { name: string; size: number; logicalSectorSize: number; serial: string } | null;
  progress: { bytes: number; total: number };
  result: { version: number | null; digest: string | null; bytesOnWire: number } | null;
  log: Array<{ message: string }>;
}

interface ImageJson {
  name: string;
  size: number;
  sectorSize: number;
  dataBytes: number;
  latestVersion: number;
  versions: Array<{ version: number; digest: string; dataBytes: number; source: string }>;
  partitionTable: { scheme: string; partitions: Array<{ index: number; typeName: string; name: string; startBytes: number; sizeBytes: number; filesystem: string | null }> } | null;
}

interface HostJson {
  mac: string;
  firmware: string;
  registered: boolean;
  assignedImage: string | null;
  hardware: { disks: Array<{ name: string; size: number; serial: string; transport: string }>; nics: Array<{ mac: string; driver: string }> } | null;
}

let lab: Lab;
let server: NetcloneServer;
let source: SourceDisk;
/** Measured sizes, kept as an artifact (test-artifacts/e2e/imaging.results.json) for people reading a run. */
const results: Record<string, unknown> = {};

const clientFetchEntries = (log: LogEntry[]): LogEntry[] => log.filter((e) => e.component === 'boot' && e.msg === 'boot: serving the imaging client');
const clientFetches = (log: LogEntry[]): unknown[] => clientFetchEntries(log).map((e) => e.file);
const decisions = (log: LogEntry[], mac: string): unknown[] => log.filter((e) => e.component === 'boot' && e.mac === mac && typeof e.decision === 'string').map((e) => e.decision);

async function createTask(kind: 'capture' | 'deploy', mac: string, image: string): Promise<TaskJson> {
  return lab.cliJson<TaskJson>(['task', kind, mac, '--image', image, '--transport', 'nbd']);
}

const showTask = (id: string): Promise<TaskJson> => lab.cliJson<TaskJson>(['task', 'show', id]);

beforeAll(async () => {
  ensureClientBuild();
  lab = await Lab.create('imaging');
  source = buildSourceDisk(join(lab.tmp, 'source'), DISK_SIZE, 64 * MiB, 6 * MiB);
  server = await lab.startServer('full', 'server-full', ['--menu-timeout', '2']);
}, 600_000);

afterAll(async () => {
  writeFileSync(join(artifactsDir, 'imaging.results.json'), `${JSON.stringify(results, null, 2)}\n`);
  await lab?.close();
}, 60_000);

describe('capture then deploy with the real thin client', () => {
  let digest = '';
  let dataBytes = 0;

  it('captures a BIOS PC (e1000, AHCI disk) into image "golden"', async () => {
    const sourceBytes = readFileSync(source.path);
    expect((await lab.cli(['host', 'add', SOURCE_MAC])).code).toBe(0);
    const task = await createTask('capture', SOURCE_MAC, 'golden');
    expect(task).toMatchObject({ kind: 'capture', state: 'queued', mac: SOURCE_MAC });
    const mark = server.entries().length;
    const vm = lab.startVm({ name: 'capture-bios', firmware: 'bios', mac: SOURCE_MAC, disk: { path: source.path, bus: 'ahci', serial: 'NCE2ESRC' } });
    try {
      expect(await vm.finished()).toBe(0);
    } finally {
      await vm.kill();
    }
    const serial = vm.serial();
    expect(serial).toContain(`netclone: capture of image golden for ${SOURCE_MAC}`);
    expect(serial).toContain('netclone: capture done');
    const log = server.since(mark);
    expect(decisions(log, SOURCE_MAC)).toEqual(['chain-undionly', 'client']);
    expect(clientFetches(log)).toEqual(['vmlinuz', 'initrd.img']);
    // The kernel and initrd URLs carry no MAC; the log names the PC from its address.
    expect(clientFetchEntries(log).map((e) => e.mac)).toEqual([SOURCE_MAC, SOURCE_MAC]);

    const done = await showTask(task.id);
    expect(done).toMatchObject({ state: 'done', disk: { name: 'sda', size: DISK_SIZE, logicalSectorSize: 512, serial: 'NCE2ESRC' }, result: { version: 1 } });

    const image = await lab.cliJson<ImageJson>(['image', 'show', 'golden']);
    expect(image).toMatchObject({ name: 'golden', size: DISK_SIZE, sectorSize: 512, latestVersion: 1 });
    expect(image.partitionTable?.scheme).toBe('gpt');
    expect(image.partitionTable?.partitions).toEqual([
      expect.objectContaining({ index: 1, name: 'root', typeName: 'Linux filesystem', startBytes: source.partition.startBytes, sizeBytes: source.partition.sizeBytes, filesystem: 'ext4' }),
    ]);
    // The zero tail and ext4's free space are holes: the image holds about the files' worth of data.
    expect(image.dataBytes).toBeGreaterThan(6 * MiB);
    expect(image.dataBytes).toBeLessThan(DISK_SIZE / 4);
    expect(done.result?.digest).toBe(image.versions[0].digest);
    digest = image.versions[0].digest;
    results.captureBytesOnWire = done.result?.bytesOnWire;
    dataBytes = image.dataBytes;
    // nbdcopy sent zero runs as WRITE_ZEROES: the data crossed the wire, the empty disk did not.
    expect(done.result?.bytesOnWire).toBeGreaterThanOrEqual(6 * MiB);
    expect(done.result?.bytesOnWire).toBeLessThan(image.dataBytes + 8 * MiB);

    const exported = join(lab.tmp, 'golden-export.raw');
    const exp = await lab.cli(['image', 'export', 'golden', exported]);
    expect(exp.code, exp.stderr).toBe(0);
    expect(readFileSync(exported).equals(sourceBytes)).toBe(true);

    const host = (await lab.cliJson<HostJson[]>(['host', 'list'])).find((h) => h.mac === SOURCE_MAC);
    expect(host?.hardware?.disks).toEqual([expect.objectContaining({ name: 'sda', size: DISK_SIZE, serial: 'NCE2ESRC', transport: 'sata' })]);
    expect(host?.hardware?.nics).toEqual([expect.objectContaining({ mac: SOURCE_MAC, driver: 'e1000' })]);
  }, 300_000);

  it('deploys "golden" onto a blank NVMe disk of a UEFI PC (virtio-net), verified, sending only the data', async () => {
    expect(digest).not.toBe('');
    const target = join(lab.tmp, 'target.raw');
    buildDisk(target, DISK_SIZE);
    const task = await createTask('deploy', TARGET_MAC, 'golden');
    const mark = server.entries().length;
    const vm = lab.startVm({ name: 'deploy-uefi', firmware: 'uefi', mac: TARGET_MAC, disk: { path: target, bus: 'nvme', serial: 'NCE2ETGT' } });
    try {
      expect(await vm.finished()).toBe(0);
    } finally {
      await vm.kill();
    }
    expect(vm.serial()).toContain(`netclone: verified: digest ${digest}`);
    const log = server.since(mark);
    expect(decisions(log, TARGET_MAC)).toEqual(['client']);
    expect(clientFetches(log)).toEqual(['vmlinuz', 'initrd.img']);
    expect(clientFetchEntries(log).map((e) => e.mac)).toEqual([TARGET_MAC, TARGET_MAC]);

    const done = await showTask(task.id);
    expect(done).toMatchObject({ state: 'done', disk: { name: 'nvme0n1', size: DISK_SIZE, serial: 'NCE2ETGT' }, result: { version: 1, digest } });
    // Holes are not sent: what crossed the wire is the image's data, far below the disk size.
    const onWire = done.result?.bytesOnWire ?? 0;
    Object.assign(results, { diskSize: DISK_SIZE, imageDataBytes: dataBytes, deployBytesOnWire: onWire, digest });
    expect(onWire).toBeGreaterThanOrEqual(dataBytes);
    expect(onWire).toBeLessThan(dataBytes + 8 * MiB);
    expect(onWire).toBeLessThan(DISK_SIZE / 4);

    const written = readFileSync(target);
    expect(written.equals(readFileSync(source.path))).toBe(true);
    for (const [name, content] of source.files) {
      expect(readExt4File(target, source.partition.startBytes, source.partition.sizeBytes, name, lab.tmp).equals(content)).toBe(true);
    }
    const host = (await lab.cliJson<HostJson[]>(['host', 'list'])).find((h) => h.mac === TARGET_MAC);
    expect(host).toMatchObject({ firmware: 'uefi', registered: true, assignedImage: 'golden' });
  }, 300_000);

  it('the deployed PC boots again: no task, so the menu times out to its local disk, no client is fetched', async () => {
    const target = join(lab.tmp, 'target.raw');
    const before = readFileSync(target);
    const mark = server.entries().length;
    const vm = lab.startVm({ name: 'deploy-uefi-reboot', firmware: 'uefi', mac: TARGET_MAC, disk: { path: target, bus: 'nvme', serial: 'NCE2ETGT' } });
    try {
      await vm.waitSerial(/This PC is registered; it has no task/);
      await vm.waitSerial(/netclone: booting the local disk[\s\S]*BdsDxe: starting Boot\d+/, 60_000);
    } finally {
      await vm.kill();
    }
    const log = server.since(mark);
    expect(decisions(log, TARGET_MAC)).toEqual(['menu']);
    expect(clientFetches(log)).toEqual([]);
    expect(vm.serial()).not.toContain('netclone: deploy of image');
    expect(readFileSync(target).equals(before)).toBe(true);
  }, 240_000);

  it('refuses to deploy onto a disk smaller than the image: task failed with the reason, disk untouched', async () => {
    const small = join(lab.tmp, 'small.raw');
    buildDisk(small, 64 * MiB, true);
    const before = readFileSync(small);
    const task = await createTask('deploy', SMALL_MAC, 'golden');
    const vm = lab.startVm({ name: 'deploy-too-small', firmware: 'uefi', mac: SMALL_MAC, disk: { path: small, bus: 'ahci', serial: 'NCE2ESML' } });
    const reason = `disk sda is ${64 * MiB} bytes, smaller than the image (${DISK_SIZE} bytes); refusing`;
    try {
      await vm.waitSerial('netclone: press any key to reboot');
      expect(vm.serial()).toContain(`netclone: FAILED: ${reason}`);
      const failed = await showTask(task.id);
      expect(failed).toMatchObject({ state: 'failed', reason });
      expect(failed.result).toBeNull();
      // The client waits for a key rather than rebooting into a loop.
      expect(vm.running).toBe(true);
    } finally {
      await vm.kill();
    }
    expect(readFileSync(small).equals(before)).toBe(true);
  }, 240_000);
});

describe('proxy DHCP with the real thin client', () => {
  it('deploys "golden" onto a UEFI PC (OVMF PXE) whose address comes from the office DHCP server', async () => {
    await server.stop();
    const office = lab.startOfficeDhcp();
    server = await lab.startServer('proxy', 'server-proxy', ['--menu-timeout', '2']);
    const target = join(lab.tmp, 'proxy-target.raw');
    buildDisk(target, DISK_SIZE, true);
    const task = await createTask('deploy', PROXY_MAC, 'golden');
    const mark = server.entries().length;
    const vm = lab.startVm({ name: 'deploy-uefi-proxy', firmware: 'uefi', mac: PROXY_MAC, disk: { path: target, bus: 'ahci', serial: 'NCE2EPRX' } });
    try {
      expect(await vm.finished()).toBe(0);
    } finally {
      await vm.kill();
      await lab.stopProcess(office);
    }
    const log = server.since(mark);
    expect(decisions(log, PROXY_MAC)).toEqual(['client']);
    // OVMF took its boot file from netclone's proxy offer and fetched it from our TFTP server.
    expect(vm.serial()).toContain('NBP filename is snponly.efi');
    expect(log.filter((e) => e.component === 'tftp' && e.file === 'snponly.efi' && e.msg === 'tftp transfer end').map((e) => e.status)).toEqual(['complete']);
    const offers = log.filter((e) => e.component === 'dhcp' && e.mac === PROXY_MAC && typeof e.step === 'string');
    expect(offers.length).toBeGreaterThanOrEqual(2);
    expect(offers.filter((e) => 'ip' in e)).toEqual([]);
    const done = await showTask(task.id);
    expect(done).toMatchObject({ state: 'done', disk: { name: 'sda', size: DISK_SIZE } });
    // Every address the PC used (ROM, undionly, the client's udhcpc) was leased by dnsmasq.
    expect(office.output()).toMatch(new RegExp(`DHCPACK\\(eth0\\) 10\\.77\\.0\\.1\\d\\d ${PROXY_MAC}`));
    expect(done.log.map((l) => l.message).join('\n')).toMatch(/client 10\.77\.0\.1\d\d fetched the task/);
    // Random bytes on the disk before: the image's holes were written as zeroes.
    expect(readFileSync(target).equals(readFileSync(source.path))).toBe(true);
  }, 300_000);
});
