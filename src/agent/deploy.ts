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
import { readAheadFor, readDiskChunks } from './disk-chunks.js';
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

export async function deploy(ctx: TransferContext, start: DeployStart): Promise<DeployOutcome> {
  const { api, counters, reporter, disk } = ctx;
  const { chunkSize, size, chunkCount } = start;
  if (chunkCount !== Math.ceil(size / chunkSize)) throw new Error(`start: the server describes ${chunkCount} chunks of ${chunkSize} bytes for ${size} bytes; the server and agent disagree, update the imaging client`);
  const list = await api.list();
  if (list.length !== chunkCount * LIST_ENTRY_BYTES) throw new Error(`chunk list: the server sent ${list.length} bytes, ${chunkCount * LIST_ENTRY_BYTES} expected (${chunkCount} chunks); retry the task`);

  const zeros = Buffer.alloc(chunkSize);
  const jobs = new Jobs(ctx.jobs);
  let receivedBytes = 0;
  /** Where each chunk of the image first landed on this disk (null: its download failed). */
  const placed = new Map<string, Promise<number | null>>();
  const fh = await open(disk, 'r+');
  /** Downloads chunk `index`, checks it against its name and writes it at `offset`. */
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
    await writeAt(fh, data, offset);
    counters.sentChunks++;
  };
  try {
    try {
      for await (const c of readDiskChunks(disk, { chunkSize, pool: ctx.hashPool, size, ahead: readAheadFor(chunkSize) })) {
        reporter.check();
        counters.examined += c.length;
        const want = hashAt(list, c.index);
        if (want === null) {
          counters.zeroChunks++;
          if (c.hash !== null) await jobs.add(() => writeAt(fh, zeros.subarray(0, c.length), c.offset));
          continue;
        }
        if (c.hash === want) {
          counters.reusedChunks++;
          if (!placed.has(want)) placed.set(want, Promise.resolve(c.offset));
          continue;
        }
        const copyFrom = placed.get(want);
        let written: (offset: number | null) => void = () => undefined;
        if (copyFrom === undefined) placed.set(want, new Promise<number | null>((resolve) => (written = resolve)));
        await jobs.add(async () => {
          try {
            if (copyFrom !== undefined && (await copyLocally(ctx, fh, await copyFrom, want, c.offset, c.length))) {
              counters.reusedChunks++;
              return;
            }
            await fetchInto(c.index, c.offset, c.length);
            written(c.offset);
          } finally {
            // A failed job ends the deploy; a waiting copy then fetches instead of waiting forever.
            written(null);
          }
        });
      }
      await jobs.drain();
    } finally {
      await jobs.settle();
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  reporter.post();

  await reporter.setPhase('verifying');
  await dropCaches(ctx);
  const digest = await readBack(ctx, start, list);
  return { digest, receivedBytes };
}

/**
 * An image often holds the same chunk at many places (a filled pattern, copies of one file). Once it
 * is on this disk, later places copy it from there instead of downloading it again. The bytes are
 * hashed again before they are written, so a copy is as checked as a download; a mismatch (the disk
 * did not keep what was written) returns false and the caller downloads.
 */
async function copyLocally(ctx: TransferContext, fh: FileHandle, from: number | null, want: string, offset: number, length: number): Promise<boolean> {
  if (from === null) return false;
  const buffer = new ArrayBuffer(length);
  const view = Buffer.from(buffer);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(view, got, length - got, from + got);
    if (bytesRead === 0) return false;
    got += bytesRead;
  }
  const { hash, buffer: back } = await ctx.hashPool.hash(buffer, length);
  if (hash !== want) return false;
  await writeAt(fh, Buffer.from(back, 0, length), offset);
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
 * The image digest of the disk's first `size` bytes as they read back now (sha256 over the lines
 * "<sha256 of chunk>\n"), checked against the version's. A mismatch names the first chunk that differs.
 */
async function readBack(ctx: TransferContext, start: DeployStart, list: Buffer): Promise<string> {
  const outer = createHash('sha256');
  const zeroNames = new Map<number, string>();
  let firstBad: { index: number; offset: number; got: string; want: string } | null = null;
  for await (const c of readDiskChunks(ctx.disk, { chunkSize: start.chunkSize, pool: ctx.hashPool, size: start.size, ahead: readAheadFor(start.chunkSize) })) {
    ctx.reporter.check();
    let name = c.hash;
    if (name === null) {
      name = zeroNames.get(c.length) ?? createHash('sha256').update(Buffer.alloc(c.length)).digest('hex');
      zeroNames.set(c.length, name);
    }
    outer.update(`${name}\n`);
    const want = hashAt(list, c.index);
    if (firstBad === null && (want === null ? c.hash !== null : want !== c.hash)) {
      firstBad = { index: c.index, offset: c.offset, got: c.hash ?? 'all zeros', want: want ?? 'all zeros' };
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
