/**
 * partclone's domain map (`partclone.<fs> -D -O MAP --offset_domain=START`): a ddrescue-style map file
 * saying which byte ranges of the partition the filesystem uses. Pure: text in, byte ranges out.
 *
 * The format, as partclone 0.3.23 writes it:
 *
 *     # Domain logfile created by unset_name v0.3.23
 *     # Offset: 0x00100000
 *     # current_pos  current_status
 *     0x040FF000     ?
 *     #      pos        size  status
 *     0x00100000  0x00003000  +
 *     0x00103000  0x00001000  ?
 *
 * `+` marks used blocks, `?` free ones; positions already include the offset (disk offsets). The map
 * may stop short of the partition's end (NTFS keeps its backup boot sector in the last sector, outside
 * the volume partclone maps), so a capture trusts only what the map calls free: see usedInPartition().
 */

/** Bytes [start, end). */
export type ByteRange = readonly [number, number];

export class DomainMapError extends Error {
  constructor(message: string) {
    super(`partclone domain map: ${message}`);
    this.name = 'DomainMapError';
  }
}

export interface DomainMap {
  /** The `# Offset:` the map declares, or null when it has none. */
  readonly offset: number | null;
  /** Ranges marked `+`, sorted and merged. */
  readonly used: readonly ByteRange[];
  /** Every other range (`?`, and ddrescue's `*`, `/`, `-`, which partclone does not write), sorted and merged. */
  readonly free: readonly ByteRange[];
}

const NUMBER = /^(?:0x[0-9a-f]+|\d+)$/i;
const STATUS = /^[?*/\-+]$/;

function parseNumber(text: string, line: number): number {
  if (!NUMBER.test(text)) throw new DomainMapError(`line ${line}: "${text}" is not a number`);
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new DomainMapError(`line ${line}: ${text} is too large`);
  return value;
}

/** Sorts ranges and merges those that overlap or touch; empty ranges are dropped. */
export function mergeRanges(ranges: readonly ByteRange[]): ByteRange[] {
  const sorted = ranges.filter(([s, e]) => e > s).sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [s, e] of sorted) {
    const last = out[out.length - 1];
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

/** `outer` without the bytes any of `holes` covers; both sorted and merged. */
export function subtractRanges(outer: readonly ByteRange[], holes: readonly ByteRange[]): ByteRange[] {
  const out: ByteRange[] = [];
  let h = 0;
  for (const [start, end] of outer) {
    let at = start;
    while (h < holes.length && holes[h][1] <= at) h++;
    for (let k = h; k < holes.length && holes[k][0] < end; k++) {
      if (holes[k][0] > at) out.push([at, holes[k][0]]);
      at = Math.max(at, holes[k][1]);
      if (at >= end) break;
    }
    if (at < end) out.push([at, end]);
  }
  return out;
}

/** Parses a domain map; anything that is not one is an error naming the line. */
export function parseDomainMap(text: string): DomainMap {
  let offset: number | null = null;
  let sawStatusLine = false;
  const used: ByteRange[] = [];
  const free: ByteRange[] = [];
  let lastEnd = 0;
  let entries = 0;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const line = lines[i].trim();
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^#\s*Offset:\s*(\S+)\s*$/i.exec(line);
      if (m) offset = parseNumber(m[1], lineNo);
      continue;
    }
    const fields = line.split(/\s+/);
    if (!sawStatusLine) {
      // ddrescue's first data line: current position, status, and optionally the pass.
      if (fields.length < 2 || fields.length > 3 || !STATUS.test(fields[1])) throw new DomainMapError(`line ${lineNo}: expected "current_pos current_status", got "${line}"`);
      parseNumber(fields[0], lineNo);
      sawStatusLine = true;
      continue;
    }
    if (fields.length !== 3 || !STATUS.test(fields[2])) throw new DomainMapError(`line ${lineNo}: expected "pos size status", got "${line}"`);
    const pos = parseNumber(fields[0], lineNo);
    const size = parseNumber(fields[1], lineNo);
    if (size === 0) throw new DomainMapError(`line ${lineNo}: a range of size 0`);
    if (pos < lastEnd) throw new DomainMapError(`line ${lineNo}: range at ${pos} overlaps or precedes the one before it (ending at ${lastEnd})`);
    const end = pos + size;
    if (!Number.isSafeInteger(end)) throw new DomainMapError(`line ${lineNo}: range ends past 2^53`);
    (fields[2] === '+' ? used : free).push([pos, end]);
    lastEnd = end;
    entries++;
  }
  if (!sawStatusLine || entries === 0) throw new DomainMapError('no ranges in the map (empty or not a domain map)');
  if (offset !== null) {
    const first = Math.min(used[0]?.[0] ?? Infinity, free[0]?.[0] ?? Infinity);
    if (first < offset) throw new DomainMapError(`a range starts at ${first}, before the map's declared offset ${offset}`);
  }
  return { offset, used: mergeRanges(used), free: mergeRanges(free) };
}

/**
 * The bytes of the partition [start, start + size) a capture must read: all of it except what the map
 * calls free. Bytes the map does not mention count as used; the map's ranges outside the partition
 * are an error (it belongs to another partition or was written without its offset).
 */
export function usedInPartition(map: DomainMap, start: number, size: number): ByteRange[] {
  const end = start + size;
  for (const [s, e] of [...map.used, ...map.free]) {
    if (s < start || e > end) throw new DomainMapError(`range [${s}, ${e}) lies outside the partition [${start}, ${end}); was the map made with --offset_domain=${start}?`);
  }
  return subtractRanges([[start, end]], map.free);
}
