/**
 * MBR and GPT partition tables, plus a best-effort filesystem sniff per partition.
 *
 * The parsers are pure (bytes in, typed values out). readPartitionTable() drives them through a
 * caller-supplied read function, reading only a few sectors plus 68 KiB per partition, and never
 * allocates by a count taken from the disk before checking it.
 */

export interface PartitionEntry {
  readonly index: number;
  /** GPT type GUID (upper case) or MBR type byte as "0x83". */
  readonly typeId: string;
  readonly typeName: string;
  /** GPT partition name; '' for MBR. */
  readonly name: string;
  readonly firstLba: number;
  readonly lastLba: number;
  readonly startBytes: number;
  readonly sizeBytes: number;
  readonly bootable: boolean;
  /** GPT unique partition GUID (upper case); null on MBR. */
  readonly guid: string | null;
  /** GPT attribute bits as a decimal string (64 bits do not fit a number); MBR: "128" when bootable, else "0". */
  readonly attributes: string;
  /** ext4, ntfs, vfat (FAT32) …, or null when not recognised. */
  filesystem: string | null;
}

export interface PartitionTable {
  readonly scheme: 'gpt' | 'mbr' | 'none';
  readonly sectorSize: number;
  readonly diskGuid: string | null;
  readonly partitions: PartitionEntry[];
}

export class PartitionTableError extends Error {
  constructor(message: string) {
    super(`partition table: ${message}`);
    this.name = 'PartitionTableError';
  }
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(buf: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** GUIDs on disk store their first three fields little-endian. */
export function formatGuid(b: Buffer, o: number): string {
  const hex = (s: number, e: number): string => b.toString('hex', o + s, o + e);
  const le = (s: number, e: number): string => Buffer.from(b.subarray(o + s, o + e)).reverse().toString('hex');
  return `${le(0, 4)}-${le(4, 6)}-${le(6, 8)}-${hex(8, 10)}-${hex(10, 16)}`.toUpperCase();
}

const GPT_TYPES: Record<string, string> = {
  'C12A7328-F81F-11D2-BA4B-00A0C93EC93B': 'EFI System',
  'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7': 'Microsoft basic data',
  'E3C9E316-0B5C-4DB8-817D-F92DF00215AE': 'Microsoft reserved',
  'DE94BBA4-06D1-4D40-A16A-BFD50179D6AC': 'Windows recovery environment',
  '5808C8AA-7E8F-42E0-85D2-E1E90434CFB3': 'Windows LDM metadata',
  'AF9B60A0-1431-4F62-BC68-3311714A69AD': 'Windows LDM data',
  '0FC63DAF-8483-4772-8E79-3D69D8477DE4': 'Linux filesystem',
  '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F': 'Linux swap',
  'E6D6D379-F507-44C2-A23C-238F2A3DF928': 'Linux LVM',
  'A19D880F-05FC-4D3B-A006-743F0F84911E': 'Linux RAID',
  '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709': 'Linux root (x86-64)',
  '933AC7E1-2EB4-4F13-B844-0E14E2AEF915': 'Linux home',
  'BC13C2FF-59E6-4262-A352-B275FD6F7172': 'Linux extended boot',
  '21686148-6449-6E6F-744E-656564454649': 'BIOS boot',
  '48465300-0000-11AA-AA11-00306543ECAC': 'Apple HFS+',
};

const MBR_TYPES: Record<number, string> = {
  0x01: 'FAT12',
  0x04: 'FAT16 <32M',
  0x05: 'Extended',
  0x06: 'FAT16',
  0x07: 'HPFS/NTFS/exFAT',
  0x0b: 'W95 FAT32',
  0x0c: 'W95 FAT32 (LBA)',
  0x0e: 'W95 FAT16 (LBA)',
  0x0f: 'W95 Extended (LBA)',
  0x27: 'Windows recovery environment',
  0x82: 'Linux swap',
  0x83: 'Linux',
  0x85: 'Linux extended',
  0x8e: 'Linux LVM',
  0xa5: 'FreeBSD',
  0xee: 'GPT protective',
  0xef: 'EFI System',
  0xfd: 'Linux RAID autodetect',
};

export interface MbrEntry {
  readonly slot: number;
  readonly type: number;
  readonly bootable: boolean;
  readonly firstLba: number;
  readonly sectors: number;
}

/** Parses sector 0; returns null when there is no 0x55AA signature (no MBR at all). */
export function parseMbr(sector0: Buffer): MbrEntry[] | null {
  if (sector0.length < 512) throw new PartitionTableError(`sector 0 is ${sector0.length} bytes, need 512`);
  if (sector0[510] !== 0x55 || sector0[511] !== 0xaa) return null;
  const out: MbrEntry[] = [];
  for (let i = 0; i < 4; i++) {
    const o = 446 + i * 16;
    const type = sector0[o + 4];
    const sectors = sector0.readUInt32LE(o + 12);
    if (type === 0 || sectors === 0) continue;
    out.push({ slot: i + 1, type, bootable: sector0[o] === 0x80, firstLba: sector0.readUInt32LE(o + 8), sectors });
  }
  return out;
}

export interface GptHeader {
  readonly diskGuid: string;
  readonly firstUsableLba: number;
  readonly lastUsableLba: number;
  readonly entriesLba: number;
  readonly entryCount: number;
  readonly entrySize: number;
  readonly entriesCrc: number;
}

const MAX_GPT_ENTRIES = 4096;

/** Parses and checks the GPT header in `sector` (LBA 1) against the disk size. */
export function parseGptHeader(sector: Buffer, sectorSize: number, diskSize: number): GptHeader {
  if (sector.length < 92) throw new PartitionTableError('GPT header sector is truncated');
  if (sector.toString('latin1', 0, 8) !== 'EFI PART') throw new PartitionTableError('protective MBR present but no "EFI PART" signature at LBA 1');
  const headerSize = sector.readUInt32LE(12);
  if (headerSize < 92 || headerSize > Math.min(sectorSize, sector.length)) throw new PartitionTableError(`GPT header size ${headerSize} is invalid`);
  const copy = Buffer.from(sector.subarray(0, headerSize));
  const crc = copy.readUInt32LE(16);
  copy.writeUInt32LE(0, 16);
  if (crc32(copy) !== crc) throw new PartitionTableError('GPT header CRC mismatch (damaged header)');
  const lbas = Math.floor(diskSize / sectorSize);
  const u64 = (o: number): number => {
    const v = sector.readBigUInt64LE(o);
    if (v >= BigInt(lbas)) throw new PartitionTableError(`GPT header field at byte ${o} points to LBA ${v}, past the end of the ${lbas}-sector disk`);
    return Number(v);
  };
  const firstUsableLba = u64(40);
  const lastUsableLba = u64(48);
  const entriesLba = u64(72);
  const entryCount = sector.readUInt32LE(80);
  const entrySize = sector.readUInt32LE(84);
  if (entryCount > MAX_GPT_ENTRIES) throw new PartitionTableError(`GPT declares ${entryCount} entries; more than ${MAX_GPT_ENTRIES} is not a real table`);
  if (entrySize < 128 || entrySize > 4096 || entrySize % 8 !== 0) throw new PartitionTableError(`GPT entry size ${entrySize} is invalid (must be 128..4096, a multiple of 8)`);
  if (entriesLba * sectorSize + entryCount * entrySize > diskSize) throw new PartitionTableError('GPT entry array runs past the end of the disk');
  return { diskGuid: formatGuid(sector, 56), firstUsableLba, lastUsableLba, entriesLba, entryCount, entrySize, entriesCrc: sector.readUInt32LE(88) };
}

export function parseGptEntries(entries: Buffer, h: GptHeader, sectorSize: number, diskSize: number): PartitionEntry[] {
  if (entries.length < h.entryCount * h.entrySize) throw new PartitionTableError('GPT entry array is truncated');
  const arr = entries.subarray(0, h.entryCount * h.entrySize);
  if (crc32(arr) !== h.entriesCrc) throw new PartitionTableError('GPT entry array CRC mismatch (damaged table)');
  const lbas = Math.floor(diskSize / sectorSize);
  const out: PartitionEntry[] = [];
  for (let i = 0; i < h.entryCount; i++) {
    const o = i * h.entrySize;
    if (arr.subarray(o, o + 16).every((b) => b === 0)) continue;
    const typeId = formatGuid(arr, o);
    const first = arr.readBigUInt64LE(o + 32);
    const last = arr.readBigUInt64LE(o + 40);
    if (last < first) throw new PartitionTableError(`GPT partition ${i + 1} ends (LBA ${last}) before it starts (LBA ${first})`);
    if (last >= BigInt(lbas)) throw new PartitionTableError(`GPT partition ${i + 1} ends at LBA ${last}, past the end of the ${lbas}-sector disk`);
    const nameRaw = arr.subarray(o + 56, o + 128).toString('utf16le');
    const nul = nameRaw.indexOf('\0');
    const firstLba = Number(first);
    const lastLba = Number(last);
    out.push({
      index: i + 1,
      typeId,
      typeName: GPT_TYPES[typeId] ?? 'unknown',
      name: nul >= 0 ? nameRaw.slice(0, nul) : nameRaw,
      firstLba,
      lastLba,
      startBytes: firstLba * sectorSize,
      sizeBytes: (lastLba - firstLba + 1) * sectorSize,
      bootable: (arr.readBigUInt64LE(o + 48) & 4n) !== 0n,
      guid: formatGuid(arr, o + 16),
      attributes: arr.readBigUInt64LE(o + 48).toString(),
      filesystem: null,
    });
  }
  return out;
}

function mbrEntry(index: number, e: MbrEntry, firstLba: number, sectorSize: number, lbas: number): PartitionEntry {
  const lastLba = firstLba + e.sectors - 1;
  if (firstLba === 0 || lastLba >= lbas) throw new PartitionTableError(`MBR partition ${index} (LBA ${firstLba}..${lastLba}) lies outside the ${lbas}-sector disk`);
  return {
    index,
    typeId: `0x${e.type.toString(16).padStart(2, '0')}`,
    typeName: MBR_TYPES[e.type] ?? 'unknown',
    name: '',
    firstLba,
    lastLba,
    startBytes: firstLba * sectorSize,
    sizeBytes: e.sectors * sectorSize,
    bootable: e.bootable,
    guid: null,
    attributes: e.bootable ? '128' : '0',
    filesystem: null,
  };
}

const isExtended = (t: number): boolean => t === 0x05 || t === 0x0f || t === 0x85;

/** Recognises a filesystem from the first 68 KiB (or fewer) of a partition. */
export function sniffFilesystem(b: Buffer): string | null {
  const at = (o: number, s: string): boolean => b.length >= o + s.length && b.toString('latin1', o, o + s.length) === s;
  if (b.length >= 1024 + 0x68 && b.readUInt16LE(1024 + 56) === 0xef53) {
    const compat = b.readUInt32LE(1024 + 0x5c);
    const incompat = b.readUInt32LE(1024 + 0x60);
    if (incompat & (0x40 | 0x80 | 0x200)) return 'ext4';
    return compat & 0x4 ? 'ext3' : 'ext2';
  }
  if (at(3, 'NTFS    ')) return 'ntfs';
  if (at(3, 'EXFAT   ')) return 'exfat';
  if (at(82, 'FAT32   ')) return 'vfat (FAT32)';
  if (at(54, 'FAT16   ')) return 'vfat (FAT16)';
  if (at(54, 'FAT12   ')) return 'vfat (FAT12)';
  if (at(0, 'XFSB')) return 'xfs';
  if (at(0x10040, '_BHRfS_M')) return 'btrfs';
  if (at(0, 'LUKS\xba\xbe')) return 'luks';
  if (at(512 + 24, 'LVM2 001') || at(512, 'LABELONE')) return 'lvm2';
  for (const page of [4096, 8192, 16384, 65536]) if (at(page - 10, 'SWAPSPACE2') || at(page - 10, 'SWAP-SPACE')) return 'swap';
  return null;
}

export type ReadFn = (offset: number, length: number) => Promise<Buffer>;

const SNIFF_BYTES = 68 * 1024;
const MAX_LOGICAL = 128;

/** Reads and parses the table (GPT if the MBR is protective, else MBR with logical partitions), then sniffs filesystems. */
export async function readPartitionTable(sectorSize: number, diskSize: number, read: ReadFn): Promise<PartitionTable> {
  if (diskSize < sectorSize * 2) return { scheme: 'none', sectorSize, diskGuid: null, partitions: [] };
  const lbas = Math.floor(diskSize / sectorSize);
  const mbr = parseMbr(await read(0, 512));
  if (mbr === null) return { scheme: 'none', sectorSize, diskGuid: null, partitions: [] };
  let table: PartitionTable;
  if (mbr.some((e) => e.type === 0xee)) {
    const h = parseGptHeader(await read(sectorSize, sectorSize), sectorSize, diskSize);
    const entries = await read(h.entriesLba * sectorSize, h.entryCount * h.entrySize);
    table = { scheme: 'gpt', sectorSize, diskGuid: h.diskGuid, partitions: parseGptEntries(entries, h, sectorSize, diskSize) };
  } else {
    const parts: PartitionEntry[] = [];
    for (const e of mbr) {
      parts.push(mbrEntry(e.slot, e, e.firstLba, sectorSize, lbas));
      if (!isExtended(e.type)) continue;
      // Logical partitions: a chain of EBRs, each relative to the extended partition's start.
      let ebrLba = e.firstLba;
      const seen = new Set<number>();
      for (let n = 0; n < MAX_LOGICAL; n++) {
        if (seen.has(ebrLba) || ebrLba >= lbas) throw new PartitionTableError(`extended partition chain loops or leaves the disk at LBA ${ebrLba}`);
        seen.add(ebrLba);
        const ebr = parseMbr(await read(ebrLba * sectorSize, 512));
        if (!ebr || ebr.length === 0) break;
        const logical = ebr.find((x) => x.slot === 1);
        if (logical) parts.push(mbrEntry(5 + n, logical, ebrLba + logical.firstLba, sectorSize, lbas));
        const next = ebr.find((x) => x.slot === 2 && isExtended(x.type));
        if (!next) break;
        ebrLba = e.firstLba + next.firstLba;
      }
    }
    table = { scheme: 'mbr', sectorSize, diskGuid: null, partitions: parts };
  }
  for (const p of table.partitions) {
    if (isExtended(Number.parseInt(p.typeId, 16)) && table.scheme === 'mbr') continue;
    try {
      p.filesystem = sniffFilesystem(await read(p.startBytes, Math.min(SNIFF_BYTES, p.sizeBytes, diskSize - p.startBytes)));
    } catch {
      p.filesystem = null;
    }
  }
  return table;
}
