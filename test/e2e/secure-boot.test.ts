// Issue 14 end to end: an office PC with Secure Boot on (OVMF with Microsoft's keys, enforcing), on a
// bench network where the appliance's DHCP runs in full mode. (In proxy mode Debian's GRUB takes its
// TFTP server from the office DHCP server's answer, not from ours: see README, "Secure Boot".)
// 1. With uefi-boot = ipxe the firmware refuses the unsigned snponly.efi: enforcement really is on,
//    and the PC falls through to its own disk.
// 2. With uefi-boot = signed it boots Debian's shim → signed GRUB → Debian's kernel with the client,
//    captures, and its kernel says Secure Boot is on; the PC reports "on".
// 3. The same chain deploys the image onto a dirty disk; the disk checks out file for file.
// 4. With no task, the next boot goes through GRUB's menu to the disk's own loader (shim as
//    \EFI\BOOT\BOOTX64.EFI, then Debian's signed GRUB from the disk), Secure Boot still on.
// 5. UEFI HTTP boot (architecture 16): OVMF fetches the loader over HTTP and a deploy completes.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureClientBuild } from '../client/helpers.js';
import { buildTargetDisk, buildWindowsDisk, checkDisk, type BuiltDisk, type BuiltFile } from '../lib/real-disks.js';
import { Lab, type NetcloneServer } from './lab.js';

const MAC = '52:54:00:5e:c0:01';
const HTTP_MAC = '52:54:00:5e:c0:02';
const DISK_MIB = 160;
/** What the disk's own GRUB prints: proof that the PC booted its disk, through its own signed loaders. */
const LOCAL_MARK = 'NETCLONE-TEST-DISK-BOOTED-WITH-ITS-OWN-LOADER';

interface TaskJson {
  id: string;
  state: string;
  reason: string | null;
  result: { version: number | null; digest: string | null } | null;
}
interface HostJson {
  mac: string;
  hardware: { secureBoot?: string } | null;
}

/** The ESP of a PC whose firmware boots \EFI\BOOT\BOOTX64.EFI: Debian's signed shim, then Debian's signed GRUB beside it. */
function signedEsp(): BuiltFile[] {
  return [
    { path: '/EFI/BOOT/BOOTX64.EFI', data: readFileSync('/usr/lib/shim/shimx64.efi.signed') },
    { path: '/EFI/BOOT/grubx64.efi', data: readFileSync('/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed') },
    // Debian's GRUB reads grub.cfg beside itself ($cmdpath) when it finds no /boot/grub.
    { path: '/EFI/BOOT/grub.cfg', data: Buffer.from(`echo ${LOCAL_MARK}\nsleep 1\nhalt\n`) },
  ];
}

let lab: Lab;
let server: NetcloneServer;
let source: BuiltDisk;
let target: string;
let httpTarget: string;
let captureId: string;
/** TFTP names as the server logged them, without the leading slash some clients send. */
const tftpFiles = (entries: ReturnType<NetcloneServer['entries']>): string[] =>
  entries.filter((e) => e.msg === 'tftp transfer start').map((e) => String(e.file).replace(/^\/+/, ''));

async function startServer(uefiBoot: 'ipxe' | 'signed', log: string): Promise<NetcloneServer> {
  return lab.startServer('full', log, ['--menu-timeout', '2', '--uefi-boot', uefiBoot]);
}

beforeAll(async () => {
  ensureClientBuild();
  lab = await Lab.create('secureboot');
  source = await buildWindowsDisk(lab.tmp, { sizeMiB: DISK_MIB, seed: 1401, dataMiB: 24, espFiles: signedEsp() });
  target = await buildTargetDisk(lab.tmp, { sizeMiB: DISK_MIB, seed: 1402 });
  httpTarget = await buildTargetDisk(lab.tmp, { sizeMiB: DISK_MIB, seed: 1403 });
  server = await startServer('ipxe', 'server-ipxe');
}, 600_000);

afterAll(async () => {
  await server?.stop();
  await lab?.close();
}, 60_000);

describe('Secure Boot through the signed chain (OVMF with Microsoft keys enforcing)', () => {
  it('refuses iPXE (unsigned): the PC never reaches the boot script and falls through to its own disk', async () => {
    const created = await lab.cliJson<TaskJson>(['task', 'capture', MAC, '--image', 'secure']);
    captureId = created.id;
    const mark = server.entries().length;
    const vm = lab.startVm({ name: 'sb-refused', firmware: 'uefi', secureBoot: true, mac: MAC, disk: { path: source.path, bus: 'ahci', serial: 'NCSB1' } });
    try {
      await vm.waitSerial(LOCAL_MARK, 240_000);
    } finally {
      await vm.kill();
    }
    const logs = server.since(mark);
    // The firmware fetched snponly.efi from us and would not run it.
    expect(tftpFiles(logs), JSON.stringify(logs.slice(-20))).toContain('snponly.efi');
    expect(vm.serial()).toMatch(/failed to load Boot\d+ "UEFI PXEv4 \(MAC:5254005EC001\)"[^\n]*: Access Denied/);
    // Its HTTP boot client (which fetched ipxe.efi by URL) was refused the same way.
    expect(vm.serial()).toMatch(/failed to load Boot\d+ "UEFI HTTPv4 \(MAC:5254005EC001\)"[^\n]*: Access Denied/);
    // iPXE never ran: nothing asked for the boot script (the route logs its decision), and the task still waits.
    expect(logs.filter((e) => e.decision !== undefined)).toEqual([]);
    expect((await lab.cliJson<TaskJson>(['task', 'show', created.id])).state).toBe('queued');
  }, 300_000);

  it('captures through shim, signed GRUB and Debian\'s kernel with Secure Boot enforced, and the PC reports it on', async () => {
    await server.stop();
    server = await startServer('signed', 'server-signed');
    const mark = server.entries().length;
    const vm = lab.startVm({ name: 'sb-capture', firmware: 'uefi', secureBoot: true, mac: MAC, disk: { path: source.path, bus: 'ahci', serial: 'NCSB1' } });
    try {
      expect(await vm.finished(900_000)).toBe(0);
    } finally {
      await vm.kill();
    }
    const serial = vm.serial();
    const task = await lab.cliJson<TaskJson>(['task', 'show', captureId]);
    expect(task, serial.slice(-3000)).toMatchObject({ state: 'done', result: { version: 1 } });
    // Debian's kernel under shim: Secure Boot on, and with it lockdown.
    expect(serial).toMatch(/secureboot: Secure boot enabled/);
    expect(serial).toMatch(/Kernel is locked down from EFI Secure Boot/);
    const files = tftpFiles(server.since(mark));
    expect(files).toEqual(expect.arrayContaining(['shimx64.efi', 'grubx64.efi', 'grub/grub.cfg', `grub/pc/${MAC}`, 'client/vmlinuz', 'client/initrd.img']));
    expect(files).not.toContain('snponly.efi');
    const host = (await lab.cliJson<HostJson[]>(['host', 'list'])).find((h) => h.mac === MAC);
    expect(host?.hardware?.secureBoot).toBe('on');
  }, 1_000_000);

  it('deploys the image onto a dirty disk through the same chain, file for file', async () => {
    const created = await lab.cliJson<TaskJson>(['task', 'deploy', MAC, '--image', 'secure']);
    const vm = lab.startVm({ name: 'sb-deploy', firmware: 'uefi', secureBoot: true, mac: MAC, disk: { path: target, bus: 'ahci', serial: 'NCSB2' } });
    try {
      expect(await vm.finished(900_000)).toBe(0);
    } finally {
      await vm.kill();
    }
    const task = await lab.cliJson<TaskJson>(['task', 'show', created.id]);
    expect(task, vm.serial().slice(-3000)).toMatchObject({ state: 'done', result: { version: 1 } });
    expect(vm.serial()).toMatch(/secureboot: Secure boot enabled/);
    await checkDisk(target, source);
  }, 1_000_000);

  it('boots the restored disk\'s own signed loader on the next boot, through GRUB\'s menu, Secure Boot still on', async () => {
    const mark = server.entries().length;
    const vm = lab.startVm({ name: 'sb-local', firmware: 'uefi', secureBoot: true, mac: MAC, disk: { path: target, bus: 'ahci', serial: 'NCSB2' } });
    try {
      await vm.waitSerial(LOCAL_MARK, 300_000);
    } finally {
      await vm.kill();
    }
    const serial = vm.serial();
    // Through the network chain: GRUB asked for this PC's file, got the menu, timed out to the disk.
    expect(tftpFiles(server.since(mark))).toContain(`grub/pc/${MAC}`);
    expect(serial).toContain('netclone: booting the local disk (/EFI/BOOT/BOOTX64.EFI)');
    expect(serial.indexOf(LOCAL_MARK)).toBeGreaterThan(serial.indexOf('netclone: booting the local disk'));
  }, 400_000);
});

describe('UEFI HTTP boot (architecture 16)', () => {
  it('fetches the loader over HTTP and completes a deploy', async () => {
    const created = await lab.cliJson<TaskJson>(['task', 'deploy', HTTP_MAC, '--image', 'secure']);
    const mark = server.entries().length;
    const vm = lab.startVm({ name: 'http-deploy', firmware: 'uefi', netBoot: 'http', mac: HTTP_MAC, disk: { path: httpTarget, bus: 'ahci', serial: 'NCHB1' } });
    try {
      expect(await vm.finished(900_000)).toBe(0);
    } finally {
      await vm.kill();
    }
    const task = await lab.cliJson<TaskJson>(['task', 'show', created.id]);
    expect(task, vm.serial().slice(-3000)).toMatchObject({ state: 'done', result: { version: 1 } });
    const logs = server.since(mark);
    expect(logs.some((e) => e.msg === 'boot: serving an iPXE loader over HTTP' && e.file === 'ipxe.efi'), JSON.stringify(logs.slice(0, 30))).toBe(true);
    // No TFTP at all: the firmware's HTTP boot client took the loader by URL.
    expect(tftpFiles(logs)).toEqual([]);
    await checkDisk(httpTarget, source);
  }, 1_000_000);
});
