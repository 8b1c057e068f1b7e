import { describe, it, expect } from 'vitest';
import { prng } from '../lib/prng.js';
import type { DiskLayout, LayoutPartition } from '../../src/imaging/disk-layout.js';
import { LayoutFitError, LayoutPlanError, mainPartition, minDiskBytes, planRestore, usableArea, type RestorePlan } from '../../src/imaging/layout-plan.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** The GPT backup area on a 512-byte-sector disk: 32 sectors of entries and the header. */
const TAIL512 = 33 * 512;

type Part = Partial<LayoutPartition> & Pick<LayoutPartition, 'index' | 'startBytes' | 'sizeBytes'>;

function part(p: Part): LayoutPartition {
  return { typeId: '0FC63DAF-8483-4772-8E79-3D69D8477DE4', guid: null, name: '', attributes: '0', filesystem: null, label: null, uuid: null, usedBytes: null, minSizeBytes: null, mode: 'whole', note: null, ...p };
}

function layout(scheme: 'gpt' | 'mbr', diskSize: number, parts: Part[], sectorSize = 512): DiskLayout {
  return { scheme, sectorSize, diskSize, diskGuid: null, partitions: parts.map(part), freeChunks: [], chunkSize: 4 * MiB };
}

/** Windows on GPT: ESP, MSR, C: and a Recovery partition right behind it at the end of a 64 GiB disk. */
function windows(cMin: number | null = 10 * GiB): DiskLayout {
  const recoveryStart = 64 * GiB - 501 * MiB;
  return layout('gpt', 64 * GiB, [
    { index: 1, startBytes: 1 * MiB, sizeBytes: 100 * MiB, filesystem: 'vfat', mode: 'used-blocks', minSizeBytes: null },
    { index: 2, startBytes: 101 * MiB, sizeBytes: 16 * MiB },
    { index: 3, startBytes: 117 * MiB, sizeBytes: recoveryStart - 117 * MiB, filesystem: 'ntfs', label: 'Windows', mode: 'used-blocks', usedBytes: 9 * GiB, minSizeBytes: cMin },
    { index: 4, startBytes: recoveryStart, sizeBytes: 500 * MiB, filesystem: 'ntfs', label: 'Recovery', mode: 'used-blocks', minSizeBytes: 300 * MiB },
  ]);
}

const placed = (plan: RestorePlan): number[][] => plan.partitions.map((p) => [p.index, p.toStart, p.toSize]);

describe('planRestore, table-driven', () => {
  it('onto the same size: everything in place, one identity segment over the whole image', () => {
    const l = windows();
    const plan = planRestore(l, 64 * GiB);
    expect(plan).toEqual({
      targetSize: 64 * GiB,
      sectorSize: 512,
      main: null,
      resize: 'none',
      partitions: l.partitions.map((p) => ({ index: p.index, fromStart: p.startBytes, fromSize: p.sizeBytes, toStart: p.startBytes, toSize: p.sizeBytes })),
      segments: [{ from: 0, to: 0, length: 64 * GiB }],
    });
  });

  it('onto a larger disk: C: grows, Recovery moves to the new end unchanged, the old backup area is dropped', () => {
    const l = windows();
    const plan = planRestore(l, 128 * GiB);
    const recoveryTo = 128 * GiB - 501 * MiB; // aligned down below the last usable byte (128 GiB - 33 sectors)
    expect(plan.resize).toBe('grow');
    expect(plan.main).toBe(3);
    expect(placed(plan)).toEqual([
      [1, 1 * MiB, 100 * MiB],
      [2, 101 * MiB, 16 * MiB],
      [3, 117 * MiB, recoveryTo - 117 * MiB],
      [4, recoveryTo, 500 * MiB],
    ]);
    expect(plan.segments).toEqual([
      { from: 0, to: 0, length: 64 * GiB - 501 * MiB },
      { from: 64 * GiB - 501 * MiB, to: recoveryTo, length: 500 * MiB },
    ]);
  });

  it('onto a smaller disk: C: shrinks as little as it can, Recovery moves; C:\'s content is left to the caller', () => {
    const plan = planRestore(windows(), 32 * GiB);
    const recoveryTo = 32 * GiB - 501 * MiB;
    expect(plan.resize).toBe('shrink');
    expect(plan.main).toBe(3);
    expect(placed(plan)).toEqual([
      [1, 1 * MiB, 100 * MiB],
      [2, 101 * MiB, 16 * MiB],
      [3, 117 * MiB, recoveryTo - 117 * MiB],
      [4, recoveryTo, 500 * MiB],
    ]);
    expect(plan.segments).toEqual([
      { from: 0, to: 0, length: 117 * MiB },
      { from: 64 * GiB - 501 * MiB, to: recoveryTo, length: 500 * MiB },
    ]);
  });

  it('the smallest disk is C: at its minimum (rounded up to 1 MiB), Recovery behind it, and the backup area', () => {
    const l = windows(10 * GiB + 1);
    const min = 117 * MiB + 10 * GiB + MiB + 500 * MiB + TAIL512;
    expect(minDiskBytes(l)).toBe(min);
    const plan = planRestore(l, min);
    expect(placed(plan)[2]).toEqual([3, 117 * MiB, 10 * GiB + MiB]);
    expect(placed(plan)[3]).toEqual([4, 117 * MiB + 10 * GiB + MiB, 500 * MiB]);
    expect(plan.resize).toBe('shrink');
    // One sector less does not fit, and the error says by how much.
    expect(() => planRestore(l, min - 512)).toThrow(LayoutFitError);
    try {
      planRestore(l, 8 * GiB);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(LayoutFitError);
      expect((e as LayoutFitError).shortBytes).toBe(min - 8 * GiB);
      expect((e as Error).message).toBe(
        'the image needs a disk of at least 10.7 GiB (2.7 GiB more than this 8.0 GiB disk): partition 3 (ntfs "Windows") can shrink to 10.1 GiB at the least; partition 4 behind it keeps its size',
      );
    }
  });

  it('a main partition whose minimum is unknown cannot shrink: the smallest disk is the source\'s own end', () => {
    const l = windows(null);
    expect(minDiskBytes(l)).toBe(64 * GiB - MiB + TAIL512);
    expect(() => planRestore(l, 63 * GiB)).toThrow(/partition 3 \(ntfs "Windows"\) cannot be shrunk \(its filesystem's minimum size is not known\)/);
  });

  it('onto a smaller disk the source never used the end of: the main partition still takes what there is', () => {
    const l = layout('gpt', 100 * GiB, [
      { index: 1, startBytes: MiB, sizeBytes: 20 * GiB, filesystem: 'ext4', minSizeBytes: null },
      { index: 2, startBytes: 20 * GiB + MiB, sizeBytes: GiB, filesystem: 'swap', mode: 'swap' },
    ]);
    const plan = planRestore(l, 30 * GiB);
    expect(plan.resize).toBe('grow');
    expect(placed(plan)).toEqual([
      [1, MiB, 29 * GiB - 2 * MiB],
      [2, 29 * GiB - MiB, GiB],
    ]);
    expect(minDiskBytes(l)).toBe(21 * GiB + MiB + TAIL512);
  });

  it('when moving would cost a main partition that cannot shrink a few bytes, everything stays in place', () => {
    // Swap starts one sector past a MiB boundary: moved, it would be aligned down into the main partition.
    const l = layout('gpt', 100 * GiB, [
      { index: 1, startBytes: MiB, sizeBytes: 20 * GiB - MiB + 512, filesystem: 'ext4', minSizeBytes: null },
      { index: 2, startBytes: 20 * GiB + 512, sizeBytes: GiB, filesystem: 'swap', mode: 'swap' },
    ]);
    const min = 21 * GiB + 512 + TAIL512;
    expect(minDiskBytes(l)).toBe(min);
    const plan = planRestore(l, min);
    expect(plan.resize).toBe('none');
    expect(plan.main).toBeNull();
    expect(placed(plan)).toEqual([
      [1, MiB, 20 * GiB - MiB + 512],
      [2, 20 * GiB + 512, GiB],
    ]);
    expect(plan.segments).toEqual([{ from: 0, to: 0, length: 21 * GiB + 512 }]);
    expect(() => planRestore(l, min - 512)).toThrow(LayoutFitError);
  });

  it('a named main partition grows instead of the largest; one that cannot resize is refused', () => {
    const l = windows();
    const plan = planRestore(l, 128 * GiB, { main: 4 });
    expect(plan.main).toBe(4);
    expect(plan.resize).toBe('grow');
    expect(placed(plan)).toEqual([
      [1, 1 * MiB, 100 * MiB],
      [2, 101 * MiB, 16 * MiB],
      [3, 117 * MiB, 64 * GiB - 501 * MiB - 117 * MiB],
      [4, 64 * GiB - 501 * MiB, 128 * GiB - MiB - (64 * GiB - 501 * MiB)],
    ]);
    expect(plan.segments).toEqual([{ from: 0, to: 0, length: 64 * GiB - MiB }]);
    expect(mainPartition(l, 4)?.index).toBe(4);
    expect(mainPartition(l)?.index).toBe(3);
    expect(() => planRestore(l, 128 * GiB, { main: 2 })).toThrow(LayoutPlanError);
    expect(() => planRestore(l, 128 * GiB, { main: 2 })).toThrow(/partition 2 cannot be resized/);
    expect(() => planRestore(l, 64 * GiB, { main: 9 })).toThrow(/partition 9 is not in the image \(it has 1, 2, 3, 4\)/);
    // Named, C: cannot shrink below Recovery's own place: the smallest disk follows the named partition.
    expect(minDiskBytes(l, 4)).toBe(64 * GiB - MiB + 300 * MiB - 500 * MiB + TAIL512);
  });

  it('swap is never the main partition, and moves like the others', () => {
    const l = layout('mbr', 16 * GiB, [
      { index: 1, startBytes: MiB, sizeBytes: 12 * GiB, filesystem: 'ext4', mode: 'used-blocks', minSizeBytes: 3 * GiB },
      { index: 2, startBytes: 12 * GiB + MiB, sizeBytes: 4 * GiB - MiB, filesystem: 'swap', mode: 'swap', typeId: '0x82' },
    ]);
    expect(mainPartition(l)?.index).toBe(1);
    expect(() => mainPartition(l, 2)).toThrow(/partition 2 \(swap\) cannot be resized/);
    // MBR: no backup area, the last partition may end at the last sector.
    const plan = planRestore(l, 32 * GiB);
    expect(placed(plan)).toEqual([
      [1, MiB, 28 * GiB],
      [2, 28 * GiB + MiB, 4 * GiB - MiB],
    ]);
    expect(plan.segments).toEqual([
      { from: 0, to: 0, length: 12 * GiB + MiB },
      { from: 12 * GiB + MiB, to: 28 * GiB + MiB, length: 4 * GiB - MiB },
    ]);
    const small = planRestore(l, 8 * GiB);
    expect(small.resize).toBe('shrink');
    expect(placed(small)).toEqual([
      [1, MiB, 4 * GiB],
      [2, 4 * GiB + MiB, 4 * GiB - MiB],
    ]);
    expect(minDiskBytes(l)).toBe(MiB + 3 * GiB + 4 * GiB - MiB);
  });

  it('an MBR with logical partitions is restored where it is: larger keeps it, smaller than its end is refused', () => {
    const l = layout('mbr', 16 * GiB, [
      { index: 1, startBytes: MiB, sizeBytes: 8 * GiB, filesystem: 'ext4', minSizeBytes: GiB },
      { index: 2, startBytes: 8 * GiB + MiB, sizeBytes: 4 * GiB, typeId: '0x05' },
      { index: 5, startBytes: 8 * GiB + 2 * MiB, sizeBytes: 4 * GiB - MiB, filesystem: 'swap', mode: 'swap', typeId: '0x82' },
    ]);
    const larger = planRestore(l, 32 * GiB);
    expect(larger.resize).toBe('none');
    expect(larger.main).toBeNull();
    expect(placed(larger)).toEqual(l.partitions.map((p) => [p.index, p.startBytes, p.sizeBytes]));
    expect(larger.segments).toEqual([{ from: 0, to: 0, length: 12 * GiB + MiB }]);
    expect(minDiskBytes(l)).toBe(12 * GiB + MiB);
    expect(planRestore(l, 12 * GiB + MiB).segments).toEqual([{ from: 0, to: 0, length: 12 * GiB + MiB }]);
    expect(() => planRestore(l, 10 * GiB)).toThrow(/needs a disk of at least 12\.1 GiB \(2\.1 GiB more than this 10\.0 GiB disk\): an MBR with an extended partition or logical partitions is restored where it is/);
  });

  it('no resizable partition: larger keeps everything in place and only the table moves', () => {
    const l = layout('gpt', GiB, [{ index: 1, startBytes: MiB, sizeBytes: 512 * MiB, filesystem: 'vfat' }]);
    expect(mainPartition(l)).toBeNull();
    const plan = planRestore(l, 2 * GiB);
    expect(plan).toMatchObject({ resize: 'none', main: null, segments: [{ from: 0, to: 0, length: 513 * MiB }] });
    expect(() => planRestore(l, 256 * MiB)).toThrow(/no partition can be resized/);
  });

  it('partitions behind the main one keep their order and are packed at the end, gaps dropped', () => {
    const l = layout('gpt', 10 * GiB, [
      { index: 1, startBytes: MiB, sizeBytes: 5 * GiB, filesystem: 'ext4', minSizeBytes: GiB },
      { index: 3, startBytes: 6 * GiB, sizeBytes: 100 * MiB + 512, filesystem: 'vfat' },
      { index: 2, startBytes: 7 * GiB, sizeBytes: 200 * MiB, filesystem: 'vfat' },
    ]);
    const plan = planRestore(l, 20 * GiB);
    // Index 2 lies last on the disk, so it goes to the end; index 3 right before it, 1 MiB aligned.
    expect(placed(plan)).toEqual([
      [1, MiB, 20 * GiB - 302 * MiB - MiB],
      [3, 20 * GiB - 302 * MiB, 100 * MiB + 512],
      [2, 20 * GiB - 201 * MiB, 200 * MiB],
    ]);
  });

  it('refuses a move over overlapping partitions, and a GPT partition inside the table area', () => {
    const overlap = layout('gpt', GiB, [
      { index: 1, startBytes: MiB, sizeBytes: 100 * MiB, filesystem: 'ext4' },
      { index: 2, startBytes: 50 * MiB, sizeBytes: 100 * MiB },
    ]);
    expect(planRestore(overlap, GiB).resize).toBe('none');
    expect(() => planRestore(overlap, 2 * GiB)).toThrow(/partitions 1 and 2 overlap/);
    const early = layout('gpt', GiB, [{ index: 1, startBytes: 17 * 512, sizeBytes: 100 * MiB, filesystem: 'ext4' }]);
    expect(() => planRestore(early, 2 * GiB)).toThrow(/inside the table area/);
  });

  it('4096-byte sectors: the backup area is 4 sectors of entries and the header', () => {
    const l = layout('gpt', 4 * GiB, [{ index: 1, startBytes: MiB, sizeBytes: 3 * GiB, filesystem: 'xfs' }], 4096);
    expect(usableArea('gpt', 4096, 8 * GiB)).toEqual({ firstUsable: 6 * 4096, usableEnd: 8 * GiB - 5 * 4096 });
    const plan = planRestore(l, 8 * GiB);
    expect(placed(plan)).toEqual([[1, MiB, 8 * GiB - 2 * MiB]]);
    expect(minDiskBytes(l)).toBe(3 * GiB + MiB + 5 * 4096);
  });
});

// ---- property test over random layouts --------------------------------------------------------


const FILESYSTEMS = ['ntfs', 'ext4', 'ext3', 'xfs', 'btrfs', 'vfat', 'swap', null] as const;

function randomLayout(r: () => number): DiskLayout {
  const int = (n: number): number => Math.floor(r() * n);
  const scheme = r() < 0.6 ? 'gpt' : 'mbr';
  const S = r() < 0.75 ? 512 : 4096;
  const n = int(scheme === 'mbr' ? 5 : 7);
  const parts: Part[] = [];
  let cursor = usableArea(scheme, S, 1 << 30).firstUsable;
  if (r() < 0.7) cursor = MiB;
  let index = 0;
  for (let i = 0; i < n; i++) {
    const gap = r() < 0.5 ? 0 : r() < 0.5 ? int(4) * MiB : int(3000) * S;
    const start = cursor + gap;
    const size = r() < 0.3 ? (1 + int(2000)) * S : (1 + int(3000)) * MiB + (r() < 0.3 ? int(500) * S : 0);
    const filesystem = FILESYSTEMS[int(FILESYSTEMS.length)];
    const minSizeBytes = filesystem === null || filesystem === 'swap' || r() < 0.2 ? null : Math.max(1, Math.floor(size * r()));
    index += scheme === 'gpt' && r() < 0.2 ? 2 : 1;
    parts.push({ index, startBytes: start, sizeBytes: size, filesystem, minSizeBytes, mode: filesystem === 'swap' ? 'swap' : 'used-blocks', typeId: scheme === 'mbr' ? '0x83' : '0FC63DAF-8483-4772-8E79-3D69D8477DE4' });
    cursor = start + size;
  }
  const tail = scheme === 'gpt' ? (1 + Math.ceil(16384 / S)) * S : 0;
  const diskSize = cursor + tail + (r() < 0.5 ? 0 : int(5000) * S) + (r() < 0.2 ? int(S) : 0);
  // Table order need not be disk order.
  if (r() < 0.3 && parts.length > 1) {
    const last = parts.length - 1;
    const [a, b] = [parts[0], parts[last]];
    parts[0] = { ...a, index: b.index };
    parts[last] = { ...b, index: a.index };
    parts.sort((x, y) => x.index - y.index);
  }
  return layout(scheme, diskSize, parts, S);
}

/** Maps an image byte through the segments, or null when no segment covers it. */
function mapByte(plan: RestorePlan, b: number): number | null {
  const s = plan.segments.find((g) => g.from <= b && b < g.from + g.length);
  return s ? s.to + (b - s.from) : null;
}

/** Every byte of [from, from+length) maps to to + offset (checked segment by segment). */
function mapsWhole(plan: RestorePlan, from: number, to: number, length: number): boolean {
  let b = from;
  while (b < from + length) {
    const s = plan.segments.find((g) => g.from <= b && b < g.from + g.length);
    if (!s || s.to - s.from !== to - from) return false;
    b = s.from + s.length;
  }
  return true;
}

function checkPlan(l: DiskLayout, plan: RestorePlan, T: number): void {
  const S = l.sectorSize;
  const same = T === l.diskSize;
  const { firstUsable, usableEnd } = usableArea(l.scheme, S, T);
  const segs = plan.segments;
  for (let i = 0; i < segs.length; i++) {
    const g = segs[i];
    expect(g.length).toBeGreaterThan(0);
    expect(g.from + g.length).toBeLessThanOrEqual(l.diskSize);
    expect(g.to + g.length).toBeLessThanOrEqual(same ? T : usableEnd); // never into the new GPT backup area
    if (i > 0) {
      expect(g.from).toBeGreaterThanOrEqual(segs[i - 1].from + segs[i - 1].length);
      expect(g.to).toBeGreaterThanOrEqual(segs[i - 1].to + segs[i - 1].length);
    }
  }
  const byFrom = [...plan.partitions].sort((a, b) => a.fromStart - b.fromStart);
  const byTo = [...plan.partitions].sort((a, b) => a.toStart - b.toStart);
  expect(byTo.map((p) => p.index)).toEqual(byFrom.map((p) => p.index)); // order kept
  for (let i = 0; i < byTo.length; i++) {
    const p = byTo[i];
    if (i > 0) expect(p.toStart).toBeGreaterThanOrEqual(byTo[i - 1].toStart + byTo[i - 1].toSize);
    if (!same) {
      expect(p.toStart).toBeGreaterThanOrEqual(firstUsable);
      expect(p.toStart + p.toSize).toBeLessThanOrEqual(usableEnd);
    }
    expect(p.toStart % S).toBe(0);
    expect(p.toSize % S).toBe(0);
    if (p.toStart !== p.fromStart) expect(p.toStart % MiB).toBe(0); // a start we chose is aligned
    if (p.index === plan.main) {
      expect(p.toStart).toBe(p.fromStart);
      expect((p.toStart + p.toSize) % MiB).toBe(0);
      const src = l.partitions.find((x) => x.index === p.index)!;
      if (plan.resize === 'grow') expect(p.toSize).toBeGreaterThan(p.fromSize);
      if (plan.resize === 'shrink') {
        expect(p.toSize).toBeLessThan(p.fromSize);
        expect(src.minSizeBytes).not.toBeNull();
        expect(p.toSize).toBeGreaterThanOrEqual(Math.ceil(src.minSizeBytes! / MiB) * MiB); // the filesystem's minimum, rounded up to 1 MiB
        // Its old content is not mapped anywhere: the caller shrinks the filesystem first.
        expect(mapByte(plan, p.fromStart)).toBeNull();
        expect(mapByte(plan, p.fromStart + p.fromSize - 1)).toBeNull();
        expect(segs.every((g) => g.to + g.length <= p.toStart || g.to >= p.toStart + p.toSize)).toBe(true);
      } else {
        expect(mapsWhole(plan, p.fromStart, p.toStart, p.fromSize)).toBe(true);
      }
    } else {
      expect(p.toSize).toBe(p.fromSize); // only the main one changes size
      expect(mapsWhole(plan, p.fromStart, p.toStart, p.fromSize)).toBe(true); // content goes where the partition went
    }
  }
  expect(plan.main === null).toBe(plan.resize === 'none');
  // A segment that is not identity carries partition content only.
  for (const g of segs.filter((x) => x.from !== x.to)) {
    let b = g.to;
    while (b < g.to + g.length) {
      const p = plan.partitions.find((x) => x.toStart === b && x.toStart !== x.fromStart);
      expect(p).toBeDefined();
      b += p!.toSize;
    }
    expect(b).toBe(g.to + g.length);
  }
  // The table areas: before the first partition everything is the image's own bytes (boot code, tables, gaps).
  if (byFrom.length) expect(mapsWhole(plan, 0, 0, Math.min(byFrom[0].fromStart, byTo[0].toStart))).toBe(true);
}

describe('planRestore, seeded random layouts', () => {
  it('keeps its invariants, and fits exactly the disks minDiskBytes says', () => {
    const r = prng(20261204);
    let plans = 0;
    let refusals = 0;
    const kinds = new Set<string>();
    for (let iter = 0; iter < 600; iter++) {
      const l = randomLayout(r);
      const S = l.sectorSize;
      const min = minDiskBytes(l);
      expect(min % S).toBe(0);
      expect(min).toBeLessThanOrEqual(l.diskSize);
      const targets = [l.diskSize, min, min - S, Math.floor(l.diskSize * (0.2 + r() * 3)), l.diskSize + Math.floor(r() * 4) * S + Math.floor(r() * S)];
      for (const T of targets) {
        if (T <= 0) continue;
        let plan: RestorePlan;
        try {
          plan = planRestore(l, T);
        } catch (e) {
          expect(e).toBeInstanceOf(LayoutFitError);
          expect(T).toBeLessThan(min);
          expect(T).not.toBe(l.diskSize);
          expect((e as LayoutFitError).shortBytes).toBe(min - T);
          refusals++;
          continue;
        }
        expect(T === l.diskSize || T >= min).toBe(true);
        checkPlan(l, plan, T);
        kinds.add(plan.resize);
        plans++;
      }
    }
    expect(kinds).toEqual(new Set(['none', 'grow', 'shrink']));
    expect(plans).toBeGreaterThan(1000);
    expect(refusals).toBeGreaterThan(300);
  });
});
