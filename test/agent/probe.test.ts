/**
 * The probe on real disks (test/lib/real-disks.ts: filesystems made by their own tools, free space full
 * of random bytes). The proof that the used map is right: a disk rebuilt from only the used ranges of
 * every chunk, zeros elsewhere, still checks clean and holds every file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { copyFile, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseDiskLayout, type DiskLayout } from '../../src/imaging/disk-layout.js';
import { mbrDiskSignature, probeDisk } from '../../src/agent/probe.js';
import { BITLOCKER_NOTE, UNKNOWN_NOTE } from '../../src/agent/fs-facts.js';
import type { UsedMap } from '../../src/agent/used-map.js';
import { buildLinuxDisk, buildWindowsDisk, checkDisk, seededBytes, type BuiltDisk } from '../lib/real-disks.js';

const MiB = 1024 * 1024;
const CHUNK = MiB;

/** Loop devices still attached to `file` (the probe must detach every one it attaches). */
function loopsOn(file: string): string {
  return execFileSync('losetup', ['-j', file]).toString().trim();
}

/**
 * A new disk file holding only what the capture would read: the used ranges of each chunk that is not
 * free, zeros everywhere else. Returns the bytes copied.
 */
async function rebuildFromUsed(from: string, to: string, used: UsedMap): Promise<number> {
  const src = await open(from, 'r');
  const dst = await open(to, 'w');
  let copied = 0;
  try {
    await dst.truncate(used.diskSize);
    for (let c = 0; c < used.chunkCount; c++) {
      if (used.isFree(c)) {
        expect(used.usedIn(c)).toEqual([]);
        continue;
      }
      for (const [s, e] of used.usedIn(c)) {
        const b = Buffer.alloc(e - s);
        const { bytesRead } = await src.read(b, 0, b.length, s);
        expect(bytesRead).toBe(b.length);
        await dst.write(b, 0, b.length, s);
        copied += b.length;
      }
    }
  } finally {
    await dst.close();
    await src.close();
  }
  return copied;
}

/** What a deploy does for a swap partition the capture did not send: mkswap with its UUID and label. */
async function recreateSwap(disk: string, layout: DiskLayout, dir: string): Promise<void> {
  for (const p of layout.partitions.filter((q) => q.mode === 'swap')) {
    const file = join(dir, `swap${p.index}.img`);
    await writeFile(file, Buffer.alloc(0));
    execFileSync('truncate', ['-s', String(p.sizeBytes), file]);
    execFileSync('mkswap', ['-U', p.uuid!, '-L', p.label!, file], { stdio: 'ignore' });
    execFileSync('dd', [`if=${file}`, `of=${disk}`, 'bs=1M', `seek=${p.startBytes}`, 'oflag=seek_bytes', 'conv=notrunc', 'status=none']);
  }
}

describe('probeDisk on real disks', () => {
  let dir: string;
  let windows: BuiltDisk;
  let linux: BuiltDisk;
  const warnings: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'netclone-probe-'));
    windows = await buildWindowsDisk(dir, { sizeMiB: 256, seed: 1201, dataMiB: 24 });
    linux = await buildLinuxDisk(dir, { sizeMiB: 160, seed: 1202, dataMiB: 16 });
  }, 300_000);
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('GPT Windows-like disk: used blocks of FAT and NTFS, the MSR whole, free chunks although free space is random; rebuilt from the used ranges it checks clean', async () => {
    const probe = await probeDisk(windows.path, windows.size, 512, CHUNK, warn);
    expect(loopsOn(windows.path)).toBe('');
    expect(probe).not.toBeNull();
    const { layout, used } = probe!;
    expect(parseDiskLayout(JSON.parse(JSON.stringify(layout)))).toEqual(layout);
    expect(layout).toMatchObject({ scheme: 'gpt', sectorSize: 512, diskSize: windows.size, diskGuid: windows.diskGuid, chunkSize: CHUNK });
    expect(layout.partitions.map((p) => [p.index, p.typeId, p.guid, p.name, p.startBytes, p.sizeBytes])).toEqual(
      windows.partitions.map((p) => [p.index, p.typeId, p.guid, p.name, p.startBytes, p.sizeBytes]),
    );
    const [esp, msr, c, recovery] = layout.partitions;
    expect(esp).toMatchObject({ filesystem: 'vfat', label: 'SYSTEM', uuid: windows.partitions[0].uuid, mode: 'used-blocks', minSizeBytes: null, note: null });
    expect(msr).toMatchObject({ filesystem: null, mode: 'whole', usedBytes: null, note: UNKNOWN_NOTE });
    expect(c).toMatchObject({ filesystem: 'ntfs', label: 'Windows', uuid: windows.partitions[2].uuid, mode: 'used-blocks', note: null });
    expect(recovery).toMatchObject({ filesystem: 'ntfs', label: 'Recovery', mode: 'used-blocks', attributes: String((1n << 63n) | 1n) });
    expect(esp.attributes).toBe('0');

    // C: holds dataMiB of files: its used bytes are about that, not its size.
    const data = windows.partitions[2].files.reduce((n, f) => n + f.data.length, 0);
    expect(c.usedBytes!).toBeGreaterThanOrEqual(data);
    expect(c.usedBytes!).toBeLessThan(data + 8 * MiB);
    expect(c.usedBytes!).toBeLessThan(c.sizeBytes / 3);
    expect(c.minSizeBytes!).toBeGreaterThanOrEqual(data);
    expect(c.minSizeBytes!).toBeLessThan(c.sizeBytes);

    // Used = everything except the free blocks the maps name.
    const mapped = layout.partitions.filter((p) => p.mode === 'used-blocks');
    const unmappedBytes = windows.size - mapped.reduce((n, p) => n + p.sizeBytes, 0);
    expect(used.usedBytes).toBe(unmappedBytes + mapped.reduce((n, p) => n + p.usedBytes!, 0));
    expect(layout.freeChunks).toEqual(used.freeRuns());
    const free = layout.freeChunks.reduce((n, [, k]) => n + k, 0);
    expect(free).toBeGreaterThan(used.chunkCount / 2);

    const rebuilt = join(dir, 'windows-rebuilt.img');
    const copied = await rebuildFromUsed(windows.path, rebuilt, used);
    expect(copied).toBe(used.usedBytes);
    expect(copied).toBeLessThan(windows.size / 2);
    await checkDisk(rebuilt, windows);
    await rm(rebuilt);
    expect(warnings).toEqual([]);
  }, 300_000);

  it('MBR disk: ext4 used blocks with its minimum size, swap not sent with UUID and label; rebuilt and swap recreated it checks clean', async () => {
    const probe = await probeDisk(linux.path, linux.size, 512, CHUNK, warn);
    expect(loopsOn(linux.path)).toBe('');
    const { layout, used } = probe!;
    expect(parseDiskLayout(JSON.parse(JSON.stringify(layout)))).toEqual(layout);
    expect(layout.scheme).toBe('mbr');
    expect(layout.diskGuid).toBe(linux.diskGuid!.toUpperCase());
    const [root, swap] = layout.partitions;
    expect(root).toMatchObject({ index: 1, typeId: '0x83', guid: null, name: '', attributes: '128', filesystem: 'ext4', label: 'rootfs', uuid: linux.partitions[0].uuid, mode: 'used-blocks', note: null });
    expect(swap).toMatchObject({ index: 2, typeId: '0x82', attributes: '0', filesystem: 'swap', label: 'swap', uuid: linux.partitions[1].uuid, mode: 'swap', usedBytes: null, note: null });
    const data = linux.partitions[0].files.reduce((n, f) => n + f.data.length, 0);
    expect(root.usedBytes!).toBeGreaterThanOrEqual(data);
    expect(root.usedBytes!).toBeLessThan(data + 16 * MiB);
    expect(root.minSizeBytes!).toBeGreaterThanOrEqual(data);
    expect(root.minSizeBytes!).toBeLessThan(root.sizeBytes);
    // No byte of the swap partition is read.
    for (let c = swap.startBytes / CHUNK; c < (swap.startBytes + swap.sizeBytes) / CHUNK; c++) expect(used.isFree(c)).toBe(true);

    const rebuilt = join(dir, 'linux-rebuilt.img');
    await rebuildFromUsed(linux.path, rebuilt, used);
    await recreateSwap(rebuilt, layout, dir);
    await checkDisk(rebuilt, linux);
    await rm(rebuilt);
    expect(warnings).toEqual([]);
  }, 300_000);

  it('a partition with the BitLocker signature is sent whole with the note, through a block device too', async () => {
    const disk = join(dir, 'bitlocker.img');
    await copyFile(windows.path, disk);
    const recovery = windows.partitions[3];
    const fh = await open(disk, 'r+');
    await fh.write(Buffer.from('-FVE-FS-', 'latin1'), 0, 8, recovery.startBytes + 3);
    await fh.close();
    // The disk as a block device: the partition is read through a loop device over it (no partition nodes here).
    const dev = execFileSync('losetup', ['-r', '-f', '--show', disk]).toString().trim();
    let probe: Awaited<ReturnType<typeof probeDisk>>;
    try {
      probe = await probeDisk(dev, windows.size, 512, CHUNK, warn);
    } finally {
      execFileSync('losetup', ['-d', dev]);
    }
    expect(loopsOn(disk)).toBe('');
    const { layout, used } = probe!;
    expect(layout.partitions[3]).toMatchObject({ filesystem: 'bitlocker', mode: 'whole', usedBytes: null, minSizeBytes: null, note: BITLOCKER_NOTE });
    expect(layout.partitions[2]).toMatchObject({ filesystem: 'ntfs', mode: 'used-blocks' });
    expect(used.usedIn(recovery.startBytes / CHUNK)).toEqual([[recovery.startBytes, recovery.startBytes + CHUNK]]);
    for (let c = recovery.startBytes / CHUNK; c < (recovery.startBytes + recovery.sizeBytes) / CHUNK; c++) expect(used.isFree(c)).toBe(false);
    expect(warnings).toEqual([]);
  }, 300_000);

  it('MBR with logical partitions: the extended container is kept as an entry, its EBRs read, the logical ext4 and swap probed', async () => {
    const disk = join(dir, 'logical.img');
    await writeFile(disk, seededBytes(1203, 'logical-disk', 100 * MiB));
    execFileSync('sfdisk', ['-q', disk], { input: 'label: dos\nlabel-id: 0x12345678\nstart=2048, size=20MiB, type=83\nstart=43008, type=5\nsize=40MiB, type=83\nsize=16MiB, type=82\n' });
    const tree = join(dir, 'logical-tree');
    const file = seededBytes(1203, 'logical-file', 3 * MiB + 123);
    execFileSync('mkdir', ['-p', tree]);
    await writeFile(join(tree, 'file.bin'), file);
    execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'logical', '-E', `nodiscard,offset=${45056 * 512}`, '-d', tree, disk, '40M']);
    const swapFile = join(dir, 'logical-swap.img');
    execFileSync('truncate', ['-s', '16M', swapFile]);
    execFileSync('mkswap', ['-U', 'a1b2c3d4-0000-4000-8000-000000000006', '-L', 'lswap', swapFile], { stdio: 'ignore' });
    execFileSync('dd', [`if=${swapFile}`, `of=${disk}`, 'bs=1M', `seek=${129024 * 512}`, 'oflag=seek_bytes', 'conv=notrunc', 'status=none']);

    const probe = await probeDisk(disk, 100 * MiB, 512, CHUNK, warn);
    expect(loopsOn(disk)).toBe('');
    const { layout, used } = probe!;
    expect(parseDiskLayout(JSON.parse(JSON.stringify(layout)))).toEqual(layout);
    expect(layout.diskGuid).toBe('12345678');
    expect(layout.partitions.map((p) => [p.index, p.typeId, p.filesystem, p.mode])).toEqual([
      [1, '0x83', null, 'whole'],
      [2, '0x05', null, 'whole'],
      [5, '0x83', 'ext4', 'used-blocks'],
      [6, '0x82', 'swap', 'swap'],
    ]);
    expect(layout.partitions[1].note).toMatch(/extended partition/);
    expect(layout.partitions[3]).toMatchObject({ uuid: 'a1b2c3d4-0000-4000-8000-000000000006', label: 'lswap' });
    // Both EBRs are read although they lie in the container, between the logical partitions.
    for (const ebr of [43008 * 512, 126976 * 512]) {
      expect(used.usedIn(Math.floor(ebr / CHUNK)).some(([s, e]) => s <= ebr && e >= ebr + 512)).toBe(true);
    }
    // Partition 1 holds random bytes, no filesystem: read whole.
    for (let c = 1; c < 21; c++) expect(used.usedIn(c)).toEqual([[c * CHUNK, (c + 1) * CHUNK]]);

    const rebuilt = join(dir, 'logical-rebuilt.img');
    await rebuildFromUsed(disk, rebuilt, used);
    const table = (d: string): string => execFileSync('sfdisk', ['-d', d]).toString().replaceAll(d, 'DISK');
    expect(table(rebuilt)).toBe(table(disk));
    const part = join(dir, 'logical-part.img');
    execFileSync('dd', [`if=${rebuilt}`, `of=${part}`, 'bs=1M', `skip=${45056 * 512}`, 'count=40', 'iflag=skip_bytes', 'status=none']);
    execFileSync('e2fsck', ['-fn', part], { stdio: 'ignore' });
    const back = join(dir, 'logical-back.bin');
    execFileSync('debugfs', ['-R', `dump /file.bin ${back}`, part], { stdio: 'ignore' });
    expect((await readFile(back)).equals(file)).toBe(true);
    expect(warnings).toEqual([]);
  }, 300_000);

  it('without losetup the partitions of a disk file are sent whole, each with a warning and a note naming it', async () => {
    const path = process.env.PATH;
    const seen: string[] = [];
    let probe: Awaited<ReturnType<typeof probeDisk>>;
    try {
      process.env.PATH = join(dir, 'no-tools');
      probe = await probeDisk(linux.path, linux.size, 512, CHUNK, (m) => seen.push(m));
    } finally {
      process.env.PATH = path;
    }
    const { layout, used } = probe!;
    expect(layout.partitions.map((p) => [p.filesystem, p.mode, p.label])).toEqual([
      ['ext4', 'whole', null],
      ['swap', 'whole', null],
    ]);
    for (const p of layout.partitions) expect(p.note).toBe('could not be examined (losetup is not installed (not found on PATH)): sent whole');
    expect(seen).toHaveLength(2);
    expect(seen[0]).toMatch(/^partition 1 of .* could not be examined, so it is sent whole: losetup is not installed/);
    expect(layout.freeChunks).toEqual([]);
    expect(used.usedBytes).toBe(linux.size);
  });

  it('a disk without a partition table gives null', async () => {
    const blank = join(dir, 'blank.img');
    execFileSync('truncate', ['-s', '8M', blank]);
    expect(await probeDisk(blank, 8 * MiB, 512, CHUNK, warn)).toBeNull();
  });

  it('reads the MBR disk signature as sfdisk shows it', () => {
    const s = Buffer.alloc(512);
    expect(mbrDiskSignature(s)).toBeNull();
    s.writeUInt32LE(0x1a2b3c4d, 440);
    expect(mbrDiskSignature(s)).toBe('1A2B3C4D');
  });
});
