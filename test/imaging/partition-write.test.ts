/**
 * The tables writePartitionTable makes, checked by the real tools (sgdisk -v, sfdisk -J) and by our
 * own parser, on sparse files standing in for target disks (and one 4Kn loop device).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DiskLayout, LayoutPartition } from '../../src/imaging/disk-layout.js';
import { LayoutFitError, planRestore, type RestorePlan } from '../../src/imaging/layout-plan.js';
import { guidBytes, writePartitionTable, PartitionWriteError } from '../../src/imaging/partition-write.js';
import { formatGuid, readPartitionTable, type ReadFn } from '../../src/imaging/partitions.js';
import { tempDir } from './helpers.js';

const MiB = 1024 * 1024;

interface SfdiskPart {
  start: number;
  size: number;
  type: string;
  uuid?: string;
  name?: string;
  attrs?: string;
  bootable?: boolean;
}
interface SfdiskTable {
  label: string;
  id: string;
  sectorsize: number;
  firstlba?: number;
  lastlba?: number;
  partitions: SfdiskPart[];
}

const sfdiskJson = (dev: string): SfdiskTable => (JSON.parse(execFileSync('sfdisk', ['-J', dev], { encoding: 'utf8' })) as { partitiontable: SfdiskTable }).partitiontable;
const sgdiskVerify = (dev: string): string => execFileSync('sgdisk', ['-v', dev], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** sfdisk's attribute words ("RequiredPartition LegacyBIOSBootable GUID:60,63") as the 64-bit decimal string a layout keeps. */
function attrsDecimal(attrs: string | undefined): string {
  let v = 0n;
  for (const word of (attrs ?? '').split(/\s+/).filter(Boolean)) {
    if (word === 'RequiredPartition') v |= 1n;
    else if (word === 'NoBlockIOProtocol') v |= 2n;
    else if (word === 'LegacyBIOSBootable') v |= 4n;
    else if (word.startsWith('GUID:')) for (const bit of word.slice(5).split(',')) v |= 1n << BigInt(bit);
    else throw new Error(`unknown sfdisk attribute ${word}`);
  }
  return v.toString();
}

/** A layout read from a disk sfdisk made (what the agent's probe records, without filesystem facts). */
function layoutFromSfdisk(t: SfdiskTable, diskSize: number, facts: Record<number, Partial<LayoutPartition>>): DiskLayout {
  const S = t.sectorsize;
  const gpt = t.label === 'gpt';
  return {
    scheme: gpt ? 'gpt' : 'mbr',
    sectorSize: S,
    diskSize,
    diskGuid: gpt ? t.id : t.id.replace(/^0x/, '').toUpperCase(),
    partitions: t.partitions.map((p, i) => ({
      index: i + 1,
      typeId: gpt ? p.type : `0x${p.type.padStart(2, '0')}`,
      guid: p.uuid ?? null,
      name: p.name ?? '',
      attributes: gpt ? attrsDecimal(p.attrs) : p.bootable ? '128' : '0',
      startBytes: p.start * S,
      sizeBytes: p.size * S,
      filesystem: null,
      label: null,
      uuid: null,
      usedBytes: null,
      minSizeBytes: null,
      mode: 'whole' as const,
      note: null,
      ...facts[i + 1],
    })),
    freeChunks: [],
    chunkSize: 4 * MiB,
  };
}

function fileReader(buf: Buffer): ReadFn {
  return async (o, l) => {
    if (o < 0 || o + l > buf.length) throw new RangeError('read past end');
    return buf.subarray(o, o + l);
  };
}

/** Builds the target as a deploy would: the plan's segments copied from the source, then the table. */
async function restore(source: string, layout: DiskLayout, plan: RestorePlan, target: string): Promise<Buffer> {
  execFileSync('truncate', ['-s', `${plan.targetSize}`, target]);
  const src = await readFile(source);
  const fh = await open(target, 'r+');
  try {
    for (const g of plan.segments) await fh.write(src, g.from, g.length, g.to);
    for (const w of writePartitionTable(layout, plan, src.subarray(0, layout.sectorSize))) await fh.write(w.data, 0, w.data.length, w.offset);
  } finally {
    await fh.close();
  }
  return readFile(target);
}

/** Checks the target's table against the layout and the plan, with sfdisk and our parser. */
async function expectTable(dev: string, layout: DiskLayout, plan: RestorePlan, image: Buffer): Promise<void> {
  const S = layout.sectorSize;
  const t = sfdiskJson(dev);
  expect(t.sectorsize).toBe(S);
  expect(t.partitions.map((p) => [p.start * S, p.size * S])).toEqual(plan.partitions.map((p) => [p.toStart, p.toSize]));
  if (layout.scheme === 'gpt') {
    expect(t.label).toBe('gpt');
    expect(t.id).toBe(layout.diskGuid);
    expect(t.partitions.map((p) => [p.type, p.uuid, p.name ?? '', attrsDecimal(p.attrs)])).toEqual(layout.partitions.map((p) => [p.typeId, p.guid, p.name, p.attributes]));
    expect(t.lastlba).toBe(Math.floor(plan.targetSize / S) - 2 - 16384 / S); // backup array and header in the last sectors
  } else {
    expect(t.label).toBe('dos');
    expect(t.id.replace(/^0x/, '').toUpperCase()).toBe(layout.diskGuid);
    expect(t.partitions.map((p) => [`0x${p.type.padStart(2, '0')}`, p.bootable === true])).toEqual(layout.partitions.map((p) => [p.typeId, p.attributes === '128']));
  }
  const ours = await readPartitionTable(S, image.length, fileReader(image));
  expect(ours.scheme).toBe(layout.scheme);
  if (layout.scheme === 'gpt') expect(ours.diskGuid).toBe(layout.diskGuid);
  expect(ours.partitions.map((p) => [p.index, p.typeId, p.name, p.startBytes, p.sizeBytes])).toEqual(
    layout.partitions.map((p) => {
      const to = plan.partitions.find((x) => x.index === p.index)!;
      return [p.index, p.typeId, p.name, to.toStart, to.toSize];
    }),
  );
}

describe('writePartitionTable', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let gptSource: string;
  let gptLayout: DiskLayout;
  let bootCode: Buffer;
  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('ptwrite'));
    bootCode = randomBytes(440);
    // Windows-like: ESP, MSR, C:, Recovery at the end; names, attributes (bit 0, 60, 63) and a non-ASCII name.
    gptSource = join(dir, 'gpt.img');
    execFileSync('truncate', ['-s', '64M', gptSource]);
    execFileSync('sfdisk', ['-q', gptSource], {
      input:
        'label: gpt\n' +
        'size=4MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system partition", attrs="RequiredPartition"\n' +
        'size=4MiB, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE, name="Microsoft reserved partition"\n' +
        'size=40MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="Basic data partition"\n' +
        'type=DE94BBA4-06D1-4D40-A16A-BFD50179D6AC, name="Récupération ✓", attrs="RequiredPartition GUID:60,63"\n',
    });
    // Boot code in LBA 0 and recognisable bytes in each partition, so a copy to the wrong place shows.
    gptLayout = layoutFromSfdisk(sfdiskJson(gptSource), 64 * MiB, { 3: { filesystem: 'ntfs', mode: 'used-blocks', minSizeBytes: 10 * MiB } });
    const fh = await open(gptSource, 'r+');
    await fh.write(bootCode, 0, 440, 0);
    for (const p of gptLayout.partitions) {
      await fh.write(randomBytes(4096), 0, 4096, p.startBytes);
      await fh.write(randomBytes(4096), 0, 4096, p.startBytes + p.sizeBytes - 4096);
    }
    await fh.close();
  });
  afterAll(async () => cleanup());

  it('the GUID writer is formatGuid\'s inverse', () => {
    for (let i = 0; i < 50; i++) {
      const g = randomUUID().toUpperCase();
      expect(formatGuid(guidBytes(g), 0)).toBe(g);
    }
    expect(guidBytes('C12A7328-F81F-11D2-BA4B-00A0C93EC93B').toString('hex')).toBe('28732ac11ff8d211ba4b00a0c93ec93b');
    expect(() => guidBytes('C12A7328-F81F-11D2-BA4B')).toThrow(PartitionWriteError);
  });

  it('onto a larger disk: sgdisk -v clean, backup at the new end, GUIDs, names, attributes kept, Recovery content moved', async () => {
    expect(gptLayout.partitions[3].attributes).toBe(((1n << 63n) | (1n << 60n) | 1n).toString());
    const plan = planRestore(gptLayout, 200 * MiB + 7 * 512 + 100);
    expect(plan.resize).toBe('grow');
    const target = join(dir, 'larger.img');
    const image = await restore(gptSource, gptLayout, plan, target);
    expect(sgdiskVerify(target)).toContain('No problems found');
    await expectTable(target, gptLayout, plan, image);
    expect(image.subarray(0, 440).equals(bootCode)).toBe(true);
    const src = await readFile(gptSource);
    for (const p of plan.partitions.filter((x) => x.index !== 3)) expect(image.subarray(p.toStart, p.toStart + p.toSize).equals(src.subarray(p.fromStart, p.fromStart + p.fromSize))).toBe(true);
    expect(plan.partitions[3].toStart).not.toBe(plan.partitions[3].fromStart);
    // The protective MBR covers the whole new disk.
    expect(image.readUInt32LE(446 + 12)).toBe(Math.floor(plan.targetSize / 512) - 1);
  });

  it('onto a smaller disk: the shrunk main partition and the moved Recovery in a clean table', async () => {
    const plan = planRestore(gptLayout, 40 * MiB);
    expect(plan.resize).toBe('shrink');
    const target = join(dir, 'smaller.img');
    const image = await restore(gptSource, gptLayout, plan, target);
    expect(sgdiskVerify(target)).toContain('No problems found');
    await expectTable(target, gptLayout, plan, image);
  });

  it('onto the same size it writes nothing: the image carries its own table', () => {
    const plan = planRestore(gptLayout, 64 * MiB);
    expect(writePartitionTable(gptLayout, plan, Buffer.alloc(512))).toEqual([]);
  });

  it('4096-byte sectors on a 4Kn loop device', async () => {
    const S = 4096;
    const l: DiskLayout = {
      ...gptLayout,
      sectorSize: S,
      // sfdisk ended Recovery at a 512-byte sector; whole 4 KiB sectors here.
      partitions: gptLayout.partitions.map((p) => ({ ...p, sizeBytes: Math.floor(p.sizeBytes / MiB) * MiB })),
    };
    const plan = planRestore(l, 96 * MiB);
    const file = join(dir, '4k.img');
    execFileSync('truncate', ['-s', `${plan.targetSize}`, file]);
    const fh = await open(file, 'r+');
    for (const w of writePartitionTable(l, plan, Buffer.alloc(S))) await fh.write(w.data, 0, w.data.length, w.offset);
    await fh.close();
    const loop = execFileSync('losetup', ['-f', '--show', '-b', '4096', file], { encoding: 'utf8' }).trim();
    try {
      expect(sgdiskVerify(loop)).toContain('No problems found');
      await expectTable(loop, l, plan, await readFile(file));
    } finally {
      execFileSync('losetup', ['-d', loop]);
    }
  });

  it('random layouts and sizes: sgdisk -v clean and sfdisk reads back what the plan placed', async () => {
    let seed = 4242;
    const rand = (n: number): number => {
      // mulberry32
      seed = (seed + 0x6d2b79f5) >>> 0;
      let t = seed;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
    };
    let written = 0;
    const kinds = new Set<string>();
    for (let iter = 0; iter < 16; iter++) {
      const parts: LayoutPartition[] = [];
      let cursor = rand(2) === 0 ? MiB : 34 * 512;
      const n = 1 + rand(6);
      let index = 0;
      for (let i = 0; i < n; i++) {
        index += 1 + (rand(3) === 0 ? 3 : 0); // unused slots between some
        const start = cursor + rand(3) * (rand(2) ? MiB : 512);
        const size = (1 + rand(8)) * MiB + rand(4) * 512;
        parts.push({
          index,
          typeId: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
          guid: randomUUID().toUpperCase(),
          name: `part ${i} ${'x'.repeat(rand(30))}`,
          attributes: (BigInt(rand(2)) | (BigInt(rand(16)) << 48n)).toString(),
          startBytes: start,
          sizeBytes: size,
          filesystem: rand(2) ? 'ext4' : 'vfat',
          label: null,
          uuid: null,
          usedBytes: null,
          minSizeBytes: rand(2) ? MiB : null,
          mode: 'used-blocks',
          note: null,
        });
        cursor = start + size;
      }
      const diskSize = cursor + 33 * 512 + rand(100) * 512;
      const l: DiskLayout = { scheme: 'gpt', sectorSize: 512, diskSize, diskGuid: randomUUID().toUpperCase(), partitions: parts, freeChunks: [], chunkSize: 4 * MiB };
      let plan: RestorePlan;
      try {
        const delta = rand(2) ? rand(40) * MiB : -rand(Math.floor(diskSize / 3 / 512)) * 512;
        plan = planRestore(l, diskSize + delta + rand(512));
      } catch (e) {
        if (e instanceof LayoutFitError) continue;
        throw e;
      }
      if (plan.targetSize === diskSize) continue;
      const target = join(dir, `random-${iter}.img`);
      execFileSync('truncate', ['-s', `${plan.targetSize}`, target]);
      const fh = await open(target, 'r+');
      for (const w of writePartitionTable(l, plan, randomBytes(512))) await fh.write(w.data, 0, w.data.length, w.offset);
      await fh.close();
      expect(sgdiskVerify(target)).toContain('No problems found');
      await expectTable(target, l, plan, await readFile(target));
      written++;
      kinds.add(plan.resize);
    }
    expect(written).toBeGreaterThanOrEqual(8);
    expect(kinds.has('grow') && kinds.has('shrink')).toBe(true);
  });

  it('MBR: primary entries rewritten with the boot flag, boot code and disk signature kept', async () => {
    const source = join(dir, 'mbr.img');
    execFileSync('truncate', ['-s', '64M', source]);
    execFileSync('sfdisk', ['-q', source], { input: 'label: dos\nlabel-id: 0x1234abcd\nsize=40MiB, type=83, bootable\ntype=82\n' });
    const fh = await open(source, 'r+');
    await fh.write(bootCode, 0, 440, 0);
    await fh.close();
    const l = layoutFromSfdisk(sfdiskJson(source), 64 * MiB, { 1: { filesystem: 'ext4', mode: 'used-blocks', minSizeBytes: 8 * MiB } });
    for (const size of [100 * MiB, 32 * MiB]) {
      const plan = planRestore(l, size);
      const target = join(dir, `mbr-${size}.img`);
      const image = await restore(source, l, plan, target);
      await expectTable(target, l, plan, image);
      expect(image.subarray(0, 440).equals(bootCode)).toBe(true);
      expect(image.readUInt32LE(440)).toBe(0x1234abcd);
      expect(image.subarray(446 + 1, 446 + 4).toString('hex')).toBe('feffff');
    }
  });

  it('MBR with logical partitions: restored in place on a larger disk, the EBR chain intact', async () => {
    const source = join(dir, 'logical.img');
    execFileSync('truncate', ['-s', '64M', source]);
    execFileSync('sfdisk', ['-q', source], { input: 'label: dos\nlabel-id: 0x0badf00d\nsize=20MiB, type=83\ntype=5\nsize=10MiB, type=83\ntype=82\n' });
    const l = layoutFromSfdisk(sfdiskJson(source), 64 * MiB, {});
    expect(l.partitions.map((p) => p.typeId)).toEqual(['0x83', '0x05', '0x83', '0x82']);
    const fixed: DiskLayout = { ...l, partitions: l.partitions.map((p, i) => ({ ...p, index: i < 2 ? i + 1 : i + 3 })) };
    const plan = planRestore(fixed, 128 * MiB);
    expect(plan.resize).toBe('none');
    const target = join(dir, 'logical-target.img');
    // A GPT the target held before: its backup header in the last sector, which no partition covers, must not survive.
    execFileSync('truncate', ['-s', `${plan.targetSize}`, target]);
    execFileSync('sgdisk', ['-o', target], { stdio: 'ignore' });
    expect(execFileSync('blkid', ['-p', '-o', 'value', '-s', 'PTTYPE', target], { encoding: 'utf8' }).trim()).toBe('gpt');
    const image = await restore(source, fixed, plan, target);
    expect(image.toString('latin1', image.length - 512, image.length - 504)).not.toBe('EFI PART');
    expect(execFileSync('blkid', ['-p', '-o', 'value', '-s', 'PTTYPE', target], { encoding: 'utf8' }).trim()).toBe('dos');
    const t = sfdiskJson(target);
    expect(t.partitions.map((p) => [p.start, p.size, p.type])).toEqual(sfdiskJson(source).partitions.map((p) => [p.start, p.size, p.type]));
    expect((await readPartitionTable(512, image.length, fileReader(image))).partitions.map((p) => p.index)).toEqual([1, 2, 5, 6]);
    // A layout that left the extended entry out still keeps it (it anchors the EBR chain); a primary it left out is cleared.
    const src0 = (await readFile(source)).subarray(0, 512);
    const [w] = writePartitionTable({ ...fixed, partitions: fixed.partitions.filter((p) => p.index !== 2) }, plan, src0);
    expect(w.data.subarray(446 + 16, 446 + 32).equals(src0.subarray(446 + 16, 446 + 32))).toBe(true);
    const [w1] = writePartitionTable({ ...fixed, partitions: fixed.partitions.filter((p) => p.index !== 1) }, plan, src0);
    expect(w1.data.subarray(446, 446 + 16).every((x) => x === 0)).toBe(true);
  });

  it('refuses what cannot make a valid table', () => {
    const plan = planRestore(gptLayout, 128 * MiB);
    expect(() => writePartitionTable({ ...gptLayout, diskGuid: null }, plan, Buffer.alloc(512))).toThrow(/no disk GUID/);
    const longName = { ...gptLayout, partitions: gptLayout.partitions.map((p) => ({ ...p, name: 'n'.repeat(37) })) };
    expect(() => writePartitionTable(longName, plan, Buffer.alloc(512))).toThrow(/longer than a GPT entry's 36 UTF-16 units/);
    expect(() => writePartitionTable(gptLayout, { ...plan, sectorSize: 4096 }, Buffer.alloc(512))).toThrow(/4096-byte sectors/);
    expect(() => writePartitionTable(gptLayout, plan, Buffer.alloc(100))).toThrow(/at least 512/);
  });
});
