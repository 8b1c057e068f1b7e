/**
 * Worker thread: hashes, compresses and stores chunks for capture; reads, decompresses and verifies
 * them for reads. zstd and sha256 are synchronous, so they run here, off the event loop; so does the chunk
 * file I/O of both, so the main thread never touches a chunk file and never holds compressed bytes.
 *
 * zstd runs through the binding's context objects rather than the high-level classes so compressed
 * bytes land in one reused scratch buffer and decompressed bytes in one buffer of the exact size:
 * a 1 MiB allocation per chunk costs more in GC and page faults than the copy it saves.
 */
import { parentPort } from 'node:worker_threads';
import { createHash } from 'node:crypto';
import { close, closeSync, existsSync, fstatSync, fsync, open, openSync, readSync, unlink, writev } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import zstd from 'zstd-napi/binding.js';
import { CHUNK_HEADER_SIZE, ChunkCodec, ChunkFormatError, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, decodeChunkHeader, encodeChunkHeader } from './chunk-format.js';
import { tempName } from '../lib/durable-write.js';
import type { CodecRequest, CodecResponse, LoadRequest, StoreRequest } from './codec-protocol.js';

// Async (libuv thread pool): creating a file while another's fsync commits the journal blocks for
// about a millisecond, and this thread should be hashing and compressing the next chunk meanwhile.
const fsyncAsync = promisify(fsync);
const openAsync = promisify(open);
const writevAsync = promisify(writev);
const closeAsync = promisify(close);
const unlinkAsync = promisify(unlink);

const contexts = new Map<number, zstd.CCtx>();
const dctx = new zstd.DCtx();
/** Compression outputs, reused; more than one because a store keeps its own until its file is written. */
const scratchFree: Buffer[] = [];
let zeroes = Buffer.alloc(0);

function cctxFor(level: number): zstd.CCtx {
  let c = contexts.get(level);
  if (!c) {
    c = new zstd.CCtx();
    c.setParameter(zstd.CParameter.compressionLevel, level);
    contexts.set(level, c);
  }
  return c;
}

function takeScratch(size: number): Buffer {
  const b = scratchFree.pop();
  return b !== undefined && b.length >= size ? b : Buffer.allocUnsafeSlow(size);
}

function giveScratch(b: Buffer): void {
  if (scratchFree.length < 4) scratchFree.push(b);
}

function isZero(data: Buffer): boolean {
  if (zeroes.length < data.length) zeroes = Buffer.alloc(data.length);
  return data.equals(zeroes.subarray(0, data.length));
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Header and payload of the chunk file for `data`: zstd if that saves anything, else raw (the payload
 * is then `data` itself). `scratch` (from takeScratch) receives the compressed bytes.
 */
function chunkFile(data: Buffer, level: number, scratch: Buffer): [Buffer, Buffer] {
  const header = Buffer.allocUnsafe(CHUNK_HEADER_SIZE);
  const n = cctxFor(level).compress2(scratch, data);
  if (n + CHUNK_HEADER_SIZE < data.length) {
    encodeChunkHeader({ codec: ChunkCodec.Zstd, uncompressedLength: data.length, payloadLength: n }, header);
    return [header, scratch.subarray(0, n)];
  }
  encodeChunkHeader({ codec: ChunkCodec.Raw, uncompressedLength: data.length, payloadLength: data.length }, header);
  return [header, data];
}

/**
 * Chunk files are read into buffers of this size: every valid file of a 1 MiB chunk fits (a zstd
 * payload is only kept when smaller than the raw bytes), and the spare byte shows a padded file
 * without an fstat. Larger chunk sizes take the fstat path.
 */
const READ_SIZE = CHUNK_HEADER_SIZE + DEFAULT_CHUNK_SIZE + 1;
/**
 * Read buffers kept for reuse. A raw chunk's buffer leaves with the answer, a zstd chunk's stays, so a
 * worker needs at most one at a time (reads are synchronous, see load()).
 */
const readFree: Buffer[] = [];

function takeReadBuffer(): Buffer {
  return readFree.pop() ?? Buffer.allocUnsafeSlow(READ_SIZE);
}

function giveReadBuffer(b: Buffer): void {
  if (b.length === READ_SIZE && readFree.length < 2) readFree.push(b);
}

class ChunkMissingError extends Error {}

/** The whole chunk file at `path`; `buf` (a read buffer) holds it unless it is larger than READ_SIZE. */
function readChunkFile(path: string, buf: Buffer): Buffer {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new ChunkMissingError('chunk file is missing');
    throw e;
  }
  try {
    let got = readFull(fd, buf, 0);
    if (got < buf.length) return buf.subarray(0, got);
    // Bigger than any 1 MiB chunk's file: a larger chunk size, or a padded file the header check rejects.
    const { size } = fstatSync(fd);
    if (size > CHUNK_HEADER_SIZE + MAX_CHUNK_SIZE) throw new ChunkFormatError(`chunk file is ${size} bytes, larger than any chunk's`);
    const big = Buffer.allocUnsafeSlow(Math.max(size, got));
    buf.copy(big, 0, 0, got);
    got = readFull(fd, big, got);
    return big.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

function readFull(fd: number, buf: Buffer, from: number): number {
  let got = from;
  while (got < buf.length) {
    const n = readSync(fd, buf, got, buf.length - got, got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

/**
 * Raw chunks are answered as a view of the buffer the file was read into (which is then transferred,
 * not reused); zstd chunks decompress into a new buffer of the exact size and the read buffer is kept.
 *
 * The file is read with synchronous calls: this thread has nothing else to do meanwhile, and four
 * async calls per chunk cost more CPU in libuv round trips than they save (bench/nbd.ts: 1.5 → 1.4
 * server CPU-s per GiB deployed, page cache warm). Cold reads then queue per worker; with one worker
 * per core that is still two 1 MiB reads in flight.
 */
async function load(req: LoadRequest): Promise<{ res: CodecResponse; transfer: ArrayBuffer[] }> {
  const corrupt = (message: string): { res: CodecResponse; transfer: ArrayBuffer[] } => ({ res: { id: req.id, ok: false, kind: 'corrupt', message }, transfer: [] });
  const buf = takeReadBuffer();
  let file: Buffer;
  try {
    file = readChunkFile(req.path, buf);
  } catch (e) {
    giveReadBuffer(buf);
    if (e instanceof ChunkMissingError || e instanceof ChunkFormatError) return corrupt(e.message);
    throw e;
  }
  let data: Buffer;
  try {
    const h = decodeChunkHeader(file);
    const payload = file.subarray(CHUNK_HEADER_SIZE);
    if (h.codec === ChunkCodec.Raw) {
      data = payload;
    } else {
      data = Buffer.allocUnsafeSlow(h.uncompressedLength);
      let n: number;
      try {
        n = dctx.decompress(data, payload);
      } catch (e) {
        throw new ChunkFormatError(`zstd payload does not decode: ${(e as Error).message}`);
      }
      if (n !== h.uncompressedLength) throw new ChunkFormatError(`chunk decompressed to ${n} bytes, header says ${h.uncompressedLength}`);
    }
  } catch (e) {
    giveReadBuffer(buf);
    return corrupt((e as Error).message);
  }
  if (data.buffer !== buf.buffer) giveReadBuffer(buf);
  const actual = sha256(data);
  if (actual !== req.expectHash) {
    if (data.buffer === buf.buffer) giveReadBuffer(buf);
    return corrupt(`content hash ${actual} does not match chunk name`);
  }
  const ab = data.buffer as ArrayBuffer;
  return { res: { id: req.id, ok: true, op: 'load', data: ab, offset: data.byteOffset, length: data.length }, transfer: [ab] };
}

/**
 * Writes `parts` to a new temp file in `tmpDir` and fsyncs it; returns its path. The main thread
 * renames it into the chunk store when it adopts the chunk, so a chunk file never appears where gc
 * looks before the store has recorded it.
 */
async function writeTemp(tmpDir: string, parts: Buffer[]): Promise<string> {
  const tmp = tempName(tmpDir, 'w');
  const fd = await openAsync(tmp, 'wx');
  try {
    let left = parts.reduce((n, b) => n + b.length, 0);
    let pos = 0;
    while (left > 0) {
      // writev may write less than asked: resume after the bytes that made it.
      const views: Buffer[] = [];
      let skip = pos;
      for (const b of parts) {
        if (skip >= b.length) skip -= b.length;
        else {
          views.push(skip > 0 ? b.subarray(skip) : b);
          skip = 0;
        }
      }
      const { bytesWritten: n } = await writevAsync(fd, views, pos);
      pos += n;
      left -= n;
    }
    await fsyncAsync(fd);
  } catch (e) {
    await closeAsync(fd);
    // A leftover temp file is removed when the store next opens.
    await unlinkAsync(tmp).catch(() => undefined);
    throw e;
  }
  await closeAsync(fd);
  return tmp;
}

/** Decompressed bytes of an existing chunk file, compared with the incoming chunk; reused. */
let compareScratch = Buffer.alloc(0);

/**
 * Size of the chunk file at `path` if it is intact and holds exactly `data`; -1 if there is none; 0 if
 * it is damaged (short, bit-flipped, not decodable): the caller writes it again. Dedup must never trust a name alone: a
 * damaged file that an import "deduplicated" against would make the new version unreadable too.
 * Comparing with the incoming bytes proves the file without a second sha256.
 */
function intactSize(path: string, data: Buffer): number {
  const buf = takeReadBuffer();
  try {
    let file: Buffer;
    try {
      file = readChunkFile(path, buf);
    } catch (e) {
      if (e instanceof ChunkMissingError) return -1;
      if (e instanceof ChunkFormatError) return 0;
      throw e;
    }
    let h;
    try {
      h = decodeChunkHeader(file);
    } catch {
      return 0;
    }
    if (h.uncompressedLength !== data.length) return 0;
    const payload = file.subarray(CHUNK_HEADER_SIZE);
    if (h.codec === ChunkCodec.Raw) return payload.equals(data) ? file.length : 0;
    if (compareScratch.length < data.length) compareScratch = Buffer.allocUnsafeSlow(data.length);
    let n: number;
    try {
      n = dctx.decompress(compareScratch.subarray(0, data.length), payload);
    } catch {
      return 0;
    }
    return n === data.length && compareScratch.subarray(0, n).equals(data) ? file.length : 0;
  } finally {
    giveReadBuffer(buf);
  }
}

async function store(req: StoreRequest): Promise<{ res: CodecResponse; transfer: ArrayBuffer[] }> {
  const data = Buffer.from(req.data, 0, req.length);
  const back = [req.data];
  if (isZero(data)) return { res: { id: req.id, ok: true, op: 'store', zero: true, hash: '', stored: 0, existed: false, fresh: false, tmpPath: null, data: req.data }, transfer: back };
  const hash = sha256(data);
  const dest = join(req.chunksDir, hash.slice(0, 2), hash);
  // Dedup before compressing: a re-capture of an unchanged disk costs a hash, a read and a decode per chunk.
  // With `force` the file vanished under gc: write it without looking, but still tell whether one is there.
  const size = req.force ? (existsSync(dest) ? 0 : -1) : intactSize(dest, data);
  if (size > 0) return { res: { id: req.id, ok: true, op: 'store', zero: false, hash, stored: size, existed: true, fresh: false, tmpPath: null, data: req.data }, transfer: back };
  const fresh = size < 0;
  // The next store may start while this one awaits its fsync, so each holds its own scratch buffer.
  const scratch = takeScratch(zstd.compressBound(data.length));
  const [header, payload] = chunkFile(data, req.level, scratch);
  const stored = header.length + payload.length;
  let tmp: string;
  try {
    tmp = await writeTemp(req.tmpDir, [header, payload]);
  } finally {
    giveScratch(scratch);
  }
  return { res: { id: req.id, ok: true, op: 'store', zero: false, hash, stored, existed: false, fresh, tmpPath: tmp, data: req.data }, transfer: back };
}

const port = parentPort;
if (!port) throw new Error('codec-worker must run as a worker thread');
const reply = (res: CodecResponse, transfer: ArrayBuffer[]): void => port.postMessage(res, transfer);
port.on('message', (req: CodecRequest) => {
  const fail = (e: unknown): void => {
    const data = req.op === 'store' && req.data.byteLength > 0 ? req.data : undefined;
    reply({ id: req.id, ok: false, kind: 'internal', message: (e as Error).message, data }, data ? [data] : []);
  };
  try {
    const work = req.op === 'store' ? store(req) : load(req);
    work.then(({ res, transfer }) => reply(res, transfer), fail);
  } catch (e) {
    fail(e);
  }
});
