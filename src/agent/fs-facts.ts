/**
 * What one partition holds and how a capture treats it: the filesystem blkid sees (type, label, UUID),
 * the byte ranges it uses (partclone's domain map) and the smallest size it shrinks to (ntfsresize,
 * resize2fs). Encrypted, unknown, dirty or unmappable partitions are sent whole, with a note saying
 * why; swap is not sent. A missing tool means "sent whole" with a note naming it, never a failed
 * capture. The output parsers are pure and exported for the tests.
 */
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PartitionMode } from '../imaging/disk-layout.js';
import { parseDomainMap, usedInPartition, type ByteRange } from '../imaging/domain-map.js';
import { runTool, ToolMissingError } from '../lib/tool.js';

export interface PartitionFacts {
  readonly filesystem: string | null;
  readonly label: string | null;
  readonly uuid: string | null;
  readonly mode: PartitionMode;
  /** Disk byte ranges a capture reads: the used blocks for 'used-blocks', [] for 'swap', null for 'whole' (all of it). */
  readonly used: readonly ByteRange[] | null;
  readonly usedBytes: number | null;
  readonly minSizeBytes: number | null;
  readonly note: string | null;
}

/** Where the partition lies on the disk: partclone's map is written in disk offsets. */
export interface PartitionSpan {
  readonly startBytes: number;
  readonly sizeBytes: number;
}

/** blkid TYPE → the partclone tool that maps its used blocks. */
export const PARTCLONE_TOOLS: Readonly<Record<string, string>> = {
  ntfs: 'partclone.ntfs',
  ext2: 'partclone.extfs',
  ext3: 'partclone.extfs',
  ext4: 'partclone.extfs',
  vfat: 'partclone.fat',
  exfat: 'partclone.exfat',
  xfs: 'partclone.xfs',
  btrfs: 'partclone.btrfs',
  f2fs: 'partclone.f2fs',
  hfsplus: 'partclone.hfsp',
};

export const BITLOCKER_NOTE = 'BitLocker volume: sent whole; restoring onto another PC needs its recovery key';
export const LUKS_NOTE = 'LUKS encrypted volume: sent whole (its used blocks cannot be told from free ones)';
export const UNKNOWN_NOTE = 'no filesystem netclone can read: sent whole';

/** `blkid -o export` output: KEY=value lines, values with blkid's backslash escapes undone. */
export function parseBlkidExport(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const eq = line.indexOf('=');
    if (eq <= 0 || !/^[A-Z_]+$/.test(line.slice(0, eq))) throw new Error(`blkid: unexpected output line "${line}"`);
    out[line.slice(0, eq)] = line.slice(eq + 1).replace(/\\(.)/g, '$1');
  }
  return out;
}

/** BitLocker puts "-FVE-FS-" where NTFS has its OEM name, at byte 3 of the volume. */
export function hasBitLockerSignature(first: Buffer): boolean {
  return first.length >= 11 && first.toString('latin1', 3, 11) === '-FVE-FS-';
}

/** `ntfsresize --info`: "You might resize at 7856128 bytes or 8 MB (freeing 60 MB)." */
export function parseNtfsresizeMin(text: string): number | null {
  const m = /You might resize at (\d+) bytes/.exec(text);
  return m ? Number(m[1]) : null;
}

/** `resize2fs -P`: "Estimated minimum size of the filesystem: 12432" (in filesystem blocks). */
export function parseResize2fsMinBlocks(text: string): number | null {
  const m = /Estimated minimum size of the filesystem:\s*(\d+)/.exec(text);
  return m ? Number(m[1]) : null;
}

/** `dumpe2fs -h`: "Block size:               1024". */
export function parseDumpe2fsBlockSize(text: string): number | null {
  const m = /^Block size:\s*(\d+)\s*$/m.exec(text);
  return m ? Number(m[1]) : null;
}

const PARTCLONE_CHATTER = /^(Partclone v|Starting to map|Calculating bitmap|Elapsed:|Total Time:|done!|File system:|Device size:|Space in use:|Free Space:|Block size:|current block:|Syncing|Partclone successfully|Cloned successfully|Partclone fail, please check)/;
/** What partclone says when it refuses a filesystem it cannot trust. */
const PARTCLONE_TROUBLE = /dirty|not cleanly|unclean|with errors|inconsisten|corrupt|scheduled for (a )?check|chkdsk|fsck|hibernat|damaged|error/i;

/** partclone's own lines, progress and statistics left out: what it had to say about the filesystem. */
export function partcloneMessages(output: string): string[] {
  return output
    .split(/[\r\n]+/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !PARTCLONE_CHATTER.test(l));
}

/** The message that makes a mapped filesystem untrustworthy even though partclone exited 0, or null. */
export function partcloneTrouble(output: string): string | null {
  return partcloneMessages(output).find((l) => PARTCLONE_TROUBLE.test(l)) ?? null;
}

function whole(filesystem: string | null, label: string | null, uuid: string | null, note: string): PartitionFacts {
  return { filesystem, label, uuid, mode: 'whole', used: null, usedBytes: null, minSizeBytes: null, note };
}

async function readHead(dev: string): Promise<Buffer> {
  const fh = await open(dev, 'r');
  try {
    const b = Buffer.alloc(16);
    const { bytesRead } = await fh.read(b, 0, 16, 0);
    return b.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

function missingNote(err: ToolMissingError, what: string): string {
  return `${err.tool} is not installed, so ${what}: sent whole`;
}

async function minSize(filesystem: string, dev: string, warn: (m: string) => void): Promise<number | null> {
  try {
    if (filesystem === 'ntfs') {
      const r = await runTool('ntfsresize', ['--info', '--force', '--no-progress-bar', dev]);
      const n = parseNtfsresizeMin(r.stdout);
      if (n === null) warn(`ntfsresize --info ${dev} named no minimum size (exit ${r.code}): ${(r.stderr.trim() || r.stdout.trim()).split('\n').pop() ?? ''}`);
      return n;
    }
    if (filesystem === 'ext2' || filesystem === 'ext3' || filesystem === 'ext4') {
      const r = await runTool('resize2fs', ['-P', dev]);
      const blocks = parseResize2fsMinBlocks(r.stdout);
      const d = await runTool('dumpe2fs', ['-h', dev]);
      const blockSize = parseDumpe2fsBlockSize(d.stdout);
      if (blocks === null || blockSize === null) {
        warn(`resize2fs -P / dumpe2fs -h ${dev} gave no minimum size (exit ${r.code}/${d.code}): ${r.stderr.trim().split('\n').pop() ?? ''}`);
        return null;
      }
      return blocks * blockSize;
    }
  } catch (err) {
    if (!(err instanceof ToolMissingError)) throw err;
    warn(`${err.tool} is not installed: the minimum size of ${dev}'s ${filesystem} is unknown, so it cannot be shrunk on restore`);
  }
  return null;
}

/**
 * Maps the used blocks of the filesystem on `dev` with partclone. Returns the ranges in disk offsets,
 * or a sentence saying why they cannot be trusted.
 */
async function mapUsed(tool: string, dev: string, span: PartitionSpan): Promise<{ used: ByteRange[] } | { problem: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'netclone-map-'));
  try {
    const mapFile = join(dir, 'map');
    const r = await runTool(tool, ['-D', '-s', dev, '-O', mapFile, `--offset_domain=${span.startBytes}`, '-L', join(dir, 'log')]);
    const output = `${r.stderr}\n${r.stdout}`;
    if (r.code !== 0) {
      // partclone wraps its complaint over lines ("… or it was shutdown" / "uncleanly. Please boot Windows …").
      const said = partcloneMessages(output).join(' ').slice(-400);
      return { problem: `${tool} could not map the used blocks (exit ${r.code}${said !== '' ? `: ${said}` : ''})` };
    }
    const trouble = partcloneTrouble(output);
    if (trouble !== null) return { problem: `${tool}: ${trouble}` };
    let text: string;
    try {
      text = await readFile(mapFile, 'utf8');
    } catch (err) {
      return { problem: `${tool} exited 0 but wrote no map (${(err as Error).message})` };
    }
    try {
      return { used: usedInPartition(parseDomainMap(text), span.startBytes, span.sizeBytes) };
    } catch (err) {
      return { problem: (err as Error).message };
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The facts of the partition `dev` (its own device: byte 0 is the partition's first byte) lying at `span` on the disk. */
export async function partitionFacts(dev: string, span: PartitionSpan, warn: (m: string) => void): Promise<PartitionFacts> {
  if (hasBitLockerSignature(await readHead(dev))) return whole('bitlocker', null, null, BITLOCKER_NOTE);

  let tags: Record<string, string>;
  try {
    const r = await runTool('blkid', ['-p', '-o', 'export', dev]);
    // Exit 2: nothing recognised. Other failures (8: ambivalent probe) are said in the note.
    if (r.code === 2) return whole(null, null, null, UNKNOWN_NOTE);
    if (r.code !== 0) return whole(null, null, null, `blkid could not tell the filesystem (exit ${r.code}: ${r.stderr.trim()}); ${UNKNOWN_NOTE}`);
    tags = parseBlkidExport(r.stdout);
  } catch (err) {
    if (err instanceof ToolMissingError) return whole(null, null, null, missingNote(err, 'the filesystem is unknown'));
    throw err;
  }
  const type = tags.TYPE ?? null;
  const label = tags.LABEL ?? null;
  const uuid = tags.UUID ?? null;
  if (type === null) return whole(null, label, uuid, UNKNOWN_NOTE);
  if (type === 'swap') return { filesystem: 'swap', label, uuid, mode: 'swap', used: [], usedBytes: null, minSizeBytes: null, note: null };
  if (type === 'crypto_LUKS') return whole('luks', label, uuid, LUKS_NOTE);
  if (type.toLowerCase() === 'bitlocker') return whole('bitlocker', label, uuid, BITLOCKER_NOTE);
  const tool = PARTCLONE_TOOLS[type];
  if (tool === undefined) return whole(type, label, uuid, UNKNOWN_NOTE);

  let mapped: Awaited<ReturnType<typeof mapUsed>>;
  try {
    mapped = await mapUsed(tool, dev, span);
  } catch (err) {
    if (err instanceof ToolMissingError) return whole(type, label, uuid, missingNote(err, 'its used blocks are unknown'));
    throw err;
  }
  if ('problem' in mapped) return whole(type, label, uuid, `${mapped.problem}: sent whole`);
  const usedBytes = mapped.used.reduce((n, [s, e]) => n + (e - s), 0);
  return { filesystem: type, label, uuid, mode: 'used-blocks', used: mapped.used, usedBytes, minSizeBytes: await minSize(type, dev, warn), note: null };
}
