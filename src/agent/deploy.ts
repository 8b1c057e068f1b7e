/**
 * Deploy over the chunk transport: fetch the version's chunk list, and for each chunk look at what the
 * disk already holds there. Equal bytes stay (reused); a hole is zeroed only where the disk does not
 * read zero; any other chunk is downloaded as the stored file, decoded and checked against its name
 * here, and written, once: a later place of the same chunk copies it from where it landed. Then everything is flushed and the first `size` bytes are read back and
 * digested, so the result reports what the disk holds, not what the agent meant to write.
 */
import { open, stat, writeFile, type FileHandle } from 'node:fs/promises';
import type { DeployStart } from './api.js';
import { BadChunkError } from './codec-pool.js';
import { readAheadFor, readDiskChunks, type ChunkPiece } from './disk-chunks.js';
import { Placement } from './placement.js';
import { ZeroWriter } from './zero-out.js';
import { Jobs } from './jobs.js';
import { hashAt, LIST_ENTRY_BYTES } from '../transport/chunk-wire.js';
import type { TransferContext } from './transfer-context.js';
import { createHash } from 'node:crypto';

export interface DeployOutcome {
  /** The image digest of what the disk holds after the deploy (equal to the version's, or deploy() throws). */
  readonly digest: string;
  readonly receivedBytes: number;
}

async function writeAt(fh: FileHandle, data: Buffer, offset: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, offset + done);
    done += bytesWritten;
  }
}

/** Writes `data` (one whole chunk) to its pieces on the disk: in place when `pieces` is null. */
async function scatter(fh: FileHandle, data: Buffer, offset: number, pieces: readonly ChunkPiece[] | null): Promise<void> {
  if (pieces === null) return writeAt(fh, data, offset);
  for (const p of pieces) await writeAt(fh, data.subarray(p.at, p.at + p.length), p.diskOffset);
}

/**
 * `placement` says where each chunk goes (issue 12): in place, in pieces (a restore onto a disk of
 * another size), or nowhere (free space at capture).
 */
export async function deploy(ctx: TransferContext, start: DeployStart, placement: Placement = new Placement(start.size, start.chunkSize, null, null)): Promise<DeployOutcome> {
  const { api, counters, reporter, disk } = ctx;
  const { chunkSize, size, chunkCount } = start;
  if (chunkCount !== Math.ceil(size / chunkSize)) throw new Error(`start: the server describes ${chunkCount} chunks of ${chunkSize} bytes for ${size} bytes; the server and agent disagree, update the imaging client`);
  const list = await api.list();
  if (list.length !== chunkCount * LIST_ENTRY_BYTES) throw new Error(`chunk list: the server sent ${list.length} bytes, ${chunkCount * LIST_ENTRY_BYTES} expected (${chunkCount} chunks); retry the task`);

  const jobs = new Jobs(ctx.jobs);
  let receivedBytes = 0;
  /** The image chunk whose place on this disk first received each chunk (null: its download failed). */
  const placed = new Map<string, Promise<number | null>>();
  /** Partial chunks as downloaded: the read-back needs the parts of them the disk does not hold. */
  const partial = new Map<number, Buffer>();
  const fh = await open(disk, 'r+');
  const zero = new ZeroWriter(fh, disk, (await fh.stat()).isBlockDevice(), ctx.warn);
  /** Downloads chunk `index`, checks it against its name and writes it to its place. */
  const fetchInto = async (index: number, offset: number, length: number): Promise<void> => {
    const want = hashAt(list, index) as string;
    const file = await api.getChunk(want);
    receivedBytes += file.length;
    let data: Buffer;
    try {
      // The file is not needed once decoded: moved to the thread, not copied.
      data = await ctx.codec.decode(file, want, true);
    } catch (err) {
      if (!(err instanceof BadChunkError)) throw err;
      throw new Error(`chunk ${want} (image chunk ${index}, disk byte ${offset}) came from the server damaged: ${err.message}. Nothing of it was written; the store may be corrupt: run "netclone image verify" on the server, then deploy again`, { cause: err });
    }
    if (data.length !== length) throw new Error(`chunk ${want} decodes to ${data.length} bytes but image chunk ${index} is ${length} bytes long; the server's chunk list is inconsistent, run "netclone image verify" on the server`);
    await scatter(fh, data, offset, placement.pieces(index));
    if (placement.isPartial(index)) partial.set(index, data);
    counters.sentChunks++;
  };
  try {
    try {
      const pieces = (i: number): readonly ChunkPiece[] | null => placement.pieces(i);
      for await (const c of readDiskChunks(disk, { chunkSize, pool: ctx.hashPool, size, ahead: readAheadFor(chunkSize), pieces })) {
        reporter.check();
        counters.examined += c.length;
        counters.readBytes += c.readBytes;
        if (c.skipped) {
          counters.freeChunks++;
          continue;
        }
        const want = hashAt(list, c.index);
        if (want === null) {
          counters.zeroChunks++;
          // In disk order, so adjacent holes become one BLKZEROOUT.
          if (c.hash !== null) for (const p of placement.pieces(c.index) ?? [{ at: 0, diskOffset: c.offset, length: c.length }]) await zero.zero(p.diskOffset, p.length);
          continue;
        }
        if (c.hash === want) {
          counters.reusedChunks++;
          if (!placed.has(want)) placed.set(want, Promise.resolve(c.index));
          continue;
        }
        const copyFrom = placed.get(want);
        let written: (offset: number | null) => void = () => undefined;
        if (copyFrom === undefined) placed.set(want, new Promise<number | null>((resolve) => (written = resolve)));
        await jobs.add(async () => {
          try {
            if (copyFrom !== undefined && (await copyLocally(ctx, fh, placement, await copyFrom, want, c.index, c.length))) {
              counters.reusedChunks++;
              return;
            }
            await fetchInto(c.index, c.offset, c.length);
            written(c.index);
          } finally {
            // A failed job ends the deploy; a waiting copy then fetches instead of waiting forever.
            written(null);
          }
        });
      }
      await jobs.drain();
      await zero.flush();
    } finally {
      await jobs.settle();
    }
    await fh.sync();
    counters.zeroedOut = zero.zeroedOut;
  } finally {
    await fh.close();
  }
  reporter.post();

  await reporter.setPhase('verifying');
  await dropCaches(ctx);
  const digest = await readBack(ctx, start, list, placement, partial);
  return { digest, receivedBytes };
}

/**
 * An image often holds the same chunk at many places (a filled pattern, copies of one file). Once it
 * is on this disk, later places copy it from there instead of downloading it again. The bytes are
 * hashed again before they are written, so a copy is as checked as a download; a mismatch (the disk
 * did not keep what was written) returns false and the caller downloads.
 */
async function copyLocally(ctx: TransferContext, fh: FileHandle, placement: Placement, from: number | null, want: string, index: number, length: number): Promise<boolean> {
  if (from === null) return false;
  const buffer = new ArrayBuffer(length);
  const view = Buffer.from(buffer);
  const source = placement.pieces(from) ?? [{ at: 0, diskOffset: from * placement.chunkSize, length }];
  for (const p of source) {
    let got = 0;
    while (got < p.length) {
      const { bytesRead } = await fh.read(view, p.at + got, p.length - got, p.diskOffset + got);
      if (bytesRead === 0) return false;
      got += bytesRead;
    }
  }
  const { hash, buffer: back } = await ctx.hashPool.hash(buffer, length);
  if (hash !== want) return false;
  await scatter(fh, Buffer.from(back, 0, length), index * placement.chunkSize, placement.pieces(index));
  return true;
}

/**
 * A block device's read-back must come from the disk, not from the page cache the writes just filled.
 * Node can neither open with O_DIRECT into aligned buffers nor call BLKFLSBUF, but the thin client
 * runs as root and owns the machine, so it drops the clean caches as the shell client did. A regular
 * file (the host's stand-in disk) is left alone: its cache is the host's.
 */
async function dropCaches(ctx: TransferContext): Promise<void> {
  if (!(await stat(ctx.disk)).isBlockDevice()) return;
  try {
    await writeFile('/proc/sys/vm/drop_caches', '3');
  } catch (err) {
    ctx.warn(`could not drop the page cache before the read-back (${(err as Error).message}); the check may read cached bytes instead of the disk`);
  }
}

/**
 * The image digest of what the disk holds now, checked against the version's: sha256 over the lines
 * "<sha256 of chunk>\n", read where the placement put each chunk. Chunks that held only free space,
 * or that have no place on this disk, are not read: their line is the list's. The parts of a partial
 * chunk the disk does not hold come from the chunk as it was downloaded. A mismatch names the first
 * chunk that differs.
 */
async function readBack(ctx: TransferContext, start: DeployStart, list: Buffer, placement: Placement, partial: ReadonlyMap<number, Buffer>): Promise<string> {
  const outer = createHash('sha256');
  const zeroNames = new Map<number, string>();
  const zeroName = (length: number): string => {
    const name = zeroNames.get(length) ?? createHash('sha256').update(Buffer.alloc(length)).digest('hex');
    zeroNames.set(length, name);
    return name;
  };
  let firstBad: { index: number; offset: number; got: string; want: string } | null = null;
  const pieces = (i: number): readonly ChunkPiece[] | null => placement.pieces(i);
  for await (const c of readDiskChunks(ctx.disk, { chunkSize: start.chunkSize, pool: ctx.hashPool, size: start.size, ahead: readAheadFor(start.chunkSize), pieces })) {
    ctx.reporter.check();
    const want = hashAt(list, c.index);
    if (c.skipped) {
      outer.update(`${want ?? zeroName(c.length)}\n`);
      continue;
    }
    let got = c.hash;
    const downloaded = partial.get(c.index);
    if (downloaded) {
      const whole = Buffer.from(downloaded);
      for (const p of placement.pieces(c.index) ?? []) c.data.copy(whole, p.at, p.at, p.at + p.length);
      got = whole.every((b) => b === 0) ? null : createHash('sha256').update(whole).digest('hex');
    }
    outer.update(`${got ?? zeroName(c.length)}\n`);
    if (firstBad === null && (want === null ? got !== null : want !== got)) {
      const first = placement.pieces(c.index)?.[0]?.diskOffset ?? c.offset;
      firstBad = { index: c.index, offset: first, got: got ?? 'all zeros', want: want ?? 'all zeros' };
    }
  }
  const digest = outer.digest('hex');
  if (firstBad !== null) {
    throw new Error(`read-back check failed: chunk ${firstBad.index} (disk byte ${firstBad.offset}) reads back as ${firstBad.got}, the image has ${firstBad.want}; the disk may be failing or something else wrote to it, deploy again or replace the disk`);
  }
  if (digest !== start.digest) {
    throw new Error(`read-back check failed: the disk's digest ${digest} differs from version ${start.version}'s ${start.digest} although every chunk matches the server's list; the server's list and digest disagree, run "netclone image verify" on the server`);
  }
  return digest;
}
