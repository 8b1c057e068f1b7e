import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { ImageNotFoundError, ImageStore } from '../../src/imaging/image-store.js';
import { importStream } from '../../src/imaging/image-import.js';
import { describeImage } from '../../src/imaging/image-details.js';
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
    const { partitionTable, partitionError, ...rest } = d;
    expect(rest).toEqual(stored);
    expect(partitionError).toBeNull();
    expect(partitionTable).toEqual({
      scheme: 'mbr',
      sectorSize: 512,
      diskGuid: null,
      partitions: [
        { index: 1, typeId: '0x07', typeName: 'HPFS/NTFS/exFAT', name: '', firstLba: 2048, lastLba: 6143, startBytes: MiB, sizeBytes: 2 * MiB, bootable: true, filesystem: 'ntfs' },
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
});
