/**
 * The issue-12 disk builders and checker: the built disks pass checkDisk, their free space is dirty, and the
 * checker catches a changed byte in a file, a changed GUID or signature, a partition not where it should be,
 * and a grown disk whose GPT backup still sits in the middle.
 */
import { copyFile, mkdtemp, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from './run.js';
import {
  buildLinuxDisk,
  buildTargetDisk,
  buildWindowsDisk,
  checkDisk,
  diskGuidsOf,
  extractPartition,
  flipByte,
  GPT_TYPES,
  locateFileData,
  nonZeroBlocks,
  seededGuid,
  type BuiltDisk,
  type BuiltPartition,
} from './real-disks.js';

const MiB = 1024 * 1024;

async function must(cmd: string, args: readonly string[], input?: string): Promise<string> {
  const r = await run(cmd, args, { input });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

function part(disk: BuiltDisk, index: number): BuiltPartition {
  const p = disk.partitions.find((q) => q.index === index);
  if (!p) throw new Error(`no partition ${index}`);
  return p;
}

function fileBytes(p: BuiltPartition): number {
  return p.files.reduce((n, f) => n + f.data.length, 0);
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'real-disks-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('buildWindowsDisk', () => {
  let win: BuiltDisk;
  beforeAll(async () => {
    win = await buildWindowsDisk(dir, { sizeMiB: 512, seed: 11, dataMiB: 64 });
  });

  it('builds ESP, MSR, C: and Recovery at the end, 1 MiB aligned, with the GUIDs it reports', async () => {
    expect(win.scheme).toBe('gpt');
    expect(win.size).toBe(512 * MiB);
    expect(win.partitions.map((p) => [p.index, p.fs, p.label, p.typeId])).toEqual([
      [1, 'vfat', 'SYSTEM', GPT_TYPES.esp],
      [2, 'msr', null, GPT_TYPES.msr],
      [3, 'ntfs', 'Windows', GPT_TYPES.basicData],
      [4, 'ntfs', 'Recovery', GPT_TYPES.winRe],
    ]);
    for (const p of win.partitions) expect(p.startBytes % MiB).toBe(0);
    const rec = part(win, 4);
    expect(rec.startBytes + rec.sizeBytes).toBe(win.size - MiB);
    expect(fileBytes(part(win, 3))).toBe(64 * MiB);
    expect(part(win, 1).files.map((f) => f.path)).toContain('/EFI/BOOT/BOOTX64.EFI');
    expect(win.usedBytes).toBe(win.partitions.reduce((n, p) => n + fileBytes(p), 0));
    const ids = await diskGuidsOf(win.path);
    expect(ids.diskGuid).toBe(win.diskGuid);
    expect([...ids.partitionGuids.entries()]).toEqual(win.partitions.map((p) => [p.index, p.guid]));
    expect(new Set(win.partitions.map((p) => p.guid)).size).toBe(4);
  });

  it('passes checkDisk as built', async () => {
    await checkDisk(win.path, win);
  });

  it('leaves the free space of C: dirty: nearly every 4 KiB block is non-zero, far beyond its files', async () => {
    const c = part(win, 3);
    const dirty = await nonZeroBlocks(win.path, c.startBytes, c.sizeBytes);
    const blocks = c.sizeBytes / 4096;
    expect(fileBytes(c)).toBeLessThan(c.sizeBytes * 0.2);
    expect(dirty).toBeGreaterThan(blocks * 0.95);
    const gap = await nonZeroBlocks(win.path, 34 * 512, MiB - 34 * 512, 512);
    expect(gap).toBe((MiB - 34 * 512) / 512);
  });

  it('catches one changed byte in a file on C:, naming the file', async () => {
    const bad = join(dir, 'win-flipped.img');
    await copyFile(win.path, bad);
    await flipByte(bad, await locateFileData(bad, part(win, 3), '/hiberfil.sys'));
    await expect(checkDisk(bad, win)).rejects.toThrow(/partition 3 \(ntfs "Windows"\): \/hiberfil\.sys differs/);
    await rm(bad);
  });

  it('catches a changed byte in the MSR and in a file on the ESP', async () => {
    const bad = join(dir, 'win-msr.img');
    await copyFile(win.path, bad);
    await flipByte(bad, part(win, 2).startBytes + 12345);
    await expect(checkDisk(bad, win)).rejects.toThrow(/partition 2 \(msr\): its bytes differ/);
    await flipByte(bad, part(win, 2).startBytes + 12345);
    await flipByte(bad, await locateFileData(bad, part(win, 1), '/EFI/BOOT/BOOTX64.EFI'));
    await expect(checkDisk(bad, win)).rejects.toThrow(/partition 1 \(vfat "SYSTEM"\): \/EFI\/BOOT\/BOOTX64\.EFI differs/);
    await rm(bad);
  });

  it('catches a changed partition GUID, disk GUID and filesystem serial', async () => {
    const bad = join(dir, 'win-guid.img');
    await copyFile(win.path, bad);
    const other = seededGuid(999, 'other');
    await must('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', '--part-uuid', bad, '4', other]);
    await expect(checkDisk(bad, win)).rejects.toThrow(`partition 4 (ntfs "Recovery") has GUID ${other}, built ${part(win, 4).guid}`);
    await must('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', '--part-uuid', bad, '4', part(win, 4).guid ?? '']);
    await must('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', '--disk-id', bad, other]);
    await expect(checkDisk(bad, win)).rejects.toThrow(`disk GUID is ${other}, built ${win.diskGuid}`);
    await rm(bad);

    const c = part(win, 3);
    const copy = join(dir, 'c.img');
    await extractPartition(win.path, c.startBytes, c.sizeBytes, copy);
    await must('ntfslabel', ['--new-serial=0123456789ABCDEF', copy]);
    const bad2 = join(dir, 'win-serial.img');
    await copyFile(win.path, bad2);
    await must('dd', [`if=${copy}`, `of=${bad2}`, 'bs=1M', `seek=${c.startBytes / MiB}`, 'conv=notrunc', 'status=none']);
    await expect(checkDisk(bad2, win)).rejects.toThrow(`partition 3 (ntfs "Windows"): filesystem UUID is 0123456789ABCDEF, built ${c.uuid}`);
    await rm(bad2);
    await rm(copy);
  });

  it('checks a grown disk against the placement it is given, and rejects its GPT backup left in the middle', async () => {
    const big = join(dir, 'win-big.img');
    await copyFile(win.path, big);
    const bigSize = win.size + 256 * MiB;
    await truncate(big, bigSize);
    await expect(checkDisk(big, win)).rejects.toThrow(/sgdisk -v does not find the GPT clean/);

    // What a deploy onto a larger disk does: Recovery moves to the new end with its content, C: grows into the
    // space (ntfsresize, which leaves the volume marked for chkdsk), the table is rewritten for the new size.
    const c = part(win, 3);
    const rec = part(win, 4);
    const newRecStart = bigSize - MiB - rec.sizeBytes;
    const newCSize = newRecStart - c.startBytes;
    const recCopy = join(dir, 'rec.img');
    await extractPartition(big, rec.startBytes, rec.sizeBytes, recCopy);
    await must('dd', [`if=${recCopy}`, `of=${big}`, 'bs=1M', `seek=${newRecStart / MiB}`, 'conv=notrunc', 'status=none']);
    const cCopy = join(dir, 'c-grown.img');
    await extractPartition(big, c.startBytes, c.sizeBytes, cCopy);
    await truncate(cCopy, newCSize);
    await must('ntfsresize', ['-f', '-f', '--no-progress-bar', '-s', String(newCSize), cCopy]);
    await must('dd', [`if=${cCopy}`, `of=${big}`, 'bs=1M', `seek=${c.startBytes / MiB}`, 'conv=notrunc', 'status=none']);
    const dump = (await must('sfdisk', ['-d', big]))
      .split('\n')
      .filter((l) => !l.startsWith('last-lba:'))
      .map((l) => (l.startsWith(`${big}4 `) ? l.replace(/start=\s*\d+/, `start=${newRecStart / 512}`) : l))
      .map((l) => (l.startsWith(`${big}3 `) ? l.replace(/size=\s*\d+/, `size=${newCSize / 512}`) : l))
      .join('\n');
    await must('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', big], dump);
    await expect(checkDisk(big, win)).rejects.toThrow(`partition 3 (ntfs "Windows") is at ${c.startBytes}+${newCSize} bytes, expected ${c.startBytes}+${c.sizeBytes}`);
    const placement = new Map([
      [3, { startBytes: c.startBytes, sizeBytes: newCSize }],
      [4, { startBytes: newRecStart, sizeBytes: rec.sizeBytes }],
    ]);
    await checkDisk(big, win, { placement });
    await rm(big);
    await rm(recCopy);
    await rm(cCopy);
  });

  it('catches an NTFS volume its check finds not clean (a damaged alternate boot sector)', async () => {
    const bad = join(dir, 'win-unclean.img');
    await copyFile(win.path, bad);
    const c = part(win, 3);
    await flipByte(bad, c.startBytes + c.sizeBytes - 512 + 3);
    await expect(checkDisk(bad, win)).rejects.toThrow(/partition 3 \(ntfs "Windows"\): the filesystem check finds it not clean/);
    await rm(bad);
  });
});

describe('buildTargetDisk', () => {
  it('is dirty from end to end and holds no partition table', async () => {
    const target = await buildTargetDisk(dir, { sizeMiB: 8, seed: 13 });
    expect(await nonZeroBlocks(target, 0, 8 * MiB)).toBe((8 * MiB) / 4096);
    await expect(checkDisk(target, { path: target, size: 8 * MiB, scheme: 'mbr', diskGuid: null, partitions: [], usedBytes: 0 })).rejects.toThrow(/sfdisk -J cannot read a partition table/);
    await rm(target);
  });
});

describe('buildLinuxDisk', () => {
  let lin: BuiltDisk;
  beforeAll(async () => {
    lin = await buildLinuxDisk(dir, { sizeMiB: 384, seed: 12, dataMiB: 48 });
  });

  it('builds ext4 and swap at the end on MBR with a fixed signature', async () => {
    expect(lin.scheme).toBe('mbr');
    expect(lin.diskGuid).toMatch(/^[0-9a-f]{8}$/);
    expect(lin.partitions.map((p) => [p.index, p.fs, p.label, p.typeId, p.bootable, p.guid])).toEqual([
      [1, 'ext4', 'rootfs', '0x83', true, null],
      [2, 'swap', 'swap', '0x82', false, null],
    ]);
    const swap = part(lin, 2);
    expect(swap.startBytes + swap.sizeBytes).toBe(lin.size);
    expect(part(lin, 1).files.some((f) => f.path.split('/').length > 3)).toBe(true);
    expect((await diskGuidsOf(lin.path)).diskGuid).toBe(lin.diskGuid);
  });

  it('passes checkDisk as built, with dirty free space in the ext4 partition', async () => {
    await checkDisk(lin.path, lin);
    const root = part(lin, 1);
    const dirty = await nonZeroBlocks(lin.path, root.startBytes, root.sizeBytes);
    expect(fileBytes(root)).toBeLessThan(root.sizeBytes * 0.2);
    expect(dirty).toBeGreaterThan((root.sizeBytes / 4096) * 0.9);
  });

  it('catches a changed byte in an ext4 file, a changed signature and a changed swap UUID', async () => {
    const bad = join(dir, 'lin-bad.img');
    await copyFile(lin.path, bad);
    const at = await locateFileData(bad, part(lin, 1), '/var/lib/app/data.bin');
    await flipByte(bad, at);
    await expect(checkDisk(bad, lin)).rejects.toThrow(/partition 1 \(ext4 "rootfs"\): \/var\/lib\/app\/data\.bin differs/);
    await flipByte(bad, at);

    await must('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', '--disk-id', bad, '0x0badf00d']);
    await expect(checkDisk(bad, lin)).rejects.toThrow(`disk signature is 0badf00d, built ${lin.diskGuid}`);
    await must('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', '--disk-id', bad, `0x${lin.diskGuid}`]);
    await checkDisk(bad, lin);

    const swap = part(lin, 2);
    const swapCopy = join(dir, 'swap.img');
    await extractPartition(bad, swap.startBytes, swap.sizeBytes, swapCopy);
    const other = seededGuid(998, 'swap').toLowerCase();
    await must('mkswap', ['-U', other, '-L', 'swap', swapCopy]);
    await must('dd', [`if=${swapCopy}`, `of=${bad}`, 'bs=1M', `seek=${swap.startBytes / MiB}`, 'conv=notrunc', 'status=none']);
    await expect(checkDisk(bad, lin)).rejects.toThrow(`partition 2 (swap "swap"): filesystem UUID is ${other}, built ${swap.uuid}`);
    await rm(bad);
    await rm(swapCopy);
  });

  it('catches an ext4 filesystem its check finds not clean (a wrong free-blocks count, which e2fsck -n reports but exits 0 on)', async () => {
    const root = part(lin, 1);
    const copy = join(dir, 'root.img');
    await extractPartition(lin.path, root.startBytes, root.sizeBytes, copy);
    await must('debugfs', ['-w', '-R', 'ssv free_blocks_count 7', copy]);
    const bad = join(dir, 'lin-unclean.img');
    await copyFile(lin.path, bad);
    await must('dd', [`if=${copy}`, `of=${bad}`, 'bs=1M', `seek=${root.startBytes / MiB}`, 'conv=notrunc', 'status=none']);
    await expect(checkDisk(bad, lin)).rejects.toThrow(/partition 1 \(ext4 "rootfs"\): the filesystem check finds it not clean[^]*Free blocks count wrong/);
    await rm(bad);
    await rm(copy);
  });
});
