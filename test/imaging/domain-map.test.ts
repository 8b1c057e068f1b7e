import { describe, expect, it } from 'vitest';
import { DomainMapError, mergeRanges, parseDomainMap, subtractRanges, usedInPartition } from '../../src/imaging/domain-map.js';

/** As partclone.ntfs 0.3.23 wrote it for a 64 MiB NTFS at 1 MiB (the map stops one cluster short: the backup boot sector). */
const NTFS_MAP = `# Domain logfile created by unset_name v0.3.23
# Source: ntfs.img
# Offset: 0x00100000
# current_pos  current_status
0x040FF000     ?
#      pos        size  status
0x00100000  0x00003000  +
0x00103000  0x00001000  ?
0x00104000  0x00013000  +
0x00117000  0x007EC000  ?
0x00903000  0x00066000  +
0x00969000  0x01796000  ?
0x020FF000  0x00701000  +
0x02800000  0x018FF000  ?
`;

describe('partclone domain map', () => {
  it('parses the real format into merged used and free ranges in disk offsets', () => {
    const m = parseDomainMap(NTFS_MAP);
    expect(m.offset).toBe(0x100000);
    expect(m.used).toEqual([
      [0x100000, 0x103000],
      [0x104000, 0x117000],
      [0x903000, 0x969000],
      [0x20ff000, 0x2800000],
    ]);
    expect(m.free[0]).toEqual([0x103000, 0x104000]);
    expect(m.free[m.free.length - 1]).toEqual([0x2800000, 0x40ff000]);
  });

  it('counts what the map does not call free as used, up to the partition end (NTFS backup boot sector)', () => {
    const start = 0x100000;
    const size = 64 * 1024 * 1024;
    const used = usedInPartition(parseDomainMap(NTFS_MAP), start, size);
    expect(used).toEqual([
      [0x100000, 0x103000],
      [0x104000, 0x117000],
      [0x903000, 0x969000],
      [0x20ff000, 0x2800000],
      [0x40ff000, start + size],
    ]);
  });

  it('merges adjacent used lines and accepts decimal numbers', () => {
    const m = parseDomainMap('0 ?\n0 512 +\n512 512 +\n1024 1024 ?\n2048 10 +\n');
    expect(m.offset).toBeNull();
    expect(m.used).toEqual([
      [0, 1024],
      [2048, 2058],
    ]);
  });

  it('rejects garbage with the line at fault', () => {
    expect(() => parseDomainMap('')).toThrow(DomainMapError);
    expect(() => parseDomainMap('# only comments\n')).toThrow(/no ranges/);
    expect(() => parseDomainMap('hello world\n')).toThrow(/line 1: expected "current_pos current_status"/);
    expect(() => parseDomainMap('0x0 ?\n0x0 0x10 +\nbanana 0x10 +\n')).toThrow(/line 3: "banana" is not a number/);
    expect(() => parseDomainMap('0x0 ?\n0x0 0x10 x\n')).toThrow(/line 2: expected "pos size status"/);
    expect(() => parseDomainMap('0x0 ?\n0x0 0x10 + extra\n')).toThrow(/line 2/);
    expect(() => parseDomainMap('0x0 ?\n0x10 0x10 +\n0x08 0x10 ?\n')).toThrow(/line 3: range at 8 overlaps/);
    expect(() => parseDomainMap('0x0 ?\n0x10 0x0 +\n')).toThrow(/size 0/);
    expect(() => parseDomainMap('0x0 ?\n0xFFFFFFFFFFFFFFFF 0x10 +\n')).toThrow(/too large/);
    expect(() => parseDomainMap('# Offset: 0x1000\n0x0 ?\n0x0 0x10 +\n')).toThrow(/before the map's declared offset/);
  });

  it('rejects a map whose ranges lie outside the partition (made without the offset)', () => {
    const m = parseDomainMap('0x0 ?\n0x0 0x1000 +\n0x1000 0x1000 ?\n');
    expect(() => usedInPartition(m, 0x100000, 0x2000)).toThrow(/outside the partition.*--offset_domain=1048576/);
  });

  it('merges and subtracts ranges', () => {
    expect(mergeRanges([[5, 8], [0, 2], [2, 3], [7, 9], [4, 4]])).toEqual([
      [0, 3],
      [5, 9],
    ]);
    expect(subtractRanges([[0, 100]], [[10, 20], [30, 40], [90, 120]])).toEqual([
      [0, 10],
      [20, 30],
      [40, 90],
    ]);
    expect(subtractRanges([[0, 10], [20, 30]], [[5, 25]])).toEqual([
      [0, 5],
      [25, 30],
    ]);
    expect(subtractRanges([[0, 10]], [])).toEqual([[0, 10]]);
    expect(subtractRanges([[0, 10]], [[0, 10]])).toEqual([]);
  });
});
