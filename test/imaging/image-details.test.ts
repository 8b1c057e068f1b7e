import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { ImageNotFoundError, ImageStore } from '../../src/imaging/image-store.js';
import { importStream } from '../../src/imaging/image-import.js';
import { captureText, describeImage, layoutFreeBytes } from '../../src/imaging/image-details.js';
import { minDiskBytes } from '../../src/imaging/layout-plan.js';
import { commitWithLayout, windowsLikeDisk, windowsLikeLayout } from '../lib/layout-image.js';
import { nullLogger } from '../../src/lib/log.js';
import { tempDir } from './helpers.js';

const MiB = 1024 * 1024;

/** A 4 MiB disk with one MBR partition (type 0x07) at LBA 2048, `sectors` long, holding an NTFS boot sector. */
function mbrDisk(sectors: number): Buffer {
  const d = Buffer.alloc(4 * MiB);
  d[510] = 0x55;
  d[511] = 0xaa;
  d[446] = 0x80; // bootable
  d[446 + 4] = 0x07;
  d.writeUInt32LE(2048, 446 + 8);
  d.writeUInt32LE(sectors, 446 + 12);
  d.write('NTFS    ', 2048 * 512 + 3, 'latin1');
  return d;
}

describe('describeImage: store facts plus the partition table', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('details'));
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger() });
  });
  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('adds the partition table, read through the store, to exactly what show() reports', async () => {
    const disk = mbrDisk(4096);
    await importStream(store, 'win', Readable.from([disk]), disk.length, { source: 't' });
    const stored = await store.show('win');
    expect(stored).not.toHaveProperty('partitionTable');
    expect(stored).not.toHaveProperty('partitionError');
    const d = await describeImage(store, 'win');
    const { partitionTable, partitionError, layout, layoutError, fitsDiskBytes, ...rest } = d;
    expect(rest).toEqual(stored);
    expect(partitionError).toBeNull();
    // Imported: no layout, so it deploys only onto disks of its own size.
    expect(layout).toBeNull();
    expect(layoutError).toBeNull();
    expect(fitsDiskBytes).toBe(disk.length);
    expect(partitionTable).toEqual({
      scheme: 'mbr',
      sectorSize: 512,
      diskGuid: null,
      partitions: [
        { index: 1, typeId: '0x07', typeName: 'HPFS/NTFS/exFAT', name: '', firstLba: 2048, lastLba: 6143, startBytes: MiB, sizeBytes: 2 * MiB, bootable: true, guid: null, attributes: '128', filesystem: 'ntfs' },
      ],
    });
  });

  it('reads the newest version, and reports an unreadable table instead of throwing', async () => {
    const good = mbrDisk(4096);
    await importStream(store, 'pc', Readable.from([good]), good.length, { source: 'v1' });
    // The partition runs past the end of the 8192-sector disk.
    const bad = mbrDisk(8192);
    await importStream(store, 'pc', Readable.from([bad]), bad.length, { source: 'v2' });
    const d = await describeImage(store, 'pc');
    expect(d.latestVersion).toBe(2);
    expect(d.versions.map((v) => v.source)).toEqual(['v1', 'v2']);
    expect(d.partitionTable).toBeNull();
    expect(d.partitionError).toMatch(/MBR partition 1 .* lies outside the 8192-sector disk/);
  });

  it('a blank disk has no partition scheme; a missing image is not found', async () => {
    const blank = Buffer.alloc(2 * MiB);
    await importStream(store, 'blank', Readable.from([blank]), blank.length, { source: 't' });
    const d = await describeImage(store, 'blank');
    expect(d.partitionError).toBeNull();
    expect(d.partitionTable).toEqual({ scheme: 'none', sectorSize: 512, diskGuid: null, partitions: [] });
    await expect(describeImage(store, 'nope')).rejects.toBeInstanceOf(ImageNotFoundError);
  });

  it('adds the newest version\'s layout and the smallest disk it fits, from the layout', async () => {
    const disk = mbrDisk(4096);
    await importStream(store, 'pc', Readable.from([disk]), disk.length, { source: 'import' });
    const layout = windowsLikeLayout();
    await commitWithLayout(store, 'pc', windowsLikeDisk(layout), layout);
    const d = await describeImage(store, 'pc');
    expect(d.latestVersion).toBe(2);
    expect(d.layout).toEqual(layout);
    expect(d.layoutError).toBeNull();
    // C: (40 MiB, can shrink to 12 MiB) shrinks, the three partitions behind it (16 MiB) pack after it, plus the GPT backup area.
    expect(d.fitsDiskBytes).toBe(minDiskBytes(layout));
    expect(d.fitsDiskBytes).toBe((6 + 12 + 16) * MiB + 33 * 512);
    // The table read from the disk agrees with the layout.
    expect(d.partitionTable?.scheme).toBe('gpt');
    expect(d.partitionTable?.diskGuid).toBe(layout.diskGuid);
    expect(d.partitionTable?.partitions.map((p) => p.typeName)).toEqual(['EFI System', 'Microsoft reserved', 'Microsoft basic data', 'Microsoft basic data', 'Linux swap', 'Windows recovery environment']);
    expect(layoutFreeBytes(layout)).toBe(39 * MiB);
    expect(layout.partitions.map(captureText)).toEqual([
      'used blocks', 'whole', 'used blocks', `whole: ${layout.partitions[3].note}`, 'swap: recreated on restore', 'used blocks',
    ]);
  });

  it('the layout is the newest version\'s: a version without one after it is restored at its own size', async () => {
    const layout = windowsLikeLayout();
    await commitWithLayout(store, 'pc', windowsLikeDisk(layout), layout);
    expect((await describeImage(store, 'pc')).layout).not.toBeNull();
    const plain = mbrDisk(4096);
    await importStream(store, 'pc', Readable.from([plain]), plain.length, { source: 'import' });
    const d = await describeImage(store, 'pc');
    expect(d.layout).toBeNull();
    expect(d.layoutError).toBeNull();
    expect(d.fitsDiskBytes).toBe(plain.length);
  });

  it('reports a damaged layout file instead of throwing, and falls back to the image size', async () => {
    const layout = windowsLikeLayout();
    await commitWithLayout(store, 'pc', windowsLikeDisk(layout), layout);
    await writeFile(join(dir, 'store', 'images', 'pc', 'versions', '1.layout.json'), '{"scheme":"gpt"');
    const d = await describeImage(store, 'pc');
    expect(d.layout).toBeNull();
    expect(d.layoutError).toMatch(/1\.layout\.json is damaged/);
    expect(d.fitsDiskBytes).toBe(layout.diskSize);
    expect(d.partitionTable?.scheme).toBe('gpt');
  });

  it('counts a free run through a short last chunk only as far as the disk goes', () => {
    const layout = { ...windowsLikeLayout(), diskSize: 64 * MiB - 4096, freeChunks: [[60, 4]] as const };
    expect(layoutFreeBytes(layout)).toBe(4 * MiB - 4096);
    expect(layoutFreeBytes({ ...layout, freeChunks: [[10, 2]] })).toBe(2 * MiB);
  });
});
