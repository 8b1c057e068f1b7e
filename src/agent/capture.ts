/**
 * Capture over the chunk transport: read the disk in the store's chunks, skip the all-zero ones, ask
 * the server in batches which of the rest it already has, compress and upload only the others
 * (several at once), then commit the ordered list. A commit that names chunks the server lacks is
 * answered by uploading those (read again from the disk) and committing again.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { ApiError, type CaptureStart, type CommitAnswer } from './api.js';
import { readAheadFor, readDiskChunks, type ChunkPiece, type DiskChunk } from './disk-chunks.js';
import type { DiskProbe } from './probe.js';
import type { UsedMap } from './used-map.js';
import { Jobs } from './jobs.js';
import { hashAt, LIST_ENTRY_BYTES, setHash } from '../transport/chunk-wire.js';
import type { TransferContext } from './transfer-context.js';
import { chunkName } from '../imaging/chunk-format.js';

/** zstd level of uploads: level 3 compresses ~285 MB/s a core (chunk-format.ts), enough for gigabit on two cores with hashing beside it. */
export const CAPTURE_ZSTD_LEVEL = 3;
/** Bytes of chunk data held for one known() batch; two batches can be held at once (one asked about while the next is read). */
const BATCH_BYTES = 32 * 1024 * 1024;
/** Commits after the first that may still name missing chunks before the agent gives up. */
const COMMIT_RETRIES = 3;

export interface CaptureOutcome extends CommitAnswer {
  readonly uploadedBytes: number;
}

/** The chunk pieces holding used blocks, for reading only those: [] for a free chunk, null for a chunk used throughout. */
export function usedPieces(used: UsedMap, chunkSize: number, size: number): (index: number) => readonly ChunkPiece[] | null {
  return (index) => {
    const pieces = used.pieces(index);
    const length = Math.min(chunkSize, size - index * chunkSize);
    return pieces.length === 1 && pieces[0].at === 0 && pieces[0].length === length ? null : pieces;
  };
}

async function readAt(fh: FileHandle, disk: string, offset: number, length: number): Promise<Buffer> {
  const data = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(data, got, length - got, offset + got);
    if (bytesRead === 0) throw new Error(`${disk} ended at byte ${offset + got} while re-reading a chunk for upload; the disk shrank or could not be read`);
    got += bytesRead;
  }
  return data;
}

/**
 * `probed`: what the probe learnt of the disk (issue 12), or null to read every chunk. With it, free
 * chunks are neither read nor sent, used chunks are read only where used (the rest reads as zeros),
 * and the layout goes to the server before the commit.
 */
export async function capture(ctx: TransferContext, start: CaptureStart, probed: DiskProbe | null = null): Promise<CaptureOutcome> {
  const { api, counters, reporter } = ctx;
  const { chunkSize, size } = start;
  const count = Math.ceil(size / chunkSize);
  const list = Buffer.alloc(count * LIST_ENTRY_BYTES);
  const batchLimit = Math.max(1, Math.min(start.knownBatch, 1024, Math.floor(BATCH_BYTES / chunkSize)));
  // Hashes asked about, uploaded or on their way: a chunk that occurs again on the disk is not sent twice.
  const handled = new Set<string>();
  const jobs = new Jobs(ctx.jobs);
  let uploadedBytes = 0;

  const upload = async (hash: string, data: Buffer): Promise<void> => {
    // The chunk's bytes are not needed once compressed: moved to the thread, not copied.
    const file = await ctx.codec.encode(data, CAPTURE_ZSTD_LEVEL, true);
    await api.putChunk(hash, file);
    uploadedBytes += file.length;
    counters.sentChunks++;
  };

  const settleBatch = async (batch: readonly DiskChunk[]): Promise<void> => {
    const known = await api.known(batch.map((c) => c.hash as string));
    for (const c of batch) {
      reporter.check();
      if (known.has(c.hash as string)) counters.reusedChunks++;
      else await jobs.add(() => upload(c.hash as string, c.data));
    }
  };

  let batch: DiskChunk[] = [];
  let previous: Promise<void> = Promise.resolve();
  const flush = async (): Promise<void> => {
    await previous;
    jobs.check();
    const current = batch;
    batch = [];
    const p = settleBatch(current);
    // Awaited at the next flush; until then a failure must not count as unhandled.
    p.catch(() => undefined);
    previous = p;
  };

  try {
    const pieces = probed ? usedPieces(probed.used, chunkSize, size) : undefined;
    for await (const c of readDiskChunks(ctx.disk, { chunkSize, pool: ctx.hashPool, size, ahead: readAheadFor(chunkSize), ...(pieces ? { pieces } : {}) })) {
      reporter.check();
      counters.examined += c.length;
      counters.readBytes += c.readBytes;
      if (c.skipped) {
        counters.freeChunks++;
        continue;
      }
      if (c.hash === null) {
        counters.zeroChunks++;
        continue;
      }
      setHash(list, c.index, c.hash);
      if (handled.has(c.hash)) {
        counters.reusedChunks++;
        continue;
      }
      handled.add(c.hash);
      batch.push(c);
      if (batch.length >= batchLimit) await flush();
    }
    if (batch.length > 0) await flush();
    await previous;
    await jobs.drain();
  } finally {
    await previous.catch(() => undefined);
    await jobs.settle();
  }

  reporter.post();
  if (probed) await api.putLayout(probed.layout);
  for (let round = 0; ; round++) {
    reporter.check();
    try {
      const committed = await api.commit(list);
      return { ...committed, uploadedBytes };
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 409 || err.missing.length === 0) throw err;
      if (round >= COMMIT_RETRIES) {
        throw new Error(`commit: the server still lacks ${err.missing.length} chunk(s) after ${COMMIT_RETRIES} re-uploads (first ${err.missing[0]}): ${err.serverError}; retry the task`, { cause: err });
      }
      uploadedBytes += await uploadMissing(ctx, list, chunkSize, size, err.missing, probed ? usedPieces(probed.used, chunkSize, size) : undefined);
    }
  }
}

/** Uploads the chunks a commit named as missing, read again from the disk at their places in `list`. */
async function uploadMissing(ctx: TransferContext, list: Buffer, chunkSize: number, size: number, missing: readonly string[], pieces: ((index: number) => readonly ChunkPiece[] | null) | undefined): Promise<number> {
  const wanted = new Set(missing);
  const at = new Map<string, number>();
  const count = list.length / LIST_ENTRY_BYTES;
  for (let i = 0; i < count && at.size < wanted.size; i++) {
    const h = hashAt(list, i);
    if (h !== null && wanted.has(h) && !at.has(h)) at.set(h, i);
  }
  const strangers = missing.filter((h) => !at.has(h));
  if (strangers.length > 0) throw new Error(`commit: the server asks for chunk ${strangers[0]}, which this disk's list does not name; the server and agent disagree, retry the task`);
  const fh = await open(ctx.disk, 'r');
  const jobs = new Jobs(ctx.jobs);
  let bytes = 0;
  try {
    for (const [hash, index] of at) {
      await jobs.add(async () => {
        const offset = index * chunkSize;
        const length = Math.min(chunkSize, size - offset);
        const parts = pieces?.(index) ?? null;
        const data = parts === null ? await readAt(fh, ctx.disk, offset, length) : Buffer.alloc(length);
        for (const p of parts ?? []) (await readAt(fh, ctx.disk, p.diskOffset, p.length)).copy(data, p.at);
        if (chunkName(data) !== hash) throw new Error(`${ctx.disk} changed while it was captured (chunk ${index} at byte ${offset} no longer reads as it did); capture a disk nothing writes to`);
        const file = await ctx.codec.encode(data, CAPTURE_ZSTD_LEVEL, true);
        await ctx.api.putChunk(hash, file);
        bytes += file.length;
        ctx.counters.sentChunks++;
      });
    }
    await jobs.drain();
  } finally {
    await jobs.settle();
    await fh.close();
  }
  return bytes;
}
