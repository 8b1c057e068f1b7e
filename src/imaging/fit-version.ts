/**
 * A version of an image fitted to a smaller disk (issue 12), derived on the server and kept as a
 * version of its own image (fittedImageName) that later deploys onto a disk of the same size reuse.
 * The original version is only read, never changed.
 *
 * How: the RestorePlan says where every partition goes. A sparse working disk of the target's size
 * gets every segment's bytes from the version (hole chunks skipped, nothing materialised as zeros);
 * the main partition is copied out into a sparse file of its own, its filesystem shrunk there
 * (ntfsresize, or e2fsck + resize2fs) and checked, and its first toSize bytes copied to their place;
 * then the new partition table is written and the working disk imported with its layout.
 *
 * The fitted layout's free chunks are the chunks whose every byte is free: free in the version's
 * layout and carried by a segment, or free in the shrunk filesystem's partclone map. Anything else
 * (tables, gaps, a partition without a map, a missing tool) counts as used, so a deploy writes it.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../lib/log.js';
import { runTool, ToolMissingError, type ToolResult } from '../lib/tool.js';
import { mergeRanges, parseDomainMap, subtractRanges } from './domain-map.js';
import { freeChunkTest, parseDiskLayout, type DiskLayout, type LayoutPartition } from './disk-layout.js';
import type { ImageStore } from './image-store.js';
import { readBytes } from './image-export.js';
import { importFile } from './image-import.js';
import { planRestore, type PlacedPartition, type RestorePlan } from './layout-plan.js';
import { assertValidImageName } from './names.js';
import { writePartitionTable, type TableWrite } from './partition-write.js';
import type { VersionReader } from './version-reader.js';

export interface FitOptions {
  /** Where the working files go (as large as the target disk, sparse); removed afterwards whatever happens. */
  readonly tmpDir: string;
  /** The partition to shrink (its index); default: the one planRestore picks. */
  readonly main?: number;
  readonly logger: Logger;
  /** Called at each step with a line saying what is being done. */
  readonly onProgress?: (step: string) => void;
}

export interface FitResult {
  readonly image: string;
  readonly version: number;
  /** True when an existing fitted version (or one another caller was building) was used. */
  readonly reused: boolean;
}

const MiB = 1024 * 1024;
const MAX_NAME = 64;
/** Every fitted version's source starts so: a same-named image made some other way is never added to. */
const SOURCE_PREFIX = 'fit of ';
/** Chunks read from the store at once while copying. */
const READ_BATCH = 8;
/** A shrink of a large filesystem moves data: generous, but a hung tool must not hang the deploy for ever. */
const TOOL_TIMEOUT_MS = 6 * 60 * 60 * 1000;

type Range = readonly [number, number];

/**
 * The name of the image holding fitted versions of `image` for disks of `targetSize` bytes:
 * `<image>.fit-<MiB>m` (or `.fit-<bytes>b` for a size that is not whole MiB). A base too long for
 * the 64-character limit, or ending in '.', is cut and given 8 hex digits of its sha256, so
 * different images keep different names.
 */
export function fittedImageName(image: string, targetSize: number): string {
  assertValidImageName(image);
  if (!Number.isSafeInteger(targetSize) || targetSize <= 0) throw new RangeError(`target disk size ${targetSize} must be a positive number of bytes`);
  const suffix = targetSize % MiB === 0 ? `.fit-${targetSize / MiB}m` : `.fit-${targetSize}b`;
  let base = image;
  if (base.length + suffix.length > MAX_NAME || base.endsWith('.')) {
    const tag = createHash('sha256').update(image).digest('hex').slice(0, 8);
    base = `${image.slice(0, MAX_NAME - suffix.length - tag.length - 1).replace(/\.+$/, '')}-${tag}`;
  }
  const name = `${base}${suffix}`;
  assertValidImageName(name);
  return name;
}

/** The fitted version's source: what it was fitted from, which the reuse check compares exactly. */
function sourceOf(image: string, version: number, targetSize: number, plan: RestorePlan): string {
  return `${SOURCE_PREFIX}${image} version ${version} onto a ${targetSize}-byte disk (main partition ${plan.main ?? 'none'}, resize ${plan.resize})`;
}

/** Fits being built, per store and fitted image: a second caller for the same fit waits for the first. */
const building = new Map<string, { readonly source: string; readonly done: Promise<FitResult> }>();

/**
 * Derives (or reuses) a version of `image` version `version` fitted to a disk of `targetSize` bytes,
 * smaller than the image. Throws LayoutFitError (from planRestore) when the used data cannot fit,
 * an Error when the version has no layout or a step (shrink, check, import) fails.
 */
export async function fitVersion(store: ImageStore, image: string, version: number, targetSize: number, opts: FitOptions): Promise<FitResult> {
  const layout = await store.layout(image, version);
  if (layout === null) {
    const info = await store.versionInfo(image, version);
    throw new Error(`image ${image} version ${version} was captured without a layout: can only be restored onto a disk of at least ${info.size} bytes (re-capture it with the imaging agent to restore it onto smaller disks)`);
  }
  if (!Number.isSafeInteger(targetSize) || targetSize <= 0 || targetSize % layout.sectorSize !== 0) {
    throw new RangeError(`target disk size ${targetSize} must be a positive whole number of ${layout.sectorSize}-byte sectors`);
  }
  if (targetSize >= layout.diskSize) {
    throw new Error(`a ${targetSize}-byte disk is not smaller than image ${image} version ${version} (${layout.diskSize} bytes): deploy it directly, no fitted version is needed`);
  }
  const plan = planRestore(layout, targetSize, opts.main === undefined ? {} : { main: opts.main });
  const name = fittedImageName(image, targetSize);
  const source = sourceOf(image, version, targetSize, plan);
  const slot = `${store.dir}\n${name}`;
  for (let cur = building.get(slot); cur !== undefined; cur = building.get(slot)) {
    if (cur.source === source) return { ...(await cur.done), reused: true };
    await cur.done.catch(() => undefined);
  }
  const done = (async (): Promise<FitResult> => {
    const found = await existingFit(store, name, source);
    if (found !== null) {
      opts.logger.info({ image, version, fitted: name, fittedVersion: found, targetSize }, 'reusing the fitted version');
      return { image: name, version: found, reused: true };
    }
    const made = await buildFit(store, image, version, layout, plan, name, source, opts);
    return { image: name, version: made, reused: false };
  })();
  building.set(slot, { source, done });
  try {
    return await done;
  } finally {
    if (building.get(slot)?.done === done) building.delete(slot);
  }
}

/**
 * The fitted image's newest version that was fitted exactly so (the source names the original's
 * version, so deploys of different versions of one image onto one disk size each find their own,
 * issue 13); refuses an image of that name made otherwise.
 */
async function existingFit(store: ImageStore, name: string, source: string): Promise<number | null> {
  const versions = await store.versions(name);
  const newest = versions[versions.length - 1];
  if (newest === undefined) return null;
  const info = await store.versionInfo(name, newest);
  if (!info.source.startsWith(SOURCE_PREFIX)) {
    throw new Error(`image ${name} exists but was not made by fitting an image to a smaller disk (its source: ${info.source}); rename or remove it so the fitted version can use that name`);
  }
  for (const v of [...versions].reverse()) {
    const found = v === newest ? info : await store.versionInfo(name, v);
    if (found.source === source && (await store.layout(name, v)) !== null) return v;
  }
  return null;
}

async function buildFit(store: ImageStore, image: string, version: number, layout: DiskLayout, plan: RestorePlan, name: string, source: string, opts: FitOptions): Promise<number> {
  const log = opts.logger.child({ component: 'fit-version', image, version, fitted: name, targetSize: plan.targetSize });
  const step = (what: string): void => {
    log.info(what);
    opts.onProgress?.(what);
  };
  const work = await mkdtemp(join(opts.tmpDir, 'fit-'));
  const reader = await store.openVersion(image, version);
  try {
    const cs = store.chunkSize;
    const writes = writePartitionTable(layout, plan, await readBytes(reader, 0, Math.max(512, layout.sectorSize)));
    const carried = carriedFree(layout, plan);

    let main: { placed: PlacedPartition; part: LayoutPartition; file: string; free: Range[] | null } | null = null;
    if (plan.resize === 'shrink' && plan.main !== null) {
      const placed = plan.partitions.find((p) => p.index === plan.main) as PlacedPartition;
      const part = layout.partitions.find((p) => p.index === plan.main) as LayoutPartition;
      const file = join(work, `partition-${part.index}.img`);
      step(`copying partition ${part.index} (${part.filesystem}, ${placed.fromSize} bytes) out of ${image} version ${version}`);
      await withFile(file, placed.fromSize, (fh) => copyFromVersion(reader, placed.fromStart, placed.fromSize, fh, 0, () => false, cs));
      step(`shrinking the ${part.filesystem} filesystem of partition ${part.index} to ${placed.toSize} bytes`);
      await shrinkFilesystem(part, file, placed.toSize);
      const free = await freeRangesOf(part, file, placed.toSize, work, log);
      main = { placed, part, file, free };
    }

    const mainFree = main?.free ? main.free.map(([s, e]): Range => [s + main.placed.toStart, e + main.placed.toStart]) : [];
    const tables = writes.map((w): Range => [w.offset, w.offset + w.data.length]);
    const freeChunks = freeRuns(subtractRanges(mergeRanges([...carried, ...mainFree]), mergeRanges(tables)), plan.targetSize, cs);
    const fitted = fittedLayout(layout, plan, freeChunks, cs, main ? { index: main.part.index, usedBytes: main.free ? main.placed.toSize - sumRanges(main.free) : null } : null);
    // The store keeps it for every later deploy of this size: it must pass the same check an agent's layout does.
    parseDiskLayout(fitted);
    const isFree = freeChunkTest(fitted);

    step(`building the ${plan.targetSize}-byte disk`);
    const disk = join(work, 'disk.img');
    await withFile(disk, plan.targetSize, async (fh) => {
      for (const g of plan.segments) await copyFromVersion(reader, g.from, g.length, fh, g.to, isFree, cs);
      if (main) await copyFromFile(main.file, main.placed.toSize, fh, main.placed.toStart, isFree, cs);
      await writeTables(fh, writes);
    });
    step(`storing the fitted version as ${name}`);
    const info = await importFile(store, name, disk, { source, layout: fitted });
    log.info({ fittedVersion: info.version, dataBytes: info.dataBytes }, 'fitted version stored');
    return info.version;
  } catch (err) {
    throw new Error(`fitting image ${image} version ${version} to a ${plan.targetSize}-byte disk failed: ${(err as Error).message}`, { cause: err });
  } finally {
    reader.close();
    await rm(work, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// The fitted layout

/** The version's free bytes each segment carries, at their place on the target. */
function carriedFree(layout: DiskLayout, plan: RestorePlan): Range[] {
  const free = layout.freeChunks.map(([first, count]): Range => [first * layout.chunkSize, Math.min((first + count) * layout.chunkSize, layout.diskSize)]);
  const out: Range[] = [];
  for (const g of plan.segments) {
    for (const [s, e] of free) {
      const a = Math.max(s, g.from);
      const b = Math.min(e, g.from + g.length);
      if (a < b) out.push([a - g.from + g.to, b - g.from + g.to]);
    }
  }
  return out;
}

/** Chunks of `chunkSize` lying wholly inside `free` (sorted, merged), as [first, count] runs. */
function freeRuns(free: readonly Range[], diskSize: number, chunkSize: number): [number, number][] {
  const chunkCount = Math.ceil(diskSize / chunkSize);
  const out: [number, number][] = [];
  for (const [s, e] of free) {
    const first = Math.ceil(s / chunkSize);
    // The last chunk may be short: it is free when the range reaches the disk's end.
    const end = e >= diskSize ? chunkCount : Math.floor(e / chunkSize);
    if (end <= first) continue;
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === first) last[1] += end - first;
    else out.push([first, end - first]);
  }
  return out;
}

function fittedLayout(layout: DiskLayout, plan: RestorePlan, freeChunks: [number, number][], chunkSize: number, main: { index: number; usedBytes: number | null } | null): DiskLayout {
  const partitions = layout.partitions.map((p): LayoutPartition => {
    const placed = plan.partitions.find((x) => x.index === p.index) as PlacedPartition;
    const moved = { ...p, startBytes: placed.toStart, sizeBytes: placed.toSize };
    if (main === null || p.index !== main.index) return moved;
    return {
      ...moved,
      usedBytes: main.usedBytes ?? p.usedBytes,
      minSizeBytes: p.minSizeBytes === null ? null : Math.min(p.minSizeBytes, placed.toSize),
    };
  });
  return { ...layout, diskSize: plan.targetSize, partitions, freeChunks, chunkSize };
}

// ---------------------------------------------------------------------------------------------
// Shrinking the main filesystem

/** Runs a shrink or check tool on the server, naming the package that brings a missing one. */
async function serverTool(cmd: string, args: readonly string[]): Promise<ToolResult> {
  try {
    return await runTool(cmd, args, { timeoutMs: TOOL_TIMEOUT_MS });
  } catch (e) {
    if (e instanceof ToolMissingError) throw new Error(`${cmd} is not installed on the server; install it (ntfs-3g, e2fsprogs or partclone) to restore onto smaller disks`, { cause: e });
    throw e;
  }
}

async function mustRun(cmd: string, args: readonly string[], ok: (r: ToolResult) => boolean, what: string): Promise<ToolResult> {
  const r = await serverTool(cmd, args);
  if (!ok(r)) {
    const said = `${r.stdout}\n${r.stderr}`.trim().split('\n').slice(-12).join('\n');
    throw new Error(`${what}: ${cmd} ${args.join(' ')} failed (exit ${r.code === -1 ? 'killed' : r.code}):\n${said}`);
  }
  return r;
}

/** Shrinks the filesystem in `file` to fit `toSize` bytes, cuts the file to that size and checks the result. */
async function shrinkFilesystem(part: LayoutPartition, file: string, toSize: number): Promise<void> {
  const fs = part.filesystem;
  const name = `partition ${part.index} (${fs})`;
  if (fs === 'ntfs') {
    await mustRun('ntfsresize', ['--force', '--no-progress-bar', '-s', String(toSize), file], (r) => r.code === 0, `shrinking the NTFS of ${name} failed; check the volume in Windows (chkdsk /f), capture again, or restore onto a larger disk`);
    await truncateFile(file, toSize);
    // ntfsresize puts the backup boot sector at the new end: a check of the cut file sees all of the volume.
    await mustRun('ntfsfix', ['-n', file], (r) => r.code === 0 && /processed successfully/.test(r.stdout), `the shrunk NTFS of ${name} does not check clean; restore onto a larger disk`);
    return;
  }
  if (fs === 'ext2' || fs === 'ext3' || fs === 'ext4') {
    // e2fsck -p: 0 clean, 1 errors corrected; anything else needs a person.
    await mustRun('e2fsck', ['-f', '-p', file], (r) => r.code === 0 || r.code === 1, `checking the ${fs} of ${name} before shrinking it found errors it could not correct; repair it on the PC (e2fsck -f), capture again, or restore onto a larger disk`);
    await mustRun('resize2fs', [file, `${Math.floor(toSize / 1024)}K`], (r) => r.code === 0, `shrinking the ${fs} of ${name} failed; restore onto a larger disk`);
    await truncateFile(file, toSize);
    await mustRun('e2fsck', ['-fn', file], (r) => r.code === 0, `the shrunk ${fs} of ${name} does not check clean; restore onto a larger disk`);
    return;
  }
  throw new Error(`${name} cannot be shrunk here (only ntfs and ext2/3/4 can); restore onto a disk where it keeps its size`);
}

/**
 * Free byte ranges of the shrunk filesystem (relative to its start) from partclone's domain map, or
 * null when there is no map to trust: every byte then counts as used. Bytes the map does not name
 * (NTFS's backup boot sector past the volume) count as used.
 */
async function freeRangesOf(part: LayoutPartition, file: string, size: number, work: string, log: Logger): Promise<Range[] | null> {
  const tool = part.filesystem === 'ntfs' ? 'partclone.ntfs' : 'partclone.extfs';
  const map = join(work, `partition-${part.index}.map`);
  // -I: ntfsresize leaves the volume marked for Windows' chkdsk, which partclone would refuse; ntfsfix -n just found it clean.
  const args = ['-D', ...(part.filesystem === 'ntfs' ? ['-I'] : []), '-s', file, '-O', map, '-L', join(work, 'partclone.log')];
  try {
    const r = await serverTool(tool, args);
    if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr.trim().split('\n').slice(-3).join(' ')}`);
    return parseFreeRanges(await readFile(map, 'utf8'), size);
  } catch (err) {
    log.warn({ partition: part.index, err: (err as Error).message }, `${tool} could not map the shrunk filesystem: every chunk of it counts as used (the fitted version is larger, but correct)`);
    return null;
  }
}

/** The ranges of a partclone domain map that are not in use (anything but "+"), checked to lie within [0, size). */
function parseFreeRanges(text: string, size: number): Range[] {
  const map = parseDomainMap(text);
  const last = [...map.used, ...map.free].reduce((n, [, e]) => Math.max(n, e), 0);
  if (last > size) throw new Error(`the domain map names bytes up to ${last}, past the ${size}-byte filesystem`);
  return map.free.map(([s2, e]): Range => [s2, e]);
}

// ---------------------------------------------------------------------------------------------
// Files and copies

async function withFile(path: string, size: number, fn: (fh: FileHandle) => Promise<void>): Promise<void> {
  const fh = await open(path, 'w+');
  try {
    await fh.truncate(size);
    await fn(fh);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function truncateFile(path: string, size: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}

let zeros = Buffer.alloc(0);
function isZero(b: Buffer): boolean {
  if (zeros.length < b.length) zeros = Buffer.alloc(b.length);
  return b.equals(zeros.subarray(0, b.length));
}

/**
 * Writes `data` at `offset` of the working file, piece by target chunk: pieces in free chunks and
 * pieces of zeros are not written, so the file stays sparse and free chunks stay holes.
 */
async function writeSparse(fh: FileHandle, offset: number, data: Buffer, isFree: (chunk: number) => boolean, chunkSize: number): Promise<void> {
  let at = 0;
  while (at < data.length) {
    const pos = offset + at;
    const idx = Math.floor(pos / chunkSize);
    const n = Math.min(data.length - at, (idx + 1) * chunkSize - pos);
    const piece = data.subarray(at, at + n);
    if (!isFree(idx) && !isZero(piece)) {
      for (let done = 0; done < n; ) done += (await fh.write(piece, done, n - done, pos + done)).bytesWritten;
    }
    at += n;
  }
}

/** Copies version bytes [from, from + length) to `to` of the file; hole chunks are skipped. */
async function copyFromVersion(reader: VersionReader, from: number, length: number, fh: FileHandle, to: number, isFree: (chunk: number) => boolean, chunkSize: number): Promise<void> {
  const cs = reader.chunkSize;
  const end = from + length;
  const data: number[] = [];
  for (let i = Math.floor(from / cs); i * cs < end; i++) if (!reader.isHole(i)) data.push(i);
  for (let b = 0; b < data.length; b += READ_BATCH) {
    const batch = data.slice(b, b + READ_BATCH);
    const chunks = await Promise.all(batch.map((i) => reader.readChunk(i)));
    for (let k = 0; k < batch.length; k++) {
      const start = batch[k] * cs;
      const a = Math.max(start, from);
      const z = Math.min(start + cs, end);
      await writeSparse(fh, a - from + to, (chunks[k] as Buffer).subarray(a - start, z - start), isFree, chunkSize);
    }
  }
}

/** Copies the first `length` bytes of a file to `to` of the working file. */
async function copyFromFile(path: string, length: number, fh: FileHandle, to: number, isFree: (chunk: number) => boolean, chunkSize: number): Promise<void> {
  const src = await open(path, 'r');
  try {
    const buf = Buffer.alloc(4 * MiB);
    for (let done = 0; done < length; ) {
      const want = Math.min(buf.length, length - done);
      const { bytesRead } = await src.read(buf, 0, want, done);
      if (bytesRead !== want) throw new Error(`${path} ended at byte ${done + bytesRead}, expected ${length}`);
      await writeSparse(fh, to + done, buf.subarray(0, want), isFree, chunkSize);
      done += want;
    }
  } finally {
    await src.close();
  }
}

async function writeTables(fh: FileHandle, writes: readonly TableWrite[]): Promise<void> {
  for (const w of writes) for (let done = 0; done < w.data.length; ) done += (await fh.write(w.data, done, w.data.length - done, w.offset + done)).bytesWritten;
}

// ---------------------------------------------------------------------------------------------
// Byte ranges

const sumRanges = (ranges: readonly Range[]): number => ranges.reduce((n, [s, e]) => n + (e - s), 0);
