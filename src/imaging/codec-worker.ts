/**
 * Worker thread: hashes, compresses and stores chunks for capture; reads, decompresses and checks
 * them for reads. zstd and sha256 are synchronous, so they run here, off the event loop; so does the chunk
 * file I/O of both, so the main thread never touches a chunk file and never holds compressed bytes.
 * The format itself (framing, zstd, the checks) is chunk-format.ts.
 *
 * Compressed bytes land in reused scratch buffers and decompressed bytes in one buffer of the exact
 * size: a 1 MiB allocation per chunk costs more in GC and page faults than the copy it saves.
 */
import { parentPort } from 'node:worker_threads';
import { close, closeSync, existsSync, fstatSync, fsync, open, openSync, readSync, unlink, writev } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CHUNK_FORMAT, CHUNK_HEADER_SIZE, ChunkCodecContext, ChunkFormatError, ChunkFormatTooNewError, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, chunkName, decodeChunkHeader, maxChunkFileSize } from './chunk-format.js';
import { tempName } from '../lib/durable-write.js';
import type { CodecRequest, CodecResponse, LoadRequest, PutRequest, StoreRequest } from './codec-protocol.js';

// Async (libuv thread pool): creating a file while another's fsync commits the journal blocks for
// about a millisecond, and this thread should be hashing and compressing the next chunk meanwhile.
const fsyncAsync = promisify(fsync);
const openAsync = promisify(open);
const writevAsync = promisify(writev);
const closeAsync = promisify(close);
const unlinkAsync = promisify(unlink);

const codec = new ChunkCodecContext();
/** Compression outputs, reused; more than one because a store keeps its own until its file is written. */
const scratchFree: Buffer[] = [];
let zeroes = Buffer.alloc(0);

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

/**
 * Chunk files are read into buffers of this size: every valid file of a 1 MiB chunk fits (format 1
 * kept a zstd payload only when smaller than the raw bytes; format 2's frame is at most
 * zstd.compressBound), and the spare byte shows a padded file without an fstat. Larger chunk sizes
 * take the fstat path.
 */
const READ_SIZE = maxChunkFileSize(DEFAULT_CHUNK_SIZE) + 1;
/**
 * Read buffers kept for reuse. A format-1 raw chunk's buffer leaves with the answer, a zstd chunk's
 * stays, so a worker needs at most one at a time (reads are synchronous, see load()).
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
    if (size > maxChunkFileSize(MAX_CHUNK_SIZE)) throw new ChunkFormatError(`chunk file is ${size} bytes, larger than any chunk's`);
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
 * Format-1 raw chunks are answered as a view of the buffer the file was read into (which is then
 * transferred, not reused); zstd chunks decompress into a new buffer of the exact size and the read
 * buffer is kept. A format-2 file's content checksum is checked as it decodes; sha256 against the name
 * only for `check: 'full'` and for format-1 files, which carry no checksum (chunk-format.ts).
 *
 * The file is read with synchronous calls: this thread has nothing else to do meanwhile, and four
 * async calls per chunk cost more CPU in libuv round trips than they save (bench/nbd.ts: 1.5 → 1.4
 * server CPU-s per GiB deployed, page cache warm). Cold reads then queue per worker; with one worker
 * per core that is still two 1 MiB reads in flight.
 */
async function load(req: LoadRequest): Promise<{ res: CodecResponse; transfer: ArrayBuffer[] }> {
  const failed = (kind: 'corrupt' | 'too-new', message: string): { res: CodecResponse; transfer: ArrayBuffer[] } => ({ res: { id: req.id, ok: false, kind, message }, transfer: [] });
  const buf = takeReadBuffer();
  let data: Buffer;
  try {
    data = codec.decodeChecked(readChunkFile(req.path, buf), req.expectHash, req.check);
  } catch (e) {
    giveReadBuffer(buf);
    if (e instanceof ChunkFormatTooNewError) return failed('too-new', e.message);
    if (e instanceof ChunkMissingError || e instanceof ChunkFormatError) return failed('corrupt', e.message);
    throw e;
  }
  if (data.buffer !== buf.buffer) giveReadBuffer(buf);
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
 * Size of the chunk file at `path` if it is intact, holds exactly `data` and is of the format this
 * code writes; -1 if there is none; 0 otherwise: the caller writes it again. Dedup must never trust a
 * name alone: a damaged file that an import "deduplicated" against would make the new version
 * unreadable too. Comparing with the incoming bytes proves the file without a second sha256.
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
    // A file of another format is rewritten in this one: format 1 so that capturing again moves an old
    // store's chunks to the cheap per-read check; a newer one because this code cannot prove its bytes.
    if (file.length < CHUNK_HEADER_SIZE || file[4] !== CHUNK_FORMAT) return 0;
    if (compareScratch.length < data.length) compareScratch = Buffer.allocUnsafeSlow(data.length);
    try {
      const { data: got } = codec.decode(file, compareScratch.subarray(0, data.length));
      return got.equals(data) ? file.length : 0;
    } catch {
      return 0;
    }
  } finally {
    giveReadBuffer(buf);
  }
}

async function store(req: StoreRequest): Promise<{ res: CodecResponse; transfer: ArrayBuffer[] }> {
  const data = Buffer.from(req.data, 0, req.length);
  const back = [req.data];
  if (isZero(data)) return { res: { id: req.id, ok: true, op: 'store', zero: true, hash: '', stored: 0, existed: false, fresh: false, tmpPath: null, data: req.data }, transfer: back };
  const hash = chunkName(data);
  const dest = join(req.chunksDir, hash.slice(0, 2), hash);
  // Dedup before compressing: a re-capture of an unchanged disk costs a hash, a read and a decode per chunk.
  // With `force` the file vanished under gc: write it without looking, but still tell whether one is there.
  const size = req.force ? (existsSync(dest) ? 0 : -1) : intactSize(dest, data);
  if (size > 0) return { res: { id: req.id, ok: true, op: 'store', zero: false, hash, stored: size, existed: true, fresh: false, tmpPath: null, data: req.data }, transfer: back };
  const fresh = size < 0;
  // The next store may start while this one awaits its fsync, so each holds its own scratch buffer.
  const scratch = takeScratch(maxChunkFileSize(data.length) - CHUNK_HEADER_SIZE);
  const [header, payload] = codec.encode(data, req.level, scratch);
  const stored = header.length + payload.length;
  let tmp: string;
  try {
    tmp = await writeTemp(req.tmpDir, [header, payload]);
  } finally {
    giveScratch(scratch);
  }
  return { res: { id: req.id, ok: true, op: 'store', zero: false, hash, stored, existed: false, fresh, tmpPath: tmp, data: req.data }, transfer: back };
}

/**
 * An uploaded chunk file: every check runs on the bytes as the client sent them (see PutRequest), and
 * the same bytes are what gets stored, so the file on disk is the one that was checked. Decoding goes
 * into a buffer of the header's length, which the checks above bound by `maxLength`.
 */
async function put(req: PutRequest): Promise<{ res: CodecResponse; transfer: ArrayBuffer[] }> {
  const file = Buffer.from(req.file);
  const rejected = (message: string): { res: CodecResponse; transfer: ArrayBuffer[] } => ({ res: { id: req.id, ok: false, kind: 'rejected', message }, transfer: [] });
  let data: Buffer;
  try {
    const h = decodeChunkHeader(file);
    if (h.format !== CHUNK_FORMAT) return rejected(`chunk file is format ${h.format}; uploads must be format ${CHUNK_FORMAT} (one zstd frame with its content checksum)`);
    if (h.uncompressedLength > req.maxLength) return rejected(`chunk decodes to ${h.uncompressedLength} bytes, more than the ${req.maxLength}-byte chunk size`);
    data = codec.decodeChecked(file, req.expectHash, 'full');
  } catch (e) {
    if (e instanceof ChunkFormatError || e instanceof ChunkFormatTooNewError) return rejected(e.message);
    throw e;
  }
  const dest = join(req.chunksDir, req.expectHash.slice(0, 2), req.expectHash);
  const size = req.force ? (existsSync(dest) ? 0 : -1) : intactSize(dest, data);
  if (size > 0) return { res: { id: req.id, ok: true, op: 'put', length: data.length, stored: size, existed: true, fresh: false, tmpPath: null }, transfer: [] };
  const tmp = await writeTemp(req.tmpDir, [file]);
  return { res: { id: req.id, ok: true, op: 'put', length: data.length, stored: file.length, existed: false, fresh: size < 0, tmpPath: tmp }, transfer: [] };
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
    const work = req.op === 'store' ? store(req) : req.op === 'put' ? put(req) : load(req);
    work.then(({ res, transfer }) => reply(res, transfer), fail);
  } catch (e) {
    fail(e);
  }
});
