import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importFile } from '../../src/imaging/image-import.js';
import { describeImage } from '../../src/imaging/image-details.js';
import { crc32, parseGptHeader, parseMbr, readPartitionTable, sniffFilesystem, type ReadFn } from '../../src/imaging/partitions.js';
import { nullLogger } from '../../src/lib/log.js';
import { tempDir } from './helpers.js';

const MiB = 1024 * 1024;

function fileReader(buf: Buffer): ReadFn {
  return async (o, l) => {
    if (o < 0 || o + l > buf.length) throw new RangeError('read past end');
    return buf.subarray(o, o + l);
  };
}

describe('partition tables from real tools', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  /** A 64 MiB GPT disk made by sfdisk, with ext4 and swap inside; the tests read it and never change it. */
  let gptImg: string;
  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('parts'));
    gptImg = join(dir, 'gpt.img');
    execFileSync('truncate', ['-s', '64M', gptImg]);
    execFileSync('sfdisk', ['-q', gptImg], { input: 'label: gpt\nsize=8MiB, type=U, name="EFI"\nsize=40MiB, type=L, name="root"\ntype=S, name="swap"\n' });
    execFileSync('mkfs.ext4', ['-F', '-q', '-E', `offset=${18432 * 512}`, gptImg, '40M']);
    const swap = join(dir, 'swap.img');
    execFileSync('truncate', ['-s', `${28672 * 512}`, swap]);
    execFileSync('mkswap', ['-q', swap]);
    execFileSync('dd', [`if=${swap}`, `of=${gptImg}`, 'bs=512', `seek=100352`, 'conv=notrunc', 'status=none']);
  });
  afterAll(async () => cleanup());

  it('reads a GPT made by sfdisk with ext4 and swap inside, through the store', async () => {
    const store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger() });
    try {
      await importFile(store, 'gpt', gptImg);
      const d = await describeImage(store, 'gpt');
      expect(d.partitionError).toBeNull();
      const t = d.partitionTable!;
      expect(t.scheme).toBe('gpt');
      expect(t.partitions.map((p) => [p.index, p.typeName, p.name, p.firstLba, p.lastLba, p.sizeBytes, p.filesystem])).toEqual([
        [1, 'EFI System', 'EFI', 2048, 18431, 8 * MiB, null],
        [2, 'Linux filesystem', 'root', 18432, 100351, 40 * MiB, 'ext4'],
        [3, 'Linux swap', 'swap', 100352, 129023, 14 * MiB, 'swap'],
      ]);
    } finally {
      await store.close();
    }
  });

  it('rejects a GPT whose header was damaged, and one with hostile entry counts', async () => {
    const img = await readFile(gptImg);
    const bad = Buffer.from(img);
    bad[512 + 60] ^= 0xff; // disk GUID byte: header CRC no longer matches
    await expect(readPartitionTable(512, bad.length, fileReader(bad))).rejects.toThrow(/GPT header CRC mismatch/);

    // A header that is internally consistent (CRC recomputed) but declares 2^32-1 entries or size 0.
    const forge = (count: number, size: number, entriesLba = 2n): Buffer => {
      const h = Buffer.from(img.subarray(512, 1024));
      h.writeUInt32LE(count, 80);
      h.writeUInt32LE(size, 84);
      h.writeBigUInt64LE(entriesLba, 72);
      h.writeUInt32LE(0, 16);
      h.writeUInt32LE(crc32(h.subarray(0, h.readUInt32LE(12))), 16);
      return h;
    };
    expect(() => parseGptHeader(forge(0xffffffff, 128), 512, img.length)).toThrow(/4294967295 entries/);
    expect(() => parseGptHeader(forge(128, 0), 512, img.length)).toThrow(/entry size 0/);
    expect(() => parseGptHeader(forge(128, 128, 1n << 40n), 512, img.length)).toThrow(/past the end/);
    // Entry past the end of the disk: same table read as if the disk were 32 MiB.
    await expect(readPartitionTable(512, 32 * MiB, fileReader(img.subarray(0, 32 * MiB)))).rejects.toThrow(/past the end/);
  });

  it('reads an MBR with primary, extended and logical partitions', async () => {
    const img = join(dir, 'mbr.img');
    execFileSync('truncate', ['-s', '32M', img]);
    execFileSync('sfdisk', ['-q', img], {
      input: 'label: dos\nstart=2048, size=10MiB, type=83, bootable\nstart=22528, size=12MiB, type=5\nstart=24576, size=4MiB, type=82\nstart=34816, size=3MiB, type=7\n',
    });
    execFileSync('mkfs.ext4', ['-F', '-q', '-O', '^has_journal,^extent,^64bit,^flex_bg', '-E', `offset=${2048 * 512}`, img, '10M']);
    const buf = await readFile(img);
    const t = await readPartitionTable(512, buf.length, fileReader(buf));
    expect(t.scheme).toBe('mbr');
    expect(t.partitions.map((p) => [p.index, p.typeId, p.typeName, p.bootable, p.sizeBytes, p.filesystem])).toEqual([
      [1, '0x83', 'Linux', true, 10 * MiB, 'ext2'],
      [2, '0x05', 'Extended', false, 12 * MiB, null],
      [5, '0x82', 'Linux swap', false, 4 * MiB, null],
      [6, '0x07', 'HPFS/NTFS/exFAT', false, 3 * MiB, null],
    ]);
  });

  it('rejects MBR partitions past the end and EBR loops', async () => {
    const s0 = Buffer.alloc(512);
    s0[510] = 0x55;
    s0[511] = 0xaa;
    s0[446 + 4] = 0x83;
    s0.writeUInt32LE(2048, 446 + 8);
    s0.writeUInt32LE(0xffffffff, 446 + 12);
    expect(parseMbr(s0)).toHaveLength(1);
    await expect(readPartitionTable(512, MiB, fileReader(Buffer.concat([s0, Buffer.alloc(MiB - 512)])))).rejects.toThrow(/outside the 2048-sector disk/);
    const loop = Buffer.alloc(MiB);
    loop[510] = 0x55;
    loop[511] = 0xaa;
    loop[446 + 4] = 0x05;
    loop.writeUInt32LE(1, 446 + 8);
    loop.writeUInt32LE(100, 446 + 12);
    // EBR at LBA 1 points its "next" link back at itself.
    loop[512 + 510] = 0x55;
    loop[512 + 511] = 0xaa;
    loop[512 + 446 + 16 + 4] = 0x05;
    loop.writeUInt32LE(0, 512 + 446 + 16 + 8);
    loop.writeUInt32LE(10, 512 + 446 + 16 + 12);
    await expect(readPartitionTable(512, MiB, fileReader(loop))).rejects.toThrow(/loops/);
  });

  it('sniffs NTFS, FAT and xfs boot sectors and ignores blank space', async () => {
    const b = Buffer.alloc(68 * 1024);
    expect(sniffFilesystem(b)).toBeNull();
    b.write('NTFS    ', 3, 'latin1');
    expect(sniffFilesystem(b)).toBe('ntfs');
    const f = Buffer.alloc(4096);
    f.write('FAT32   ', 82, 'latin1');
    expect(sniffFilesystem(f)).toBe('vfat (FAT32)');
    const x = Buffer.alloc(512);
    x.write('XFSB', 0, 'latin1');
    expect(sniffFilesystem(x)).toBe('xfs');
    expect(sniffFilesystem(Buffer.alloc(3))).toBeNull();
  });

  it('looks for the GPT header at LBA 1 of the image\'s own sector size', async () => {
    // sfdisk cannot make a 4Kn table in a plain file; a 512-byte table read as 4Kn must fail clearly.
    const buf = await readFile(gptImg);
    await expect(readPartitionTable(4096, buf.length, fileReader(buf))).rejects.toThrow(/no "EFI PART" signature at LBA 1/);
  });
});
