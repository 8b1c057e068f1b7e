/**
 * The partition table a restore writes onto the target disk (issue 12): the image's own table with
 * the partitions where the RestorePlan put them and, for GPT, the backup header and array at the
 * target's end. Pure: it returns the bytes and their offsets, the caller writes them after the data
 * (the data's segments cover the primary table area with the image's old bytes).
 *
 * GPT: a protective MBR (the image's boot code and disk signature kept), the header at LBA 1 with its
 * 128-entry array from LBA 2, the same array and a backup header in the last sectors; disk GUID,
 * partition type and unique GUIDs, attributes and names as the layout has them, each partition in the
 * slot its index names. MBR: the image's sector 0 with the primary entries rewritten (CHS fields
 * 0xFE 0xFF 0xFF, meaning "use the LBA"), boot code and disk signature kept; extended partitions' EBRs
 * are not touched (the planner never moves them).
 */
import type { DiskLayout, LayoutPartition } from './disk-layout.js';
import { crc32 } from './partitions.js';
import { GPT_ENTRY_COUNT, GPT_ENTRY_SIZE, gptEntriesSectors, usableArea, type PlacedPartition, type RestorePlan } from './layout-plan.js';

export interface TableWrite {
  readonly offset: number;
  readonly data: Buffer;
}

export class PartitionWriteError extends Error {
  constructor(message: string) {
    super(`partition table write: ${message}`);
    this.name = 'PartitionWriteError';
  }
}

const GUID_RE = /^([0-9A-F]{8})-([0-9A-F]{4})-([0-9A-F]{4})-([0-9A-F]{4})-([0-9A-F]{12})$/i;

/** The on-disk 16 bytes of a GUID written as text (the inverse of partitions.ts formatGuid: first three fields little-endian). */
export function guidBytes(text: string): Buffer {
  const m = GUID_RE.exec(text);
  if (!m) throw new PartitionWriteError(`"${text}" is not a GUID (8-4-4-4-12 hex digits)`);
  const le = (h: string): Buffer => Buffer.from(h, 'hex').reverse();
  return Buffer.concat([le(m[1]), le(m[2]), le(m[3]), Buffer.from(m[4], 'hex'), Buffer.from(m[5], 'hex')]);
}

const GPT_NAME_UNITS = 36;
const MBR_EXTENDED = new Set([0x05, 0x0f, 0x85]);

function placedOf(plan: RestorePlan, p: LayoutPartition): PlacedPartition {
  const placed = plan.partitions.find((x) => x.index === p.index);
  if (!placed) throw new PartitionWriteError(`the plan does not place partition ${p.index}; plan and layout do not belong together`);
  if (placed.toStart % plan.sectorSize !== 0 || placed.toSize % plan.sectorSize !== 0 || placed.toSize <= 0) {
    throw new PartitionWriteError(`partition ${p.index} is placed at byte ${placed.toStart} with ${placed.toSize} bytes, not whole ${plan.sectorSize}-byte sectors`);
  }
  return placed;
}

function attributeBits(p: LayoutPartition): bigint {
  if (!/^\d{1,20}$/.test(p.attributes) || BigInt(p.attributes) > 0xffffffffffffffffn) throw new PartitionWriteError(`partition ${p.index}: attributes "${p.attributes}" are not a 64-bit decimal number`);
  return BigInt(p.attributes);
}

function sectorZero(sector0: Buffer, sectorSize: number): Buffer {
  if (sector0.length < 512) throw new PartitionWriteError(`the image's sector 0 is ${sector0.length} bytes, need at least 512`);
  const out = Buffer.alloc(sectorSize);
  sector0.copy(out, 0, 0, Math.min(sector0.length, sectorSize));
  out[510] = 0x55;
  out[511] = 0xaa;
  return out;
}

function writeMbrEntry(s: Buffer, slot: number, status: number, type: number, firstLba: number, sectors: number): void {
  const o = 446 + (slot - 1) * 16;
  s[o] = status;
  s.set([0xfe, 0xff, 0xff], o + 1);
  s[o + 4] = type;
  s.set([0xfe, 0xff, 0xff], o + 5);
  s.writeUInt32LE(firstLba, o + 8);
  s.writeUInt32LE(sectors, o + 12);
}

function mbrTable(layout: DiskLayout, plan: RestorePlan, sector0: Buffer): TableWrite[] {
  const S = plan.sectorSize;
  const s = sectorZero(sector0, S);
  const primaries = new Map(layout.partitions.filter((p) => p.index <= 4).map((p) => [p.index, p]));
  for (let slot = 1; slot <= 4; slot++) {
    const p = primaries.get(slot);
    const o = 446 + (slot - 1) * 16;
    if (!p) {
      // An extended entry the layout left out still anchors its logical partitions' EBR chain: keep it.
      if (!MBR_EXTENDED.has(s[o + 4])) s.fill(0, o, o + 16);
      continue;
    }
    const type = Number.parseInt(p.typeId, 16);
    if (!/^0x[0-9a-f]{1,2}$/i.test(p.typeId) || type === 0) throw new PartitionWriteError(`partition ${p.index}: MBR type "${p.typeId}" is not a byte like "0x83"`);
    const placed = placedOf(plan, p);
    const first = placed.toStart / S;
    const sectors = placed.toSize / S;
    if (first < 1 || first > 0xffffffff || sectors > 0xffffffff) throw new PartitionWriteError(`partition ${p.index} (LBA ${first}, ${sectors} sectors) does not fit an MBR's 32-bit fields`);
    writeMbrEntry(s, slot, (attributeBits(p) & 0x80n) !== 0n ? 0x80 : 0, type, first, sectors);
  }
  const writes: TableWrite[] = [{ offset: 0, data: s }];
  // A GPT backup header the target disk held before would make tools see a damaged GPT: clear the
  // last sector when neither a partition nor the image's bytes land there.
  const last = (Math.floor(plan.targetSize / S) - 1) * S;
  const inside = (start: number, length: number): boolean => start <= last && last < start + length;
  if (last > 0 && !plan.partitions.some((p) => inside(p.toStart, p.toSize)) && !plan.segments.some((g) => inside(g.to, g.length))) {
    writes.push({ offset: last, data: Buffer.alloc(S) });
  }
  return writes;
}

function gptTable(layout: DiskLayout, plan: RestorePlan, sector0: Buffer): TableWrite[] {
  const S = plan.sectorSize;
  const lbas = Math.floor(plan.targetSize / S);
  const entriesSectors = gptEntriesSectors(S);
  const { firstUsable, usableEnd } = usableArea('gpt', S, plan.targetSize);
  if (usableEnd <= firstUsable) throw new PartitionWriteError(`a ${plan.targetSize}-byte disk is too small for a GPT`);
  if (layout.diskGuid === null) throw new PartitionWriteError('the layout has no disk GUID; a GPT needs one');
  const diskGuid = guidBytes(layout.diskGuid);

  const entries = Buffer.alloc(entriesSectors * S);
  for (const p of layout.partitions) {
    if (p.index < 1 || p.index > GPT_ENTRY_COUNT) throw new PartitionWriteError(`partition ${p.index} has no slot in a ${GPT_ENTRY_COUNT}-entry GPT`);
    if (p.guid === null) throw new PartitionWriteError(`partition ${p.index} has no unique GUID; a GPT entry needs one`);
    const placed = placedOf(plan, p);
    if (placed.toStart < firstUsable || placed.toStart + placed.toSize > usableEnd) {
      throw new PartitionWriteError(`partition ${p.index} (bytes ${placed.toStart}..${placed.toStart + placed.toSize}) lies outside the usable area ${firstUsable}..${usableEnd} of the ${plan.targetSize}-byte disk`);
    }
    const name = Buffer.from(p.name, 'utf16le');
    if (name.length > GPT_NAME_UNITS * 2) throw new PartitionWriteError(`partition ${p.index}: name "${p.name}" is longer than a GPT entry's ${GPT_NAME_UNITS} UTF-16 units`);
    const o = (p.index - 1) * GPT_ENTRY_SIZE;
    if (!entries.subarray(o, o + 16).every((b) => b === 0)) throw new PartitionWriteError(`two partitions have index ${p.index}`);
    guidBytes(p.typeId).copy(entries, o);
    guidBytes(p.guid).copy(entries, o + 16);
    entries.writeBigUInt64LE(BigInt(placed.toStart / S), o + 32);
    entries.writeBigUInt64LE(BigInt((placed.toStart + placed.toSize) / S - 1), o + 40);
    entries.writeBigUInt64LE(attributeBits(p), o + 48);
    name.copy(entries, o + 56);
  }
  const entriesCrc = crc32(entries.subarray(0, GPT_ENTRY_COUNT * GPT_ENTRY_SIZE));

  const header = (myLba: number, altLba: number, entriesLba: number): Buffer => {
    const h = Buffer.alloc(S);
    h.write('EFI PART', 0, 'latin1');
    h.writeUInt32LE(0x00010000, 8);
    h.writeUInt32LE(92, 12);
    h.writeBigUInt64LE(BigInt(myLba), 24);
    h.writeBigUInt64LE(BigInt(altLba), 32);
    h.writeBigUInt64LE(BigInt(firstUsable / S), 40);
    h.writeBigUInt64LE(BigInt(usableEnd / S - 1), 48);
    diskGuid.copy(h, 56);
    h.writeBigUInt64LE(BigInt(entriesLba), 72);
    h.writeUInt32LE(GPT_ENTRY_COUNT, 80);
    h.writeUInt32LE(GPT_ENTRY_SIZE, 84);
    h.writeUInt32LE(entriesCrc, 88);
    h.writeUInt32LE(crc32(h.subarray(0, 92)), 16);
    return h;
  };

  const pmbr = sectorZero(sector0, S);
  // Boot code (0..439) and disk signature (440..445) stay; one protective entry covers the disk.
  pmbr.fill(0, 446, 510);
  const o = 446;
  pmbr.set([0x00, 0x02, 0x00], o + 1);
  pmbr[o + 4] = 0xee;
  pmbr.set([0xff, 0xff, 0xff], o + 5);
  pmbr.writeUInt32LE(1, o + 8);
  pmbr.writeUInt32LE(Math.min(lbas - 1, 0xffffffff), o + 12);

  const backupEntriesLba = lbas - 1 - entriesSectors;
  return [
    { offset: 0, data: Buffer.concat([pmbr, header(1, lbas - 1, 2), entries]) },
    { offset: backupEntriesLba * S, data: Buffer.concat([entries, header(lbas - 1, 1, backupEntriesLba)]) },
  ];
}

function isWholeImage(layout: DiskLayout, plan: RestorePlan): boolean {
  const [only, ...more] = plan.segments;
  return plan.targetSize === layout.diskSize && more.length === 0 && only !== undefined && only.from === 0 && only.to === 0 && only.length === layout.diskSize;
}

/**
 * The writes that put the layout's table, with the plan's placement, onto the target disk.
 * `sector0` is the image's LBA 0 as captured (at least 512 bytes): its boot code and disk signature
 * are kept. Nothing (an empty list) for a same-size plan, whose single identity segment already
 * carries the image's own table. Throws PartitionWriteError when the layout and plan cannot make a valid table.
 */
export function writePartitionTable(layout: DiskLayout, plan: RestorePlan, sector0: Buffer): TableWrite[] {
  if (plan.sectorSize !== layout.sectorSize) throw new PartitionWriteError(`the plan is for ${plan.sectorSize}-byte sectors, the layout has ${layout.sectorSize}`);
  // Onto a disk of the image's size the image's own table is written byte-exact with the data.
  if (isWholeImage(layout, plan)) return [];
  return layout.scheme === 'gpt' ? gptTable(layout, plan, sector0) : mbrTable(layout, plan, sector0);
}
