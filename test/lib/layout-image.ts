/**
 * A version with a disk layout (issue 12), committed the way the imaging agent commits a capture:
 * a chunk upload, the layout, then the chunk list. The disk is a small Windows-like GPT disk built
 * here byte by byte (ESP, MSR, C:, a BitLocker volume, swap, Recovery) whose layout says C: can
 * shrink, so the smallest disk it fits is well under its own size.
 */
import { createHash } from 'node:crypto';
import { CHUNK_HEADER_SIZE, ChunkCodecContext, maxChunkFileSize } from '../../src/imaging/chunk-format.js';
import { freeChunkTest, type DiskLayout, type LayoutPartition } from '../../src/imaging/disk-layout.js';
import type { ImageStore } from '../../src/imaging/image-store.js';
import { crc32 } from '../../src/imaging/partitions.js';
import type { VersionInfo } from '../../src/imaging/types.js';

const MiB = 1024 * 1024;
const SECTOR = 512;

export const GPT_TYPES = {
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  msr: 'E3C9E316-0B5C-4DB8-817D-F92DF00215AE',
  data: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  swap: '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
  recovery: 'DE94BBA4-06D1-4D40-A16A-BFD50179D6AC',
} as const;

export const BITLOCKER_NOTE = 'BitLocker volume: captured whole (encrypted); have its recovery key at hand after a restore onto other hardware';

/** A GUID as GPT stores it: the first three groups little-endian, the rest as written. */
function guidBytes(text: string): Buffer {
  const h = text.replace(/-/g, '');
  const b = Buffer.from(h, 'hex');
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

const part = (index: number, typeId: string, startMiB: number, sizeMiB: number, over: Partial<LayoutPartition>): LayoutPartition => ({
  index, typeId, guid: `0000000${index}-1111-2222-3333-444455556666`, name: '', attributes: '0',
  startBytes: startMiB * MiB, sizeBytes: sizeMiB * MiB, filesystem: null, label: null, uuid: null,
  usedBytes: null, minSizeBytes: null, mode: 'whole', note: null, ...over,
});

/** The layout of the 64 MiB disk windowsLikeDisk() builds (1 MiB chunks). */
export function windowsLikeLayout(chunkSize = MiB): DiskLayout {
  const partitions = [
    part(1, GPT_TYPES.esp, 1, 4, { name: 'EFI system partition', filesystem: 'vfat', label: 'SYSTEM', uuid: '1234-ABCD', usedBytes: MiB, mode: 'used-blocks' }),
    part(2, GPT_TYPES.msr, 5, 1, { name: 'Microsoft reserved partition' }),
    part(3, GPT_TYPES.data, 6, 40, { name: 'Basic data partition', filesystem: 'ntfs', label: 'Windows', uuid: '0123456789ABCDEF', usedBytes: 10 * MiB, minSizeBytes: 12 * MiB, mode: 'used-blocks' }),
    part(4, GPT_TYPES.data, 46, 4, { name: 'Data', filesystem: 'bitlocker', note: BITLOCKER_NOTE }),
    part(5, GPT_TYPES.swap, 50, 4, { filesystem: 'swap', label: 'swap0', uuid: 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE', mode: 'swap' }),
    part(6, GPT_TYPES.recovery, 54, 8, { filesystem: 'ntfs', label: 'Recovery', uuid: 'FEDCBA9876543210', usedBytes: 3 * MiB, minSizeBytes: 4 * MiB, mode: 'used-blocks' }),
  ];
  // Free: C: beyond its first 10 MiB (chunks 16..45), the swap area (50..53), Recovery beyond 3 MiB (57..61).
  const runs: [number, number][] = [[16, 30], [50, 4], [57, 5]];
  const per = MiB / chunkSize;
  return {
    scheme: 'gpt', sectorSize: SECTOR, diskSize: 64 * MiB, diskGuid: '9D3C6A1E-5B2F-4C8D-A1E7-0F2B3C4D5E6F', partitions,
    freeChunks: runs.map(([first, count]) => [first * per, count * per] as const), chunkSize,
  };
}

/** The disk windowsLikeLayout() describes: a valid GPT (primary only), data in the used areas, zeros elsewhere. */
export function windowsLikeDisk(layout: DiskLayout = windowsLikeLayout()): Buffer {
  const disk = Buffer.alloc(layout.diskSize);
  const lbas = layout.diskSize / SECTOR;
  // Protective MBR.
  disk[446 + 4] = 0xee;
  disk.writeUInt32LE(1, 446 + 8);
  disk.writeUInt32LE(lbas - 1, 446 + 12);
  disk[510] = 0x55;
  disk[511] = 0xaa;
  const entries = Buffer.alloc(128 * 128);
  for (const p of layout.partitions) {
    const o = (p.index - 1) * 128;
    guidBytes(p.typeId).copy(entries, o);
    if (p.guid) guidBytes(p.guid).copy(entries, o + 16);
    entries.writeBigUInt64LE(BigInt(p.startBytes / SECTOR), o + 32);
    entries.writeBigUInt64LE(BigInt((p.startBytes + p.sizeBytes) / SECTOR - 1), o + 40);
    entries.write(p.name, o + 56, 'utf16le');
    // Something for the used blocks to hold (and the filesystem sniffer to find on NTFS).
    const used = p.usedBytes ?? (p.mode === 'whole' ? p.sizeBytes : 0);
    for (let b = p.startBytes; b < p.startBytes + used; b += 4096) disk.write(`partition ${p.index} block ${b}\n`, b, 'latin1');
    if (p.filesystem === 'ntfs') disk.write('NTFS    ', p.startBytes + 3, 'latin1');
  }
  entries.copy(disk, 2 * SECTOR);
  const h = disk.subarray(SECTOR, 2 * SECTOR);
  h.write('EFI PART', 0, 'latin1');
  h.writeUInt32LE(0x00010000, 8);
  h.writeUInt32LE(92, 12);
  h.writeBigUInt64LE(1n, 24);
  h.writeBigUInt64LE(BigInt(lbas - 1), 32);
  h.writeBigUInt64LE(34n, 40);
  h.writeBigUInt64LE(BigInt(lbas - 34), 48);
  if (layout.diskGuid) guidBytes(layout.diskGuid).copy(h, 56);
  h.writeBigUInt64LE(2n, 72);
  h.writeUInt32LE(128, 80);
  h.writeUInt32LE(128, 84);
  h.writeUInt32LE(crc32(entries), 88);
  h.writeUInt32LE(crc32(h.subarray(0, 92)), 16);
  return disk;
}

/**
 * Commits `disk` as the next version of `name` with `layout`, as the agent does: free chunks are
 * neither sent nor listed, all-zero ones are listed as holes, the rest are put as chunk files.
 */
export async function commitWithLayout(store: ImageStore, name: string, disk: Buffer, layout: DiskLayout, source = 'agent capture'): Promise<VersionInfo> {
  const codec = new ChunkCodecContext();
  const up = store.beginUpload(name, { size: disk.length, sectorSize: 512, source });
  const free = freeChunkTest(layout);
  const list: (string | null)[] = [];
  for (let i = 0, o = 0; o < disk.length; i++, o += layout.chunkSize) {
    const data = disk.subarray(o, Math.min(disk.length, o + layout.chunkSize));
    if (free(i) || data.every((b) => b === 0)) {
      list.push(null);
      continue;
    }
    const hash = createHash('sha256').update(data).digest('hex');
    const [header, payload] = codec.encode(data, 3, Buffer.allocUnsafe(maxChunkFileSize(data.length) - CHUNK_HEADER_SIZE));
    await up.put(hash, Buffer.concat([header, payload]));
    list.push(hash);
  }
  up.setLayout(layout);
  return up.commit(list);
}
