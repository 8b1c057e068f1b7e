import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { distDir, ensureClientBuild } from './helpers.js';

/** The libraries `ldd` names for a host binary, as absolute paths (the dynamic loader included). */
function lddPaths(binary: string): string[] {
  return execFileSync('ldd', [binary], { encoding: 'utf8' })
    .split('\n').map((l) => (/=>\s*(\/\S+)/.exec(l) ?? /^\s*(\/\S+)/.exec(l))?.[1]).filter((p): p is string => !!p);
}

/** The programs the imaging agent runs on a PC's partitions (issue 12), shipped from the build host. */
const DISK_TOOLS = ['partclone.ntfs', 'partclone.extfs', 'partclone.fat', 'partclone.exfat', 'partclone.xfs', 'partclone.btrfs',
  'ntfsresize', 'ntfsfix', 'ntfslabel', 'resize2fs', 'e2fsck', 'dumpe2fs', 'blkid', 'losetup', 'mkswap', 'blockdev', 'blkdiscard',
  'xfs_growfs', 'btrfs'];

/** Where the build host has PROGRAM (the build ships it at the same path). */
function hostPath(program: string): string {
  return execFileSync('sh', ['-c', 'command -v "$1"', 'sh', program], {
    encoding: 'utf8', env: { PATH: `${process.env.PATH ?? ''}:/sbin:/usr/sbin` },
  }).trim();
}

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
    const needed = lddPaths('/usr/bin/nbdcopy');
    expect(needed.some((p) => p.includes('ld-linux'))).toBe(true);
    for (const lib of needed) expect(entries.has(lib.replace(/^\//, '')), lib).toBe(true);
  });

  it('packs the disk tools (partclone, ntfs-3g, e2fsprogs, util-linux, xfsprogs, btrfs-progs) with their shared libraries, ahead of busybox', () => {
    for (const tool of DISK_TOOLS) {
      const path = hostPath(tool);
      expect(entries.has(path.replace(/^\//, '')), `${tool} at ${path}`).toBe(true);
      expect(manifest, tool).toContain(`\n${path}\n`);
      for (const lib of lddPaths(path)) expect(entries.has(lib.replace(/^\//, '')), `${tool} needs ${lib}`).toBe(true);
      // init's PATH starts with /bin: a busybox applet link there would shadow the real program.
      expect(entries.has(`bin/${tool}`), `bin/${tool}`).toBe(false);
    }
    // ntfsresize, ntfsfix and resize2fs refuse to run when they cannot tell what is mounted.
    expect(entries.has('etc/mtab'), 'etc/mtab').toBe(true);
    for (const pkg of ['partclone', 'ntfs-3g', 'e2fsprogs', 'util-linux', 'mount', 'xfsprogs', 'btrfs-progs']) expect(manifest).toMatch(new RegExp(`^${pkg}:amd64 \\S+$`, 'm'));
  });

  it('packs modules.dep, the NIC, USB and disk drivers, and the xfs and btrfs drivers the agent mounts to grow them', () => {
    const kver = /^kernel-version: (\S+)$/m.exec(manifest)?.[1];
    expect(kver).toBeTruthy();
    const modDir = `lib/modules/${kver}`;
    expect(entries.has(`${modDir}/modules.dep`)).toBe(true);
    const modules = new Set([...entries].filter((e) => e.startsWith(modDir) && e.endsWith('.ko'))
      .map((e) => e.slice(e.lastIndexOf('/') + 1, -3).replace(/-/g, '_')));
    for (const m of ['e1000', 'e1000e', 'igb', 'igc', 'r8169', 'tg3', 'bnx2x', 'atlantic', 'virtio_net', 'r8152',
      'ax88179_178a', 'usbnet', 'xhci_pci', 'xhci_hcd', 'ehci_pci', 'ehci_hcd', 'ahci', 'nvme', 'sd_mod', 'virtio_blk',
      'virtio_scsi', 'virtio_pci', 'usbhid', 'libata', 'scsi_mod', 'nvme_core', 'xfs', 'btrfs', 'libcrc32c', 'raid6_pq', 'xor']) {
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

  it('records the initrd size, under 80 MB', () => {
    const bytes = Number(/^initrd-bytes: (\d+)$/m.exec(manifest)?.[1]);
    expect(bytes).toBe(statSync(join(distDir, 'initrd.img')).size);
    expect(bytes).toBeLessThan(80_000_000);
  });

  it('packs node, the agent with the modules it imports, and the zstd addon with their libraries', () => {
    for (const f of ['usr/bin/node', 'opt/netclone/package.json', 'opt/netclone/dist/agent/main.js', 'opt/netclone/dist/agent/hash-worker.js',
      'opt/netclone/dist/imaging/chunk-format.js', 'opt/netclone/dist/transport/chunk-wire.js', 'opt/netclone/dist/lib/worker.js', 'opt/netclone/node_modules/zstd-napi/package.json',
      'opt/netclone/node_modules/zstd-napi/binding.js', 'opt/netclone/node_modules/zstd-napi/build/Release/binding.node']) {
      expect(entries.has(f), f).toBe(true);
    }
    // Only what the agent imports: no server layers (but the wire module it shares with them), no tests, no sources.
    const shipped = [...entries].filter((e) => e.startsWith('opt/netclone/dist/'));
    expect(shipped.filter((e) => (/\/(domain|web|transport|nbd|serve|cli|pxe)\//.test(e) && !e.endsWith('/transport/chunk-wire.js')) || /\.(ts|map)$/.test(e))).toEqual([]);
    expect([...entries].filter((e) => e.startsWith('opt/netclone/node_modules/') && !e.startsWith('opt/netclone/node_modules/zstd-napi'))).toEqual([]);
    for (const lib of [...lddPaths('/usr/bin/node'), ...lddPaths(join('node_modules', 'zstd-napi', 'build', 'Release', 'binding.node'))]) {
      expect(entries.has(lib.replace(/^\//, '')), lib).toBe(true);
    }
    expect(manifest).toMatch(/^node v20\.\S+ \(\S+, stripped\)$/m);
    expect(manifest).toMatch(/\[agent files\]\nopt\/netclone\/dist\/agent\//);
  });

  describe('the unpacked tree', () => {
    let root: string;
    /** Runs the tree's node through the tree's dynamic loader with only the tree's library directories. */
    let treeNode: (args: string[]) => ReturnType<typeof spawnSync>;

    beforeAll(() => {
      root = mkdtempSync(join(tmpdir(), 'ncclient-tree-'));
      execFileSync('sh', ['-c', `gzip -dc '${join(distDir, 'initrd.img')}' | (cd '${root}' && cpio -idm --quiet)`], { maxBuffer: 64 << 20 });
      const libs = lddPaths('/usr/bin/node');
      const loader = libs.find((l) => l.includes('ld-linux'));
      expect(loader).toBeDefined();
      const dirs = [...new Set(libs.map((l) => join(root, dirname(l))))].join(':');
      treeNode = (args) => spawnSync(join(root, loader ?? ''), ['--library-path', dirs, join(root, 'usr/bin/node'), ...args],
        { encoding: 'utf8', env: { PATH: '/nonexistent' }, cwd: root });
    }, 120_000);
    afterAll(() => { if (root) rmSync(root, { recursive: true, force: true }); });

    it('runs the agent: its modules and the addon load, and it answers a bad command line with its usage', () => {
      const r = treeNode([join(root, 'opt/netclone/dist/agent/main.js')]);
      expect(r.stderr).toContain('usage: agent capture|deploy');
      expect(r.status).toBe(1);
    });

    it('round-trips a chunk through the shipped chunk codec (zstd addon, content checksum, sha256 name)', () => {
      const r = treeNode(['--input-type=module', '-e', `
        const { ChunkCodecContext, chunkName, maxChunkFileSize, CHUNK_HEADER_SIZE } = await import(process.argv[1]);
        const data = Buffer.alloc(1 << 20);
        for (let i = 0; i < data.length; i += 4096) data.write(\`block \${i}\`, i);
        const [head, payload] = new ChunkCodecContext().encode(data, 3, Buffer.alloc(maxChunkFileSize(data.length) - CHUNK_HEADER_SIZE));
        const file = Buffer.concat([head, payload]);
        const back = new ChunkCodecContext().decodeChecked(file, chunkName(data), 'full');
        file[file.length - 1] ^= 1;
        let refused = false;
        try { new ChunkCodecContext().decodeChecked(file, chunkName(data), 'full'); } catch { refused = true; }
        console.log(JSON.stringify({ equal: back.equals(data), compressed: file.length < data.length / 10, refused}));
      `, join(root, 'opt/netclone/dist/imaging/chunk-format.js')]);
      expect(r.stderr).toBe('');
      expect(JSON.parse(String(r.stdout))).toMatchObject({ equal: true, compressed: true, refused: true });
    });

    it('runs the disk tools with the tree\'s libraries: mkswap -U -L, blkid -p -o export, partclone -D, resize2fs -P, xfs_growfs -V, btrfs --version', () => {
      const libs = DISK_TOOLS.flatMap((t) => lddPaths(hostPath(t)));
      const loader = libs.find((l) => l.includes('ld-linux')) ?? '';
      const dirs = [...new Set(libs.map((l) => join(root, dirname(l))))].join(':');
      const tool = (name: string, args: string[]): ReturnType<typeof spawnSync> =>
        spawnSync(join(root, loader), ['--library-path', dirs, join(root, hostPath(name).slice(1)), ...args], { encoding: 'utf8', cwd: root });
      const work = mkdtempSync(join(tmpdir(), 'ncclient-tools-'));
      try {
        const swap = join(work, 'swap.img');
        execFileSync('truncate', ['-s', '4M', swap]);
        expect(tool('mkswap', ['-U', '0b7c4f1e-5a2d-4c3b-9e8f-1a2b3c4d5e6f', '-L', 'SWAPPY', swap]).status).toBe(0);
        const probe = tool('blkid', ['-p', '-o', 'export', swap]);
        expect(String(probe.stdout)).toMatch(/^TYPE=swap$/m);
        expect(String(probe.stdout)).toMatch(/^UUID=0b7c4f1e-5a2d-4c3b-9e8f-1a2b3c4d5e6f$/m);
        expect(String(probe.stdout)).toMatch(/^LABEL=SWAPPY$/m);
        const ext = join(work, 'ext.img');
        execFileSync('mkfs.ext4', ['-q', '-F', ext, '8M'], { env: { PATH: `${process.env.PATH ?? ''}:/sbin:/usr/sbin` } });
        const map = join(work, 'ext.map');
        const mapped = tool('partclone.extfs', ['-D', '-s', ext, '-O', map, '-L', join(work, 'partclone.log')]);
        expect(mapped.status, String(mapped.stderr)).toBe(0);
        expect(readFileSync(map, 'utf8')).toMatch(/^0x[0-9A-F]+\s+0x[0-9A-F]+\s+\+$/m);
        const min = tool('resize2fs', ['-P', ext]);
        expect(min.status, String(min.stderr)).toBe(0);
        expect(String(min.stdout)).toMatch(/minimum size of the filesystem: \d+/);
        const xfsGrow = tool('xfs_growfs', ['-V']);
        expect(xfsGrow.status, String(xfsGrow.stderr)).toBe(0);
        expect(String(xfsGrow.stdout)).toMatch(/^xfs_growfs version \d/m);
        const btrfs = tool('btrfs', ['--version']);
        expect(btrfs.status, String(btrfs.stderr)).toBe(0);
        expect(String(btrfs.stdout)).toMatch(/^btrfs-progs v\d/m);
      } finally {
        rmSync(work, { recursive: true, force: true });
      }
    });

    it('maps no file from outside the tree: node, its libraries and the addon all come from the initramfs', () => {
      const r = treeNode(['-e', `
        require(process.argv[1]);
        const files = require('node:fs').readFileSync('/proc/self/maps', 'utf8').split('\\n')
          .map((l) => l.split(/\\s+/)[5] ?? '').filter((f) => f.startsWith('/') && !f.startsWith('/dev/'));
        console.log(JSON.stringify([...new Set(files)]));
      `, join(root, 'opt/netclone/node_modules/zstd-napi/binding.js')]);
      expect(r.stderr).toBe('');
      const mapped = JSON.parse(String(r.stdout)) as string[];
      expect(mapped).toContain(join(root, 'opt/netclone/node_modules/zstd-napi/build/Release/binding.node'));
      expect(mapped).toContain(join(root, 'usr/bin/node'));
      expect(mapped.filter((f) => !f.startsWith(`${root}/`))).toEqual([]);
    });
  });
});
