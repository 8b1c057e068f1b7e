/**
 * Real disks for the issue-12 tests: a Windows-like GPT disk (ESP FAT32, MSR, NTFS C:, NTFS Recovery at
 * the end) and a Linux-like MBR disk (ext4, swap at the end), built from the real tools on plain files,
 * and a checker that proves a disk (the built one, or one a deploy wrote) still holds them.
 *
 * No loop devices (the host kernel has none) and no mounts: each partition is built as its own file with the
 * filesystem's tools, then copied into the disk file at its offset. Before anything is formatted the whole
 * disk holds seeded random bytes (each partition file starts with the bytes of its region), so
 * the free space of every filesystem is dirty the way a used PC's is (mkntfs -Q, mkfs.vfat and mkfs.ext4
 * with nodiscard leave old bytes in place); a capture that only skips zeros cannot pass a test built on these.
 *
 * Limitation: ntfs-3g has no offline way to make a directory (ntfscp copies into existing ones only), so
 * NTFS files sit in the volume's root; the ESP and ext4 trees have nested directories.
 */
import { spawn } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, open, rm, stat, writeFile, readFile, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { run, type RunResult } from './run.js';

const MiB = 1024 * 1024;
const SECTOR = 512;
const COPY_PIECE = 4 * MiB;
/** The keystream is the cipher of zeros; one shared input buffer for pieces up to COPY_PIECE. */
const ZEROS = Buffer.alloc(COPY_PIECE);

export interface BuiltFile {
  /** Path inside the filesystem, e.g. '/EFI/BOOT/BOOTX64.EFI'. */
  readonly path: string;
  readonly data: Buffer;
}

export type BuiltFs = 'vfat' | 'msr' | 'ntfs' | 'ext4' | 'swap';

export interface BuiltPartition {
  /** Slot in the table, 1-based. */
  readonly index: number;
  readonly startBytes: number;
  readonly sizeBytes: number;
  readonly fs: BuiltFs;
  readonly label: string | null;
  /** The filesystem's UUID as blkid prints it (vfat "1234-ABCD", ntfs 16 hex digits, ext4/swap RFC 4122); null for the MSR. */
  readonly uuid: string | null;
  /** GPT unique partition GUID (upper case); null on MBR. */
  readonly guid: string | null;
  /** GPT type GUID (upper case), or the MBR type byte as "0x83" (the form src/imaging/disk-layout.ts uses). */
  readonly typeId: string;
  /** GPT partition name; '' on MBR. */
  readonly name: string;
  /** GPT attributes as sfdisk spells them ("RequiredPartition GUID:63"); '' when none, always '' on MBR. */
  readonly attrs: string;
  /** MBR boot flag (the layout's attributes "128"); false on GPT. */
  readonly bootable: boolean;
  /** sha256 (hex) of the whole partition for partitions without a filesystem (the MSR), checked byte for byte; null otherwise. */
  readonly contentSha256: string | null;
  readonly files: readonly BuiltFile[];
}

export interface BuiltDisk {
  readonly path: string;
  readonly size: number;
  readonly scheme: 'gpt' | 'mbr';
  /** GPT disk GUID (upper case), or the MBR disk signature as 8 lower-case hex digits without "0x". */
  readonly diskGuid: string | null;
  readonly partitions: readonly BuiltPartition[];
  /** Sum of the data of every built file on every partition. */
  readonly usedBytes: number;
}

export interface BuildOptions {
  readonly sizeMiB: number;
  /**
   * GUIDs, UUIDs, file contents and free-space bytes follow from the seed; only what the mkfs tools make up
   * themselves (timestamps, ext4's hash seed) differs between two builds with one seed.
   */
  readonly seed: number;
  /** Data in the main filesystem (NTFS C: or ext4), in several files. */
  readonly dataMiB: number;
  /** Windows disk only: the ESP's files instead of the seeded stand-ins (a test that boots the disk puts real loaders there). */
  readonly espFiles?: readonly BuiltFile[];
}

export interface CheckOptions {
  /** Where each partition now lives on the checked disk (index → start, size); default: as built. */
  readonly placement?: ReadonlyMap<number, { startBytes: number; sizeBytes: number }>;
}

/** GPT partition type GUIDs of a Windows installation. */
export const GPT_TYPES = {
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  msr: 'E3C9E316-0B5C-4DB8-817D-F92DF00215AE',
  basicData: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7',
  winRe: 'DE94BBA4-06D1-4D40-A16A-BFD50179D6AC',
} as const;

/** Sizes of the fixed partitions. The ESP is near the smallest FAT32 mkfs.vfat accepts (65525 clusters of 512 bytes ≈ 33 MiB). */
export const WINDOWS_SIZES_MIB = { esp: 36, msr: 16, recovery: 32 } as const;
export const LINUX_SIZES_MIB = { swap: 32 } as const;

// ---------------------------------------------------------------------------------------------
// Seeded bytes and identifiers

/**
 * Seeded random bytes: AES-128-CTR keystream under a key derived from (seed, purpose). Not prng.ts's noise():
 * its xorshift32 seeds are offsets into one 16 GiB cycle, so a disk-sized fill would overlap file contents
 * made from other seeds, and a file's bytes could then also appear in free space.
 */
export class SeededBytes {
  private readonly cipher;
  /** `offset` (a multiple of 16) starts the stream there, so a region of a long stream is made without the bytes before it. */
  constructor(seed: number, purpose: string, offset = 0) {
    if (offset % 16 !== 0) throw new Error(`SeededBytes: offset ${offset} is not a multiple of 16`);
    const key = createHash('sha256').update(`real-disks:${seed}:${purpose}`).digest().subarray(0, 16);
    const counter = Buffer.alloc(16);
    counter.writeBigUInt64BE(BigInt(offset / 16), 8);
    this.cipher = createCipheriv('aes-128-ctr', key, counter);
  }
  next(length: number): Buffer {
    if (length > ZEROS.length) return this.cipher.update(Buffer.alloc(length));
    return this.cipher.update(ZEROS.subarray(0, length));
  }
}

export function seededBytes(seed: number, purpose: string, length: number): Buffer {
  return new SeededBytes(seed, purpose).next(length);
}

/** A version-4-shaped GUID (upper case) that follows from (seed, purpose). */
export function seededGuid(seed: number, purpose: string): string {
  const b = seededBytes(seed, `guid:${purpose}`, 16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex').toUpperCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function seededHex(seed: number, purpose: string, digits: number): string {
  return seededBytes(seed, `hex:${purpose}`, Math.ceil(digits / 2)).toString('hex').slice(0, digits);
}

// ---------------------------------------------------------------------------------------------
// Processes and byte ranges

/** Runs a tool that must succeed; the error names the command, its exit and what it printed. */
async function must(cmd: string, args: readonly string[], env?: NodeJS.ProcessEnv, input?: string): Promise<RunResult> {
  const r = await run(cmd, args, { env: env ?? process.env, input, timeoutMs: 300_000 });
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.code ?? r.signal}): ${(r.stderr || r.stdout).trim().slice(0, 2000)}`);
  }
  return r;
}

/** Runs a tool with its stdout going to a file (binary-safe, unlike run()'s string output). */
function runToFile(cmd: string, args: readonly string[], outPath: string, env?: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string }> {
  return open(outPath, 'w').then(
    (fh) =>
      new Promise((resolve, reject) => {
        const proc = spawn(cmd, args, { env: env ?? process.env, stdio: ['ignore', fh.fd, 'pipe'] });
        let stderr = '';
        proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
        proc.on('error', (err) => {
          void fh.close();
          reject(err);
        });
        proc.on('close', (code) => {
          void fh.close().then(() => resolve({ code, stderr }));
        });
      }),
  );
}

const MTOOLS_ENV = (): NodeJS.ProcessEnv => ({ ...process.env, MTOOLS_SKIP_CHECK: '1' });

async function copyRange(src: FileHandle, srcOffset: number, dst: FileHandle, dstOffset: number, length: number): Promise<void> {
  const buf = Buffer.alloc(Math.min(COPY_PIECE, length));
  for (let done = 0; done < length; ) {
    const want = Math.min(buf.length, length - done);
    const { bytesRead } = await src.read(buf, 0, want, srcOffset + done);
    if (bytesRead !== want) throw new Error(`short read: ${bytesRead} of ${want} bytes at ${srcOffset + done}`);
    await dst.write(buf, 0, want, dstOffset + done);
    done += want;
  }
}

/** Copies `length` bytes at `startBytes` of a disk file into a new file `outPath` (a partition to check or inspect). */
export async function extractPartition(diskPath: string, startBytes: number, length: number, outPath: string): Promise<void> {
  const src = await open(diskPath, 'r');
  const dst = await open(outPath, 'w');
  try {
    const { size } = await src.stat();
    if (startBytes + length > size) throw new Error(`${diskPath} is ${size} bytes: it has no partition at ${startBytes}+${length}`);
    await copyRange(src, startBytes, dst, 0, length);
  } finally {
    await dst.close();
    await src.close();
  }
}

/** Writes a partition file into the disk file at `startBytes` (dd conv=notrunc seek=). */
async function placePartition(partPath: string, diskPath: string, startBytes: number): Promise<void> {
  const src = await open(partPath, 'r');
  const dst = await open(diskPath, 'r+');
  try {
    const { size } = await src.stat();
    await copyRange(src, 0, dst, startBytes, size);
  } finally {
    await dst.close();
    await src.close();
  }
}

/** Writes bytes [streamOffset, streamOffset+length) of the disk's seeded stream into `fh` at `fileOffset`. */
async function writeNoise(fh: FileHandle, seed: number, streamOffset: number, fileOffset: number, length: number): Promise<void> {
  const gen = new SeededBytes(seed, 'disk-noise', streamOffset);
  for (let done = 0; done < length; done += COPY_PIECE) {
    const piece = gen.next(Math.min(COPY_PIECE, length - done));
    await fh.write(piece, 0, piece.length, fileOffset + done);
  }
}

/**
 * Creates the disk file of `size` seeded random bytes, except the `partitions` regions, which stay holes: their
 * files are made from the same stream (makePartitionFile), formatted, and copied in, so each byte is written once.
 */
async function createDirtyDisk(path: string, size: number, seed: number, partitions: readonly { startBytes: number; sizeBytes: number }[] = []): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(size);
    let at = 0;
    for (const p of [...partitions].sort((a, b) => a.startBytes - b.startBytes)) {
      if (p.startBytes > at) await writeNoise(fh, seed, at, at, p.startBytes - at);
      at = Math.max(at, p.startBytes + p.sizeBytes);
    }
    if (size > at) await writeNoise(fh, seed, at, at, size - at);
  } finally {
    await fh.close();
  }
}

/** A partition's file before formatting: the disk's seeded bytes for its region (what a used disk held there). */
async function makePartitionFile(path: string, seed: number, startBytes: number, sizeBytes: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await writeNoise(fh, seed, startBytes, 0, sizeBytes);
  } finally {
    await fh.close();
  }
}

/**
 * A replacement disk for a deploy to write: `dir`/target-<seed>-<sizeMiB>.img, `sizeMiB` of seeded random bytes and no
 * partition table, as a used disk is; anything a deploy fails to write then reads as garbage, not as zeros.
 */
export async function buildTargetDisk(dir: string, opts: { sizeMiB: number; seed: number }): Promise<string> {
  if (!Number.isInteger(opts.sizeMiB) || opts.sizeMiB < 1) throw new Error(`buildTargetDisk: sizeMiB must be a whole number ≥ 1, got ${opts.sizeMiB}`);
  const path = join(dir, `target-${opts.seed}-${opts.sizeMiB}.img`);
  await createDirtyDisk(path, mib(opts.sizeMiB), opts.seed ^ 0x5a5a5a5a);
  return path;
}

/** Counts `blockSize` blocks that hold any non-zero byte in [start, start+length) of a file: how dirty a region is. */
export async function nonZeroBlocks(path: string, startBytes: number, length: number, blockSize = 4096): Promise<number> {
  const fh = await open(path, 'r');
  const buf = Buffer.alloc(COPY_PIECE - (COPY_PIECE % blockSize));
  let count = 0;
  try {
    for (let done = 0; done < length; ) {
      const want = Math.min(buf.length, length - done);
      const { bytesRead } = await fh.read(buf, 0, want, startBytes + done);
      for (let b = 0; b < bytesRead; b += blockSize) {
        const block = buf.subarray(b, Math.min(b + blockSize, bytesRead));
        if (block.some((x) => x !== 0)) count++;
      }
      if (bytesRead < want) break;
      done += want;
    }
  } finally {
    await fh.close();
  }
  return count;
}

/** The first offset (absolute in the file) where `needle` occurs in [startBytes, startBytes+length), or -1. */
export async function findBytes(path: string, needle: Buffer, startBytes: number, length: number): Promise<number> {
  const fh = await open(path, 'r');
  const buf = Buffer.alloc(COPY_PIECE + needle.length);
  try {
    for (let done = 0; done < length; done += COPY_PIECE) {
      const want = Math.min(buf.length, length - done);
      const { bytesRead } = await fh.read(buf, 0, want, startBytes + done);
      const at = buf.subarray(0, bytesRead).indexOf(needle);
      if (at >= 0) return startBytes + done + at;
    }
  } finally {
    await fh.close();
  }
  return -1;
}

/** Inverts one byte of a file at `offset` (a planted fault). */
export async function flipByte(path: string, offset: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, offset);
    b[0] ^= 0xff;
    await fh.write(b, 0, 1, offset);
  } finally {
    await fh.close();
  }
}

/**
 * Where a built file's bytes sit on a disk: the absolute offset of a 4 KiB sample from the middle of its data,
 * searched within its partition (file data is seeded random, so the sample is unique). Needs a file of at least
 * 8 KiB (smaller NTFS files may live inside the MFT record) whose clusters are contiguous, as the files of a fresh
 * build are; `placement` is where the partition is now, when a deploy moved it.
 */
export async function locateFileData(diskPath: string, part: BuiltPartition, filePath: string, placement?: { startBytes: number; sizeBytes: number }): Promise<number> {
  const file = part.files.find((f) => f.path === filePath);
  if (!file) throw new Error(`partition ${part.index} has no built file ${filePath}`);
  if (file.data.length < 8192) throw new Error(`${filePath} has ${file.data.length} bytes; locateFileData needs at least 8 KiB`);
  const sampleAt = Math.floor(file.data.length / 2 / 4096) * 4096;
  const sample = file.data.subarray(sampleAt, sampleAt + 4096);
  const where = placement ?? part;
  const at = await findBytes(diskPath, sample, where.startBytes, where.sizeBytes);
  if (at < 0) throw new Error(`the data of ${filePath} is not on ${diskPath} within partition ${part.index}`);
  return at;
}

// ---------------------------------------------------------------------------------------------
// Filesystem builders (each works on one partition file)

async function buildVfat(part: string, startSector: number, label: string, volumeId: string, files: readonly BuiltFile[], scratch: string): Promise<void> {
  await must('mkfs.vfat', ['-F', '32', '-s', '1', '-S', String(SECTOR), '-h', String(startSector), '-n', label, '-i', volumeId, part]);
  const env = MTOOLS_ENV();
  const dirs = new Set<string>();
  for (const f of files) {
    const parts = f.path.split('/').slice(1, -1);
    for (let i = 1; i <= parts.length; i++) dirs.add(`/${parts.slice(0, i).join('/')}`);
  }
  for (const d of [...dirs].sort((a, b) => a.length - b.length)) await must('mmd', ['-i', part, `::${d}`], env);
  for (const f of files) {
    const src = join(scratch, 'file.bin');
    await writeFile(src, f.data);
    await must('mcopy', ['-o', '-i', part, src, `::${f.path}`], env);
  }
}

async function buildNtfs(part: string, startSector: number, label: string, serial: string, files: readonly BuiltFile[], scratch: string): Promise<void> {
  // -F: a file, not a block device; -f -Q: quick format, which leaves old bytes in free space as Windows' quick format does.
  await must('mkntfs', ['-F', '-f', '-Q', '-L', label, '-p', String(startSector), '-H', '255', '-S', '63', part]);
  await must('ntfslabel', [`--new-serial=${serial}`, part]);
  for (const f of files) {
    if (f.path.lastIndexOf('/') !== 0) throw new Error(`NTFS file ${f.path}: ntfscp cannot create directories; use a root path`);
    const src = join(scratch, 'file.bin');
    await writeFile(src, f.data);
    await must('ntfscp', ['-f', '-q', part, src, f.path]);
  }
}

async function buildExt4(part: string, label: string, uuid: string, files: readonly BuiltFile[], scratch: string): Promise<void> {
  const tree = join(scratch, 'ext4-tree');
  await rm(tree, { recursive: true, force: true });
  await mkdir(tree, { recursive: true });
  for (const f of files) {
    const dest = join(tree, f.path);
    await mkdir(dirname(dest), { recursive: true });
    await writeFile(dest, f.data);
  }
  // nodiscard: a discard on a regular file punches holes, which would zero the free space.
  await must('mkfs.ext4', ['-F', '-q', '-b', '4096', '-E', 'nodiscard', '-U', uuid, '-L', label, '-d', tree, part]);
  await rm(tree, { recursive: true, force: true });
}

async function buildSwap(part: string, label: string, uuid: string): Promise<void> {
  await chmod(part, 0o600);
  await must('mkswap', ['-U', uuid, '-L', label, part]);
}

interface PartitionPlan {
  readonly index: number;
  readonly startBytes: number;
  readonly sizeBytes: number;
  readonly fs: BuiltFs;
  readonly label: string | null;
  readonly uuid: string | null;
  readonly guid: string | null;
  readonly typeId: string;
  readonly name: string;
  readonly attrs: string;
  readonly bootable: boolean;
  readonly files: readonly BuiltFile[];
}

/** Makes the partition's file from the disk's seeded bytes, formats and fills it, and copies it into the disk. */
async function buildPartition(diskPath: string, dir: string, seed: number, p: PartitionPlan): Promise<BuiltPartition> {
  const part = join(dir, `part${p.index}.img`);
  await makePartitionFile(part, seed, p.startBytes, p.sizeBytes);
  const startSector = p.startBytes / SECTOR;
  let contentSha256: string | null = null;
  switch (p.fs) {
    case 'vfat':
      await buildVfat(part, startSector, p.label ?? '', (p.uuid ?? '').replace('-', ''), p.files, dir);
      break;
    case 'ntfs':
      await buildNtfs(part, startSector, p.label ?? '', p.uuid ?? '', p.files, dir);
      break;
    case 'ext4':
      await buildExt4(part, p.label ?? '', p.uuid ?? '', p.files, dir);
      break;
    case 'swap':
      await buildSwap(part, p.label ?? '', p.uuid ?? '');
      break;
    case 'msr': {
      // Windows never writes its reserved partition; a fresh install's reads as zeros. Checked by digest.
      const zeros = Buffer.alloc(p.sizeBytes);
      await writeFile(part, zeros);
      contentSha256 = createHash('sha256').update(zeros).digest('hex');
      break;
    }
  }
  await placePartition(part, diskPath, p.startBytes);
  await rm(part, { force: true });
  await rm(join(dir, 'file.bin'), { force: true });
  return { ...p, contentSha256 };
}

/**
 * Splits `total` bytes over `paths` (seeded content): uneven shares that are not cluster multiples, the second-last
 * file takes the remainder, the last is 300 bytes (small enough for NTFS to keep inside its MFT record).
 */
function dataFiles(seed: number, paths: readonly string[], total: number): BuiltFile[] {
  const shares = [0.45, 0.3, 0.15, 0.05];
  const sizes = paths.map((_, i) => (i < paths.length - 2 ? Math.floor(total * shares[Math.min(i, shares.length - 1)]) - 1234 * (i + 1) : 0));
  sizes[paths.length - 1] = 300;
  sizes[paths.length - 2] = total - sizes.reduce((a, b) => a + b, 0);
  if (sizes.some((n) => n < 0)) throw new Error(`${total} bytes are too few to split over ${paths.length} files`);
  return paths.map((path, i) => ({ path, data: seededBytes(seed, `file:${path}`, sizes[i]) }));
}

function mib(n: number): number {
  return n * MiB;
}

function sumFiles(parts: readonly BuiltPartition[]): number {
  return parts.reduce((n, p) => n + p.files.reduce((m, f) => m + f.data.length, 0), 0);
}

function sfdiskLine(p: PartitionPlan): string {
  const fields = [`start=${p.startBytes / SECTOR}`, `size=${p.sizeBytes / SECTOR}`];
  if (p.guid) {
    fields.push(`type=${p.typeId}`, `uuid=${p.guid}`, `name="${p.name}"`);
    if (p.attrs) fields.push(`attrs="${p.attrs}"`);
  } else {
    fields.push(`type=${p.typeId.replace(/^0x/, '')}`);
    if (p.bootable) fields.push('bootable');
  }
  return fields.join(', ');
}

async function writeTable(diskPath: string, header: readonly string[], plans: readonly PartitionPlan[]): Promise<void> {
  const script = [...header, 'unit: sectors', 'sector-size: 512', '', ...plans.map(sfdiskLine), ''].join('\n');
  await must('sfdisk', ['--no-reread', '--no-tell-kernel', '--wipe', 'never', '--wipe-partitions', 'never', '-q', diskPath], undefined, script);
}

function checkSize(what: string, sizeMiB: number, minMiB: number, dataMiB: number, mainMiB: number): void {
  if (!Number.isInteger(sizeMiB) || sizeMiB < minMiB) throw new Error(`${what}: sizeMiB must be a whole number ≥ ${minMiB}, got ${sizeMiB}`);
  if (!(dataMiB > 0) || dataMiB > mainMiB * 0.8) throw new Error(`${what}: dataMiB ${dataMiB} must be > 0 and fit 80 % of the ${mainMiB} MiB main partition`);
}

/**
 * GPT, 1 MiB aligned: 1 ESP FAT32 "SYSTEM" (/EFI/BOOT/BOOTX64.EFI, /EFI/Microsoft/Boot/{bootmgfw.efi,BCD}),
 * 2 MSR (no filesystem, zeros), 3 NTFS "Windows" (dataMiB in five root files, one small enough to be resident),
 * 4 NTFS "Recovery" (WinRE type, attributes RequiredPartition GUID:63, /Winre.wim and /ReAgent.xml) ending 1 MiB
 * before the disk's end. The disk file is `dir`/windows-<seed>.img.
 */
export async function buildWindowsDisk(dir: string, opts: BuildOptions): Promise<BuiltDisk> {
  const { sizeMiB, seed, dataMiB } = opts;
  const S = WINDOWS_SIZES_MIB;
  const mainStart = 1 + S.esp + S.msr;
  const recoveryStart = sizeMiB - 1 - S.recovery;
  checkSize('buildWindowsDisk', sizeMiB, mainStart + 64 + S.recovery + 1, dataMiB, recoveryStart - mainStart);
  const path = join(dir, `windows-${seed}.img`);
  const espFiles = opts.espFiles ?? [
    { path: '/EFI/BOOT/BOOTX64.EFI', data: seededBytes(seed, 'esp:bootx64', 1_523_456) },
    { path: '/EFI/Microsoft/Boot/bootmgfw.efi', data: seededBytes(seed, 'esp:bootmgfw', 1_890_123) },
    { path: '/EFI/Microsoft/Boot/BCD', data: seededBytes(seed, 'esp:bcd', 32_768) },
  ];
  const cFiles = dataFiles(seed, ['/pagefile.sys', '/hiberfil.sys', '/notes.bin', '/Windows.img', '/desktop.ini'], Math.round(mib(dataMiB)));
  const recoveryFiles = [
    { path: '/Winre.wim', data: seededBytes(seed, 'recovery:winre', 5_432_109) },
    { path: '/ReAgent.xml', data: Buffer.from(`<?xml version='1.0' encoding='utf-8'?><WindowsRE version="2.0"><seed>${seed}</seed></WindowsRE>\n`) },
  ];
  const plans: PartitionPlan[] = [
    { index: 1, startBytes: mib(1), sizeBytes: mib(S.esp), fs: 'vfat', label: 'SYSTEM', uuid: seededHex(seed, 'esp', 8).toUpperCase().replace(/^(.{4})/, '$1-'), guid: seededGuid(seed, 'p1'), typeId: GPT_TYPES.esp, name: 'EFI system partition', attrs: '', bootable: false, files: espFiles },
    { index: 2, startBytes: mib(1 + S.esp), sizeBytes: mib(S.msr), fs: 'msr', label: null, uuid: null, guid: seededGuid(seed, 'p2'), typeId: GPT_TYPES.msr, name: 'Microsoft reserved partition', attrs: '', bootable: false, files: [] },
    { index: 3, startBytes: mib(mainStart), sizeBytes: mib(recoveryStart - mainStart), fs: 'ntfs', label: 'Windows', uuid: seededHex(seed, 'c', 16).toUpperCase(), guid: seededGuid(seed, 'p3'), typeId: GPT_TYPES.basicData, name: 'Basic data partition', attrs: '', bootable: false, files: cFiles },
    { index: 4, startBytes: mib(recoveryStart), sizeBytes: mib(S.recovery), fs: 'ntfs', label: 'Recovery', uuid: seededHex(seed, 'recovery', 16).toUpperCase(), guid: seededGuid(seed, 'p4'), typeId: GPT_TYPES.winRe, name: 'Recovery', attrs: 'RequiredPartition GUID:63', bootable: false, files: recoveryFiles },
  ];
  const partitions: BuiltPartition[] = [];
  await createDirtyDisk(path, mib(sizeMiB), seed, plans);
  for (const p of plans) partitions.push(await buildPartition(path, dir, seed, p));
  const diskGuid = seededGuid(seed, 'disk');
  await writeTable(path, ['label: gpt', `label-id: ${diskGuid}`, 'first-lba: 34'], plans);
  return { path, size: mib(sizeMiB), scheme: 'gpt', diskGuid, partitions, usedBytes: sumFiles(partitions) };
}

/**
 * MBR (fixed label-id), 1 MiB aligned: 1 ext4 "rootfs" (bootable, type 83; dataMiB in files under /home, /var,
 * /usr plus /etc/hostname and an /etc/fstab naming both UUIDs), 2 swap "swap" (type 82) ending at the disk's end.
 * The disk file is `dir`/linux-<seed>.img.
 */
export async function buildLinuxDisk(dir: string, opts: BuildOptions): Promise<BuiltDisk> {
  const { sizeMiB, seed, dataMiB } = opts;
  const swapStart = sizeMiB - LINUX_SIZES_MIB.swap;
  checkSize('buildLinuxDisk', sizeMiB, 1 + 64 + LINUX_SIZES_MIB.swap, dataMiB, swapStart - 1);
  const path = join(dir, `linux-${seed}.img`);
  const rootUuid = seededGuid(seed, 'ext4').toLowerCase();
  const swapUuid = seededGuid(seed, 'swap').toLowerCase();
  const fstab = `UUID=${rootUuid} / ext4 errors=remount-ro 0 1\nUUID=${swapUuid} none swap sw 0 0\n`;
  const files = [
    ...dataFiles(seed, ['/home/user/Documents/report.bin', '/var/lib/app/data.bin', '/usr/lib/big.so', '/home/user/photo.raw', '/etc/hostname'], Math.round(mib(dataMiB))),
    { path: '/etc/fstab', data: Buffer.from(fstab) },
  ];
  const plans: PartitionPlan[] = [
    { index: 1, startBytes: mib(1), sizeBytes: mib(swapStart - 1), fs: 'ext4', label: 'rootfs', uuid: rootUuid, guid: null, typeId: '0x83', name: '', attrs: '', bootable: true, files },
    { index: 2, startBytes: mib(swapStart), sizeBytes: mib(LINUX_SIZES_MIB.swap), fs: 'swap', label: 'swap', uuid: swapUuid, guid: null, typeId: '0x82', name: '', attrs: '', bootable: false, files: [] },
  ];
  const partitions: BuiltPartition[] = [];
  await createDirtyDisk(path, mib(sizeMiB), seed, plans);
  for (const p of plans) partitions.push(await buildPartition(path, dir, seed, p));
  const diskGuid = seededHex(seed, 'mbr-id', 8);
  await writeTable(path, ['label: dos', `label-id: 0x${diskGuid}`], plans);
  return { path, size: mib(sizeMiB), scheme: 'mbr', diskGuid, partitions, usedBytes: sumFiles(partitions) };
}

// ---------------------------------------------------------------------------------------------
// Checking

interface SfdiskPartition {
  readonly node: string;
  readonly start: number;
  readonly size: number;
  readonly type: string;
  readonly uuid?: string;
  readonly name?: string;
  readonly attrs?: string;
  readonly bootable?: boolean;
}

interface SfdiskTable {
  readonly label: string;
  readonly id: string;
  readonly sectorsize?: number;
  readonly partitions?: readonly SfdiskPartition[];
}

/** The partition table as `sfdisk -J` reads it, partitions keyed by index. */
export async function readTable(diskPath: string): Promise<{ scheme: string; id: string; sectorSize: number; partitions: Map<number, SfdiskPartition> }> {
  const r = await run('sfdisk', ['-J', diskPath]);
  if (r.code !== 0) throw new Error(`${diskPath}: sfdisk -J cannot read a partition table (exit ${r.code}): ${r.stderr.trim()}`);
  let table: SfdiskTable;
  try {
    table = (JSON.parse(r.stdout) as { partitiontable: SfdiskTable }).partitiontable;
  } catch (err) {
    throw new Error(`${diskPath}: sfdisk -J printed something that is not its JSON (${(err as Error).message}): ${r.stdout.slice(0, 500)}`, { cause: err });
  }
  const partitions = new Map<number, SfdiskPartition>();
  for (const p of table.partitions ?? []) {
    const index = Number(p.node.slice(diskPath.length).replace(/^p/, ''));
    if (!Number.isInteger(index)) throw new Error(`${diskPath}: cannot tell the index of sfdisk's partition node ${p.node}`);
    partitions.set(index, p);
  }
  return { scheme: table.label, id: table.id, sectorSize: table.sectorsize ?? SECTOR, partitions };
}

/** The GPT disk GUID and partition GUIDs (index → GUID, upper case) of a disk file, or its MBR signature (8 hex digits) and no GUIDs. */
export async function diskGuidsOf(diskPath: string): Promise<{ diskGuid: string; partitionGuids: Map<number, string> }> {
  const t = await readTable(diskPath);
  const partitionGuids = new Map<number, string>();
  for (const [i, p] of t.partitions) if (p.uuid) partitionGuids.set(i, p.uuid.toUpperCase());
  return { diskGuid: t.scheme === 'dos' ? t.id.replace(/^0x/i, '').toLowerCase() : t.id.toUpperCase(), partitionGuids };
}

/**
 * `sgdisk -v` must find no problem (a backup header short of the disk's end is one) and print no warning, except the
 * note that the first usable sector is past the primary array: harmless, and util-linux tools write tables that way.
 */
async function checkGpt(diskPath: string): Promise<void> {
  const r = await run('sgdisk', ['-v', diskPath]);
  const out = `${r.stdout}\n${r.stderr}`;
  const rest = out.replace(/Warning: There is a gap between the main partition table[^]*?Using 'j' on the experts' menu can adjust this gap\./, '');
  if (r.code !== 0 || !/No problems found/.test(out) || /warning|problem|caution/i.test(rest.replace(/No problems found/g, ''))) {
    throw new Error(`${diskPath}: sgdisk -v does not find the GPT clean (exit ${r.code}):\n${out.trim()}`);
  }
}

async function blkid(path: string): Promise<Map<string, string>> {
  const r = await run('blkid', ['-p', '-o', 'export', path]);
  const tags = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) tags.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return tags;
}

function describe(p: BuiltPartition): string {
  return `partition ${p.index} (${p.fs}${p.label ? ` "${p.label}"` : ''})`;
}

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

async function checkFiles(p: BuiltPartition, copy: string, scratch: string): Promise<void> {
  const out = join(scratch, 'read-back.bin');
  for (const f of p.files) {
    await rm(out, { force: true });
    let r: { code: number | null; stderr: string };
    if (p.fs === 'vfat') r = await run('mcopy', ['-n', '-i', copy, `::${f.path}`, out], { env: MTOOLS_ENV() });
    // -f: ntfsresize leaves the volume marked for chkdsk (Windows checks it at next boot); ntfscat refuses such a volume without it.
    else if (p.fs === 'ntfs') r = await runToFile('ntfscat', ['-f', copy, f.path], out);
    else r = await run('debugfs', ['-R', `dump ${f.path} ${out}`, copy]);
    const got = await readFile(out).catch(() => null);
    if (r.code !== 0 || got === null || (p.fs === 'ext4' && /not found|error/i.test(r.stderr))) {
      throw new Error(`${describe(p)}: ${f.path} cannot be read back (exit ${r.code}): ${r.stderr.trim().slice(0, 500)}`);
    }
    if (!got.equals(f.data)) {
      throw new Error(`${describe(p)}: ${f.path} differs from what was built: ${got.length} bytes read, ${f.data.length} built, first difference at byte ${firstDifference(got, f.data)}`);
    }
  }
  await rm(out, { force: true });
}

async function checkFilesystem(p: BuiltPartition, copy: string, scratch: string): Promise<void> {
  if (p.fs === 'msr') {
    const digest = createHash('sha256').update(await readFile(copy)).digest('hex');
    if (digest !== p.contentSha256) throw new Error(`${describe(p)}: its bytes differ from what was built (sha256 ${digest}, built ${p.contentSha256})`);
    return;
  }
  const tags = await blkid(copy);
  const type = tags.get('TYPE');
  if (type !== p.fs) throw new Error(`${describe(p)}: blkid sees ${type ? `TYPE=${type}` : 'no filesystem'} instead of ${p.fs}`);
  if ((tags.get('UUID') ?? null) !== p.uuid) throw new Error(`${describe(p)}: filesystem UUID is ${tags.get('UUID') ?? 'missing'}, built ${p.uuid}`);
  if ((tags.get('LABEL') ?? null) !== p.label) throw new Error(`${describe(p)}: filesystem label is ${tags.get('LABEL') ?? 'missing'}, built ${p.label}`);
  if (p.fs === 'swap') return;
  let r: RunResult;
  if (p.fs === 'vfat') r = await run('fsck.vfat', ['-n', copy]);
  else if (p.fs === 'ntfs') r = await run('ntfsfix', ['-n', copy]);
  else r = await run('e2fsck', ['-fn', copy]);
  // e2fsck -n exits 0 after declining some fixes ("Free blocks count wrong ... Fix? no"), so its words count too;
  // for ntfsfix the success line must be there and no BAD/FAILED, besides its exit status.
  const out = `${r.stdout}\n${r.stderr}`;
  const unclean =
    (p.fs === 'ntfs' && (!/processed successfully/.test(r.stdout) || /BAD|FAILED|corrupt|error/i.test(out))) ||
    (p.fs === 'ext4' && /\? no$/m.test(out));
  if (r.code !== 0 || unclean) {
    throw new Error(`${describe(p)}: the filesystem check finds it not clean (exit ${r.code}):\n${out.trim().slice(0, 2000)}`);
  }
  await checkFiles(p, copy, scratch);
}

/**
 * Throws with a precise message unless the disk file holds the built disk: a clean GPT (`sgdisk -v`) or a readable
 * MBR, the disk GUID / MBR signature kept, each partition at its placement with its type, GUID, name and attributes,
 * each filesystem clean on a copy of the partition (fsck.vfat -n, ntfsfix -n, e2fsck -fn), its UUID and label kept
 * (blkid -p), every built file equal (mcopy, ntfscat, debugfs dump), swap recognised with its UUID and label, the MSR's
 * bytes equal. Copies go to a temporary directory beside the disk file, removed before returning.
 */
export async function checkDisk(diskPath: string, built: BuiltDisk, opts: CheckOptions = {}): Promise<void> {
  if (built.scheme === 'gpt') await checkGpt(diskPath);
  const table = await readTable(diskPath);
  const wantScheme = built.scheme === 'gpt' ? 'gpt' : 'dos';
  if (table.scheme !== wantScheme) throw new Error(`${diskPath}: partition table is ${table.scheme}, built ${wantScheme}`);
  const { diskGuid } = await diskGuidsOf(diskPath);
  if (diskGuid !== built.diskGuid) throw new Error(`${diskPath}: disk ${built.scheme === 'gpt' ? 'GUID' : 'signature'} is ${diskGuid}, built ${built.diskGuid}`);
  const extra = [...table.partitions.keys()].filter((i) => !built.partitions.some((p) => p.index === i));
  if (extra.length > 0) throw new Error(`${diskPath}: partitions ${extra.join(', ')} were not built`);
  const ss = table.sectorSize;
  for (const p of built.partitions) {
    const t = table.partitions.get(p.index);
    if (!t) throw new Error(`${diskPath}: ${describe(p)} is missing from the table`);
    const want = opts.placement?.get(p.index) ?? p;
    if (t.start * ss !== want.startBytes || t.size * ss !== want.sizeBytes) {
      throw new Error(`${diskPath}: ${describe(p)} is at ${t.start * ss}+${t.size * ss} bytes, expected ${want.startBytes}+${want.sizeBytes}`);
    }
    const type = built.scheme === 'gpt' ? t.type.toUpperCase() : `0x${t.type.toLowerCase().padStart(2, '0')}`;
    if (type !== p.typeId) throw new Error(`${diskPath}: ${describe(p)} has type ${type}, built ${p.typeId}`);
    if (built.scheme === 'gpt') {
      if ((t.uuid ?? '').toUpperCase() !== p.guid) throw new Error(`${diskPath}: ${describe(p)} has GUID ${t.uuid}, built ${p.guid}`);
      if ((t.name ?? '') !== p.name) throw new Error(`${diskPath}: ${describe(p)} is named "${t.name ?? ''}", built "${p.name}"`);
      if ((t.attrs ?? '') !== p.attrs) throw new Error(`${diskPath}: ${describe(p)} has attributes "${t.attrs ?? ''}", built "${p.attrs}"`);
    } else if ((t.bootable ?? false) !== p.bootable) {
      throw new Error(`${diskPath}: ${describe(p)} is ${t.bootable ? '' : 'not '}marked bootable, built ${p.bootable ? '' : 'not '}bootable`);
    }
  }
  const scratch = await mkdtemp(join(dirname(diskPath), 'check-'));
  try {
    for (const p of built.partitions) {
      const want = opts.placement?.get(p.index) ?? p;
      const copy = join(scratch, `part${p.index}.img`);
      await extractPartition(diskPath, want.startBytes, want.sizeBytes, copy);
      await checkFilesystem(p, copy, scratch);
      await rm(copy, { force: true });
    }
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** The size of a file in bytes (a disk file a deploy wrote may differ from the built one). */
export async function fileSize(path: string): Promise<number> {
  return (await stat(path)).size;
}
