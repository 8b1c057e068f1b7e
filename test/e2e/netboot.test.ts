// Network boot end to end (issue 3): real firmware in QEMU (SeaBIOS + iPXE NIC ROM, OVMF's own PXE client)
// against `netclone serve` in a private namespace: DHCP (full and proxy), TFTP of the iPXE loaders, the
// per-MAC iPXE script, the menu for an unknown PC and its timeout to the local disk.
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, type LogEntry, type NetcloneServer } from './lab.js';

let lab: Lab;
let server: NetcloneServer;

interface HostJson {
  mac: string;
  firmware: string;
  registered: boolean;
  arch: string | null;
  vendorClass: string | null;
}

const bootLines = (entries: LogEntry[], mac: string): LogEntry[] => entries.filter((e) => e.component === 'boot' && e.mac === mac && typeof e.decision === 'string');
const tftpEnds = (entries: LogEntry[], file: string): LogEntry[] => entries.filter((e) => e.component === 'tftp' && e.file === file && String(e.msg).startsWith('tftp transfer end'));

beforeAll(async () => {
  lab = await Lab.create('netboot');
  server = await lab.startServer('full', 'server-full', ['--menu-timeout', '2']);
}, 60_000);

afterAll(async () => {
  await lab?.close();
}, 60_000);

describe('network boot of an unknown PC', () => {
  it('BIOS + e1000: DHCP, iPXE ROM chains undionly.kpxe over TFTP, menu, timeout to the local disk', async () => {
    const mac = '52:54:00:e2:0a:01';
    expect((await lab.cliJson<HostJson[]>(['host', 'list'])).map((h) => h.mac)).not.toContain(mac);
    const mark = server.entries().length;
    const vm = lab.startVm({ name: 'bios-menu', firmware: 'bios', mac });
    try {
      await vm.waitSerial('No bootable device');
      const serial = vm.serial();
      // The NIC ROM's iPXE got the per-MAC script, which sent it through undionly.kpxe.
      expect(serial).toContain(`netclone: ${mac} chaining undionly.kpxe`);
      expect(serial).toMatch(/tftp:\/\/10\.77\.0\.1\/undionly\.kpxe\.* ok/);
      expect(serial).not.toContain('could not load undionly.kpxe');
      // The menu of an unknown PC, then its timeout to the local disk, which SeaBIOS then lacks.
      expect(serial).toContain(`netclone - PC ${mac}`);
      expect(serial).toContain('Boot the local disk');
      expect(serial).toContain('netclone: booting the local disk');
      // undionly.kpxe returned to the ROM, the ROM left too, and SeaBIOS went on to its other devices.
      const afterMenu = serial.slice(serial.indexOf('netclone: booting the local disk'));
      expect(afterMenu).toContain('netclone: undionly.kpxe returned; leaving for the next boot device');
      expect(afterMenu).toContain('Booting from Hard Disk');
      expect(afterMenu).toContain('No bootable device');

      const log = server.since(mark);
      const decisions = bootLines(log, mac);
      // The ROM's own driver (chip 82540em for QEMU's e1000) first, then undionly.
      expect(decisions.map((e) => [e.platform, e.chip, e.decision])).toEqual([
        ['pcbios', '82540em', 'chain-undionly'],
        ['pcbios', 'undionly', 'menu'],
      ]);
      const tftp = tftpEnds(log, 'undionly.kpxe');
      expect(tftp.map((e) => [e.status, e.bytesAcked])).toEqual([['complete', statSync(join(lab.bootDir, 'loaders', 'undionly.kpxe')).size]]);
      // TFTP sees only an address; its log names the PC by the MAC DHCP saw at that address.
      expect(tftp.map((e) => e.mac)).toEqual([mac]);
      // undionly.kpxe came between the two scripts.
      expect(log.indexOf(decisions[0])).toBeLessThan(log.indexOf(tftp[0]));
      expect(log.indexOf(tftp[0])).toBeLessThan(log.indexOf(decisions[1]));
      // Both iPXE instances (ROM, then undionly) got their lease and boot file from our full-mode DHCP.
      const acks = log.filter((e) => e.component === 'dhcp' && e.mac === mac && String(e.step).startsWith('ACK'));
      expect(acks.length).toBe(2);
      for (const ack of acks) expect(ack).toMatchObject({ arch: 0, ipxe: true, ip: '10.77.0.100', bootFile: expect.stringContaining('chip=${net0/chip}') });

      const hosts = await lab.cliJson<HostJson[]>(['host', 'list']);
      expect(hosts.find((h) => h.mac === mac)).toMatchObject({ mac, firmware: 'bios', registered: false });
    } finally {
      await vm.kill();
    }
  }, 240_000);

  it('UEFI (OVMF, virtio-net without ROM): PXE arch 7, TFTP snponly.efi, iPXE, menu, exit to the firmware', async () => {
    const mac = '52:54:00:e2:0a:02';
    const mark = server.entries().length;
    const vm = lab.startVm({ name: 'uefi-menu', firmware: 'uefi', mac });
    try {
      await vm.waitSerial('netclone: booting the local disk');
      const serial = vm.serial();
      expect(serial).toContain(`netclone - PC ${mac}`);
      const log = server.since(mark);
      const decisions = bootLines(log, mac);
      expect(decisions.map((e) => [e.platform, e.decision])).toEqual([['efi', 'menu']]);
      // OVMF's PXE client (arch 7, not iPXE) was told snponly.efi; the iPXE it became got the script URL.
      expect(serial).toContain('NBP filename is snponly.efi');
      const dhcp = log.filter((e) => e.component === 'dhcp' && e.mac === mac && typeof e.step === 'string');
      expect(dhcp.filter((e) => e.ipxe === false).map((e) => [e.arch, e.bootFile])).toEqual([[7, 'snponly.efi'], [7, 'snponly.efi']]);
      expect(dhcp.filter((e) => e.ipxe === true).every((e) => String(e.bootFile).startsWith('http://10.77.0.1:80/boot/ipxe?'))).toBe(true);
      expect(dhcp.filter((e) => e.ipxe === true).length).toBeGreaterThanOrEqual(2);
      // edk2 asks for the size, aborts with error 8, then fetches the loader for real: both are normal.
      const tftp = tftpEnds(log, 'snponly.efi');
      expect(tftp.map((e) => [e.status, e.bytesAcked])).toEqual([
        ['client-abort', 0],
        ['complete', statSync(join(lab.bootDir, 'loaders', 'snponly.efi')).size],
      ]);
      expect(tftp.map((e) => e.mac)).toEqual([mac, mac]);
      expect(tftp[0].msg).toMatch(/option negotiation/);
      const hosts = await lab.cliJson<HostJson[]>(['host', 'list']);
      expect(hosts.find((h) => h.mac === mac)).toMatchObject({ mac, firmware: 'uefi', registered: false });
      // iPXE's `exit` hands control back to OVMF, which goes on to its next boot option.
      await vm.waitSerial(/netclone: booting the local disk[\s\S]*BdsDxe: starting Boot\d+/, 60_000);
    } finally {
      await vm.kill();
    }
  }, 240_000);
});

describe('proxy DHCP next to an office DHCP server', () => {
  it('dnsmasq leases the address, netclone adds the boot options, the PC reaches its per-MAC script', async () => {
    await server.stop();
    const office = lab.startOfficeDhcp();
    server = await lab.startServer('proxy', 'server-proxy', ['--menu-timeout', '2']);
    const mac = '52:54:00:e2:0a:03';
    const mark = server.entries().length;
    const vm = lab.startVm({ name: 'bios-proxy', firmware: 'bios', mac });
    try {
      await vm.waitSerial('netclone: booting the local disk');
      const serial = vm.serial();
      expect(serial).toContain(`netclone: ${mac} chaining undionly.kpxe`);
      expect(serial).toContain(`netclone - PC ${mac}`);
      // undionly.kpxe came from our TFTP server, not from the office server that DHCP names as next-server.
      expect(serial).toMatch(/tftp:\/\/10\.77\.0\.1\/undionly\.kpxe\.* ok/);
      expect(serial).not.toContain('could not load undionly.kpxe');
      const log = server.since(mark);
      expect(bootLines(log, mac).map((e) => [e.chip, e.decision])).toEqual([['82540em', 'chain-undionly'], ['undionly', 'menu']]);
      expect(tftpEnds(log, 'undionly.kpxe').map((e) => [e.status, e.mac])).toEqual([['complete', mac]]);
      // netclone only answered with proxy offers (boot file, no address).
      const dhcp = log.filter((e) => e.component === 'dhcp' && e.mac === mac && typeof e.step === 'string');
      expect(dhcp.length).toBeGreaterThanOrEqual(2);
      for (const e of dhcp) expect(e).toMatchObject({ step: 'proxy OFFER', ipxe: true, bootFile: expect.stringContaining('http://10.77.0.1:80/boot/ipxe?') });
      expect(dhcp.filter((e) => 'ip' in e)).toEqual([]);
      // The address came from dnsmasq's pool, and netclone did not lease anything.
      expect(office.output()).toMatch(new RegExp(`DHCPACK\\(eth0\\) 10\\.77\\.0\\.1\\d\\d ${mac}`));
    } finally {
      await vm.kill();
      await lab.stopProcess(office);
    }
  }, 240_000);
});
