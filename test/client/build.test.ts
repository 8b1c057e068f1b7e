import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { distDir, ensureClientBuild } from './helpers.js';

describe('thin client build (boot/build.sh)', () => {
  let entries: Set<string>;
  let manifest: string;

  beforeAll(() => {
    ensureClientBuild();
    const listing = execFileSync('sh', ['-c', `gzip -dc '${join(distDir, 'initrd.img')}' | cpio -t --quiet`], {
      encoding: 'utf8', maxBuffer: 64 << 20,
    });
    entries = new Set(listing.split('\n').filter((l) => l !== ''));
    manifest = readFileSync(join(distDir, 'manifest.txt'), 'utf8');
  }, 600_000);

  it('produces a kernel image', () => {
    const head = readFileSync(join(distDir, 'vmlinuz')).subarray(0x202, 0x206).toString('latin1');
    expect(head).toBe('HdrS'); // x86 boot protocol signature
    expect(statSync(join(distDir, 'vmlinuz')).size).toBeGreaterThan(1 << 20);
  });

  it('packs init, busybox with its applets, and the client helpers', () => {
    for (const f of ['init', 'bin/busybox', 'bin/sh', 'bin/wget', 'bin/udhcpc', 'sbin/modprobe',
      'usr/share/netclone/udhcpc.script', 'usr/share/netclone/modules.load',
      ...['log', 'json', 'api', 'disks', 'hw', 'net', 'transfer', 'menu'].map((l) => `usr/share/netclone/lib/${l}.sh`)]) {
      expect(entries.has(f), f).toBe(true);
    }
  });

  it('packs nbdcopy, nbdinfo, their shared libraries and the dynamic loader', () => {
    expect(entries.has('usr/bin/nbdcopy')).toBe(true);
    expect(entries.has('usr/bin/nbdinfo')).toBe(true);
    const needed = execFileSync('ldd', ['/usr/bin/nbdcopy'], { encoding: 'utf8' })
      .split('\n').map((l) => (/=>\s*(\/\S+)/.exec(l) ?? /^\s*(\/\S+)/.exec(l))?.[1]).filter((p): p is string => !!p);
    expect(needed.some((p) => p.includes('ld-linux'))).toBe(true);
    for (const lib of needed) expect(entries.has(lib.replace(/^\//, '')), lib).toBe(true);
  });

  it('packs modules.dep and the NIC, USB and disk drivers', () => {
    const kver = /^kernel-version: (\S+)$/m.exec(manifest)?.[1];
    expect(kver).toBeTruthy();
    const modDir = `lib/modules/${kver}`;
    expect(entries.has(`${modDir}/modules.dep`)).toBe(true);
    const modules = new Set([...entries].filter((e) => e.startsWith(modDir) && e.endsWith('.ko'))
      .map((e) => e.slice(e.lastIndexOf('/') + 1, -3).replace(/-/g, '_')));
    for (const m of ['e1000', 'e1000e', 'igb', 'igc', 'r8169', 'tg3', 'bnx2x', 'atlantic', 'virtio_net', 'r8152',
      'ax88179_178a', 'usbnet', 'xhci_pci', 'xhci_hcd', 'ehci_pci', 'ehci_hcd', 'ahci', 'nvme', 'sd_mod', 'virtio_blk',
      'virtio_scsi', 'virtio_pci', 'usbhid', 'libata', 'scsi_mod', 'nvme_core']) {
      expect(modules.has(m), m).toBe(true);
    }
  });

  it('records package versions, the kernel version and the modules in manifest.txt', () => {
    expect(manifest).toMatch(/^linux-image-\S+-amd64 \S+$/m);
    expect(manifest).toMatch(/^busybox-static \S+$/m);
    expect(manifest).toMatch(/^libnbd-bin:amd64 \S+$/m);
    expect(manifest).toMatch(/^libnbd0:amd64 \S+$/m);
    expect(manifest).toMatch(/\[module files\][\s\S]*kernel\/drivers\/net\/ethernet\/intel\/e1000e\/e1000e\.ko/);
    // Firmware comes from Debian's non-free-firmware component (read through a private apt configuration).
    expect(manifest).toMatch(/\[firmware\]\nincluded: /);
    expect(manifest).toMatch(/^firmware-realtek \S+$/m);
    for (const dir of ['lib/firmware/rtl_nic/', 'lib/firmware/bnx2x/', 'lib/firmware/tigon/']) {
      expect([...entries].some((e) => e.startsWith(dir) && e.length > dir.length), dir).toBe(true);
    }
    const initrdLine = /^initrd\.img (\d+) sha256:([0-9a-f]{64})$/m.exec(manifest);
    expect(Number(initrdLine?.[1])).toBe(statSync(join(distDir, 'initrd.img')).size);
  });
});
