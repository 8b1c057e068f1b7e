import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, rm, symlink, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BITLOCKER_NOTE,
  LUKS_NOTE,
  UNKNOWN_NOTE,
  hasBitLockerSignature,
  parseBlkidExport,
  parseDumpe2fsBlockSize,
  parseNtfsresizeMin,
  parseResize2fsMinBlocks,
  partcloneTrouble,
  partitionFacts,
} from '../../src/agent/fs-facts.js';
import { noise } from '../lib/prng.js';

const MiB = 1024 * 1024;

describe('fs-facts parsers', () => {
  it('reads blkid -o export, undoing its escapes', () => {
    expect(parseBlkidExport('DEVNAME=/dev/loop0\nLABEL=My\\ Disk\\=1\nUUID=39B508D750E6E149\nTYPE=ntfs\nUSAGE=filesystem\n')).toEqual({
      DEVNAME: '/dev/loop0',
      LABEL: 'My Disk=1',
      UUID: '39B508D750E6E149',
      TYPE: 'ntfs',
      USAGE: 'filesystem',
    });
    expect(() => parseBlkidExport('this is not blkid\n')).toThrow(/unexpected output line/);
  });

  it('reads the minimum sizes of ntfsresize and resize2fs/dumpe2fs', () => {
    expect(parseNtfsresizeMin('Space in use       : 8 MB (11.7%)\nCollecting resizing constraints ...\nYou might resize at 7856128 bytes or 8 MB (freeing 60 MB).\n')).toBe(7856128);
    expect(parseNtfsresizeMin('ERROR: volume is dirty\n')).toBeNull();
    expect(parseResize2fsMinBlocks('Estimated minimum size of the filesystem: 12432\n')).toBe(12432);
    expect(parseResize2fsMinBlocks('resize2fs: Bad magic number\n')).toBeNull();
    expect(parseDumpe2fsBlockSize('Block count:              49152\nBlock size:               1024\nFragment size:            1024\n')).toBe(1024);
    expect(parseDumpe2fsBlockSize('nothing\n')).toBeNull();
  });

  it('finds the BitLocker signature and partclone complaints', () => {
    const b = Buffer.alloc(16);
    b.write('-FVE-FS-', 3, 'latin1');
    expect(hasBitLockerSignature(b)).toBe(true);
    b.write('NTFS    ', 3, 'latin1');
    expect(hasBitLockerSignature(b)).toBe(false);
    expect(partcloneTrouble('Partclone v0.3.23 http://partclone.org\nStarting to map device (x) to domain log (y)\nFile system:  NTFS\r   Elapsed: 00:00:01\nCloned successfully.\n')).toBeNull();
    expect(partcloneTrouble('Partclone v0.3.23\nntfsclone-ng.c: NTFS Volume is scheduled for a check\nPartclone fail, please check /var/log/partclone.log !\n')).toBe('ntfsclone-ng.c: NTFS Volume is scheduled for a check');
  });
});

describe('fs-facts on real filesystems (partition files)', () => {
  let dir: string;
  const img = (name: string): string => join(dir, name);
  const warnings: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
  };
  const whole = (path: string, size: number) => partitionFacts(path, { startBytes: 0, sizeBytes: size }, warn);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'netclone-fsfacts-'));
    // Free space full of random bytes, as on a used PC; the filesystems leave it in place.
    const dirty = async (name: string, size: number): Promise<void> => writeFile(img(name), noise(size % 9973, size));
    await dirty('ntfs.img', 64 * MiB);
    execFileSync('mkntfs', ['-F', '-f', '-Q', '-L', 'Windows', img('ntfs.img')], { stdio: 'ignore' });
    await writeFile(img('data'), noise(77, 5 * MiB));
    execFileSync('ntfscp', ['-f', img('ntfs.img'), img('data'), '/data.bin'], { stdio: 'ignore' });
    await mkdir(img('tree'));
    await writeFile(join(img('tree'), 'file'), noise(78, 3 * MiB));
    await dirty('ext4.img', 48 * MiB);
    execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'rootfs', '-E', 'nodiscard', '-d', img('tree'), img('ext4.img')]);
    await dirty('swap.img', 8 * MiB);
    execFileSync('mkswap', ['-U', '11111111-2222-3333-4444-555555555555', '-L', 'swappy', img('swap.img')], { stdio: 'ignore' });
    await dirty('random.img', 4 * MiB);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('maps the used blocks of NTFS and ext4, with their minimum sizes', async () => {
    const n = await whole(img('ntfs.img'), 64 * MiB);
    expect(n).toMatchObject({ filesystem: 'ntfs', label: 'Windows', mode: 'used-blocks', note: null });
    expect(n.usedBytes).toBeGreaterThan(5 * MiB);
    expect(n.usedBytes).toBeLessThan(10 * MiB);
    expect(n.minSizeBytes).toBeGreaterThan(5 * MiB);
    expect(n.minSizeBytes).toBeLessThan(64 * MiB);
    expect(n.used!.reduce((s, [a, b]) => s + b - a, 0)).toBe(n.usedBytes);

    const e = await whole(img('ext4.img'), 48 * MiB);
    expect(e).toMatchObject({ filesystem: 'ext4', label: 'rootfs', mode: 'used-blocks', note: null });
    expect(e.usedBytes).toBeGreaterThan(3 * MiB);
    expect(e.usedBytes).toBeLessThan(20 * MiB);
    const blocks = Number(/minimum size of the filesystem: (\d+)/.exec(execFileSync('resize2fs', ['-P', img('ext4.img')], { stdio: ['ignore', 'pipe', 'ignore'] }).toString())![1]);
    expect(e.minSizeBytes).toBe(blocks * 1024);
    expect(warnings).toEqual([]);
  });

  it('partition offsets: the map is in disk offsets', async () => {
    const start = 5 * MiB;
    const e = await partitionFacts(img('ext4.img'), { startBytes: start, sizeBytes: 48 * MiB }, warn);
    expect(e.used![0][0]).toBe(start);
    expect(e.used![e.used!.length - 1][1]).toBeLessThanOrEqual(start + 48 * MiB);
  });

  it('swap: not sent, UUID and label kept', async () => {
    expect(await whole(img('swap.img'), 8 * MiB)).toEqual({
      filesystem: 'swap',
      label: 'swappy',
      uuid: '11111111-2222-3333-4444-555555555555',
      mode: 'swap',
      used: [],
      usedBytes: null,
      minSizeBytes: null,
      note: null,
    });
  });

  it('BitLocker, LUKS and unknown bytes are sent whole with a note', async () => {
    execFileSync('cp', [img('ntfs.img'), img('bitlocker.img')]);
    const fh = await open(img('bitlocker.img'), 'r+');
    await fh.write(Buffer.from('-FVE-FS-', 'latin1'), 0, 8, 3);
    await fh.close();
    expect(await whole(img('bitlocker.img'), 64 * MiB)).toMatchObject({ filesystem: 'bitlocker', mode: 'whole', used: null, usedBytes: null, note: BITLOCKER_NOTE });

    execFileSync('cp', [img('random.img'), img('luks.img')]);
    const luks = await open(img('luks.img'), 'r+');
    await luks.write(Buffer.from('LUKS\xba\xbe\x00\x01', 'latin1'), 0, 8, 0);
    await luks.write(Buffer.from('11111111-2222-3333-4444-555555555555\0', 'latin1'), 0, 37, 168);
    await luks.close();
    expect(await whole(img('luks.img'), 4 * MiB)).toMatchObject({ filesystem: 'luks', uuid: '11111111-2222-3333-4444-555555555555', mode: 'whole', note: LUKS_NOTE });

    expect(await whole(img('random.img'), 4 * MiB)).toMatchObject({ filesystem: null, mode: 'whole', used: null, note: UNKNOWN_NOTE });
  });

  it('a filesystem partclone calls dirty is sent whole, saying why', async () => {
    execFileSync('cp', [img('ext4.img'), img('dirty.img')]);
    execFileSync('debugfs', ['-w', '-R', 'ssv state 0', img('dirty.img')], { stdio: 'ignore' });
    const f = await whole(img('dirty.img'), 48 * MiB);
    expect(f).toMatchObject({ filesystem: 'ext4', label: 'rootfs', mode: 'whole', used: null, usedBytes: null });
    expect(f.note).toMatch(/^partclone\.extfs could not map the used blocks \(exit 1: .*not cleanly unmounted.*\): sent whole$/);
  });

  it('an NTFS volume scheduled for a check (as ntfsresize leaves it) is sent whole, saying why', async () => {
    execFileSync('cp', [img('ntfs.img'), img('ntfs-dirty.img')]);
    execFileSync('ntfsresize', ['-f', '-f', '-s', '50M', img('ntfs-dirty.img')], { stdio: 'ignore' });
    const f = await whole(img('ntfs-dirty.img'), 64 * MiB);
    expect(f).toMatchObject({ filesystem: 'ntfs', label: 'Windows', mode: 'whole', used: null, usedBytes: null, minSizeBytes: null });
    expect(f.note).toMatch(/^partclone\.ntfs could not map the used blocks \(exit 1: .*is scheduled for a check or it was shutdown uncleanly\. Please boot Windows or fix it by fsck\.\): sent whole$/);
  });

  it('a missing tool means "sent whole" with a note naming it, never a crash', async () => {
    const bin = img('bin');
    await mkdir(bin);
    await symlink(execFileSync('sh', ['-c', 'command -v blkid']).toString().trim(), join(bin, 'blkid'));
    const path = process.env.PATH;
    try {
      process.env.PATH = bin;
      expect(await whole(img('ext4.img'), 48 * MiB)).toMatchObject({ filesystem: 'ext4', mode: 'whole', note: 'partclone.extfs is not installed, so its used blocks are unknown: sent whole' });
      process.env.PATH = join(dir, 'nothing');
      expect(await whole(img('ext4.img'), 48 * MiB)).toMatchObject({ filesystem: null, mode: 'whole', note: 'blkid is not installed, so the filesystem is unknown: sent whole' });
    } finally {
      process.env.PATH = path;
    }
  });
});
