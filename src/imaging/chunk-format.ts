/**
 * The chunk file format, the one copy of it: framing, hashing and zstd, for the server's codec
 * workers and for anything else that writes or checks chunk files (the imaging agent).
 *
 * A chunk file is a 16-byte header, then the payload:
 *
 *   0  4  magic "NCCK"
 *   4  1  format version (1 or 2; this code writes 2)
 *   5  1  codec (0 = raw, 1 = zstd)
 *   6  2  reserved, zero
 *   8  4  uncompressed length (u32 BE)
 *  12  4  payload length (u32 BE)
 *
 * Format 1 (written up to issue 10): raw or zstd, nothing in the file checks its decoded bytes, so
 * every read of one is checked against its name (sha256 of the decoded bytes).
 * Format 2: always one zstd frame that carries zstd's content checksum (XXH64 of the decoded bytes,
 * low 32 bits), which the decoder checks as it decodes. That is the cheap per-read check: the NBD read
 * path relies on it instead of sha256. sha256 stays the chunk's name, checked where bytes of unknown
 * origin come in (a store's dedup check, an upload) and by verify (ChunkCheck 'full').
 *
 * Why zstd's checksum and not a CRC in the header (bench/chunk-check.ts, this 2-core EPYC, node
 * 20.20, one thread, µs per 1 MiB chunk): sha256 634; CRC-32 (zlib.crc32, no SIMD in node's zlib
 * here) 186; zstd decode of a text-like chunk 497, with its content checksum 554, with CRC-32 after it
 * 682; an incompressible chunk as a zstd frame (zstd stores it in raw blocks) decoded with its checksum
 * 109, against 186 for a CRC-32 over a raw chunk. So the zstd checksum is the cheapest check for both
 * kinds of chunk, it needs no second pass over the decoded bytes, and it costs the writer ~60 µs per
 * chunk instead of a CRC's ~190. CRC-32C or a separate xxHash64 would need a native addon beside
 * zstd-napi, in the server and in the client's initramfs. An incompressible chunk's file is 38 bytes
 * larger than a raw one was (block headers, frame header, checksum), and a read copies it once out of
 * the file buffer (~45 µs, included in the 109).
 *
 * The zstd frame of a format-2 file must be exactly one frame, declare its content size, and have the
 * checksum flag set: decodeChunkHeader() checks all three, so a flipped flag bit cannot turn the
 * check off.
 */
import { createHash } from 'node:crypto';
import zstd from 'zstd-napi/binding.js';

/**
 * Chunk size: 1 MiB.
 *
 * Measured on this machine (2 cores, node 20, zstd-napi, 192 MiB of real /usr binaries+docs,
 * warm, single thread): compress level 1 ≈ 450–470 MB/s at 1, 2 and 4 MiB alike (ratio 0.38),
 * level 3 ≈ 285 MB/s (ratio 0.28–0.33); decompress 0.9–1.3 GB/s; sha256 ≈ 1.75 GB/s at every size.
 * Writing chunk files with fsync, 8 in parallel: 1 MiB ≈ 750 MB/s, 4 MiB ≈ 600 MB/s.
 * So throughput does not favour big chunks, while small chunks dedup better (an OS update
 * touching scattered 4 KiB blocks dirties 1 MiB instead of 4 MiB each), catch more holes on
 * half-empty disks, bound capture RAM per partial chunk, and match `dd bs=1M` on the thin
 * client for the whole-image digest. The cost is the table: 36 bytes per data chunk, so a
 * fully written 1 TiB disk has a 36 MiB manifest table (held in RAM by readers), acceptable.
 */
export const DEFAULT_CHUNK_SIZE = 1024 * 1024;
export const MIN_CHUNK_SIZE = 64 * 1024;
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024;

export const CHUNK_HEADER_SIZE = 16;
const MAGIC = 0x4e43434b; // "NCCK"
/** The format this code writes. */
export const CHUNK_FORMAT = 2;
/** The oldest format this code reads. */
export const OLDEST_CHUNK_FORMAT = 1;

const ZSTD_MAGIC = 0xfd2fb528;
/** Frame header descriptor bit 2: the frame ends with a content checksum. */
const ZSTD_CHECKSUM_FLAG = 0x04;

export enum ChunkCodec {
  Raw = 0,
  Zstd = 1,
}

export interface ChunkHeader {
  readonly format: number;
  readonly codec: ChunkCodec;
  readonly uncompressedLength: number;
  readonly payloadLength: number;
}

/** The file is not an intact chunk file (damaged, truncated, padded, or not a chunk at all). */
export class ChunkFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChunkFormatError';
  }
}

/** The file is a chunk of a format newer than this code reads: intact as far as anyone knows, but not ours to read. */
export class ChunkFormatTooNewError extends Error {
  constructor(readonly format: number) {
    super(`chunk file format ${format} is newer than this netclone reads (formats ${OLDEST_CHUNK_FORMAT} to ${CHUNK_FORMAT}); upgrade netclone to read this store`);
    this.name = 'ChunkFormatTooNewError';
  }
}

/** Largest file a chunk of `chunkLength` bytes can have in the format this code writes. */
export function maxChunkFileSize(chunkLength: number): number {
  return CHUNK_HEADER_SIZE + zstd.compressBound(chunkLength);
}

/** The chunk's name: hex sha256 of its decoded bytes. */
export function chunkName(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function encodeChunkHeader(codec: ChunkCodec, uncompressedLength: number, payloadLength: number, into: Buffer): Buffer {
  into.writeUInt32BE(MAGIC, 0);
  into.writeUInt8(CHUNK_FORMAT, 4);
  into.writeUInt8(codec, 5);
  into.writeUInt16BE(0, 6);
  into.writeUInt32BE(uncompressedLength, 8);
  into.writeUInt32BE(payloadLength, 12);
  return into;
}

/** A format-2 payload must be one whole zstd frame of the stated size with its content checksum. */
function checkZstdFrame(payload: Buffer, uncompressedLength: number): void {
  if (payload.length < 6 || payload.readUInt32LE(0) !== ZSTD_MAGIC) throw new ChunkFormatError('chunk payload is not a zstd frame');
  if ((payload[4] & ZSTD_CHECKSUM_FLAG) === 0) throw new ChunkFormatError('chunk zstd frame has no content checksum (format 2 requires one)');
  let frame: number;
  let content: number | null;
  try {
    frame = zstd.findFrameCompressedSize(payload);
    content = zstd.getFrameContentSize(payload);
  } catch (e) {
    throw new ChunkFormatError(`chunk zstd frame is malformed: ${(e as Error).message}`);
  }
  if (frame !== payload.length) throw new ChunkFormatError(`chunk zstd frame is ${frame} bytes, payload ${payload.length} (one frame expected)`);
  if (content !== uncompressedLength) throw new ChunkFormatError(`chunk zstd frame says it holds ${content ?? 'an unknown number of'} bytes, header says ${uncompressedLength}`);
}

/**
 * Validates a whole chunk file's header against its length (and, for format 2, the zstd frame's
 * own header); throws ChunkFormatError saying what is wrong, or ChunkFormatTooNewError.
 */
export function decodeChunkHeader(file: Uint8Array): ChunkHeader {
  if (file.length < CHUNK_HEADER_SIZE) throw new ChunkFormatError(`chunk file is ${file.length} bytes, shorter than its ${CHUNK_HEADER_SIZE}-byte header`);
  const b = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  if (b.readUInt32BE(0) !== MAGIC) throw new ChunkFormatError('chunk file has a bad magic number (not a netclone chunk)');
  const format = b.readUInt8(4);
  if (format > CHUNK_FORMAT) throw new ChunkFormatTooNewError(format);
  if (format < OLDEST_CHUNK_FORMAT) throw new ChunkFormatError(`chunk file names format ${format}, which no netclone writes`);
  const codec = b.readUInt8(5);
  if (codec !== ChunkCodec.Raw && codec !== ChunkCodec.Zstd) throw new ChunkFormatError(`chunk file names unknown codec ${codec}`);
  const uncompressedLength = b.readUInt32BE(8);
  const payloadLength = b.readUInt32BE(12);
  if (uncompressedLength === 0 || uncompressedLength > MAX_CHUNK_SIZE) throw new ChunkFormatError(`chunk uncompressed length ${uncompressedLength} is out of range`);
  if (payloadLength !== file.length - CHUNK_HEADER_SIZE) throw new ChunkFormatError(`chunk payload length ${payloadLength} does not match file length ${file.length} (truncated or padded)`);
  if (codec === ChunkCodec.Raw && payloadLength !== uncompressedLength) throw new ChunkFormatError('raw chunk payload length differs from its uncompressed length');
  if (format >= 2) {
    if (codec !== ChunkCodec.Zstd) throw new ChunkFormatError(`chunk format ${format} file names codec ${codec}; only zstd carries the content checksum`);
    checkZstdFrame(b.subarray(CHUNK_HEADER_SIZE), uncompressedLength);
  }
  return { format, codec, uncompressedLength, payloadLength };
}

/** What decoding a chunk file proved. */
export interface DecodedChunk {
  /** The decoded bytes: a view of the file's buffer (format-1 raw chunk) or the output buffer. */
  readonly data: Buffer;
  /**
   * The file's content checksum matched the decoded bytes (format 2). False for format 1, which has
   * none: only comparing sha256 with the chunk's name tells whether those bytes are right.
   */
  readonly checksummed: boolean;
}

/**
 * Which check a read of a chunk makes. 'fast': the content checksum inside a format-2 file, or sha256
 * against the name for format 1 (the NBD read path). 'full': sha256 against the name always (verify,
 * uploads, the agent), which also catches a file forged with a matching checksum.
 */
export type ChunkCheck = 'fast' | 'full';

/**
 * Encoder and decoder state for one thread (zstd contexts are not thread-safe). zstd runs through
 * the binding's context objects so compressed bytes land in a caller's reused scratch buffer and
 * decoded bytes in a buffer of the exact size.
 */
export class ChunkCodecContext {
  private readonly cctx = new Map<number, zstd.CCtx>();
  private readonly dctx = new zstd.DCtx();

  private cctxFor(level: number): zstd.CCtx {
    let c = this.cctx.get(level);
    if (!c) {
      c = new zstd.CCtx();
      c.setParameter(zstd.CParameter.compressionLevel, level);
      c.setParameter(zstd.CParameter.checksumFlag, 1);
      this.cctx.set(level, c);
    }
    return c;
  }

  /**
   * Header and payload of the chunk file for `data` at zstd `level`. `scratch` must hold at least
   * zstd.compressBound(data.length) bytes (maxChunkFileSize() - CHUNK_HEADER_SIZE); the payload is a
   * view of it. Incompressible data comes out as a frame of zstd raw blocks, still checksummed.
   */
  encode(data: Buffer, level: number, scratch: Buffer): [Buffer, Buffer] {
    if (data.length === 0 || data.length > MAX_CHUNK_SIZE) throw new RangeError(`chunk of ${data.length} bytes is out of range (1 to ${MAX_CHUNK_SIZE})`);
    const n = this.cctxFor(level).compress2(scratch, data);
    const header = encodeChunkHeader(ChunkCodec.Zstd, data.length, n, Buffer.allocUnsafe(CHUNK_HEADER_SIZE));
    return [header, scratch.subarray(0, n)];
  }

  /**
   * Decodes a whole chunk file, checking everything the file itself can prove (header, frame, size,
   * and for format 2 the content checksum); throws ChunkFormatError or ChunkFormatTooNewError.
   * zstd output goes into `into` when given (at least the decoded length), else a new buffer.
   */
  decode(file: Buffer, into?: Buffer): DecodedChunk {
    const h = decodeChunkHeader(file);
    const payload = file.subarray(CHUNK_HEADER_SIZE);
    if (h.codec === ChunkCodec.Raw) return { data: payload, checksummed: false };
    const out = into !== undefined && into.length >= h.uncompressedLength ? into.subarray(0, h.uncompressedLength) : Buffer.allocUnsafeSlow(h.uncompressedLength);
    let n: number;
    try {
      n = this.dctx.decompress(out, payload);
    } catch (e) {
      const msg = (e as Error).message;
      if (/checksum/i.test(msg)) throw new ChunkFormatError('content checksum of the decoded bytes does not match the one stored in the chunk file');
      throw new ChunkFormatError(`zstd payload does not decode: ${msg}`);
    }
    if (n !== h.uncompressedLength) throw new ChunkFormatError(`chunk decompressed to ${n} bytes, header says ${h.uncompressedLength}`);
    return { data: out, checksummed: h.format >= 2 };
  }

  /**
   * Decodes a chunk file and checks it as `check` asks against `expectName` (hex sha256); returns
   * the decoded bytes or throws ChunkFormatError (a mismatch says "does not match").
   */
  decodeChecked(file: Buffer, expectName: string, check: ChunkCheck, into?: Buffer): Buffer {
    const { data, checksummed } = this.decode(file, into);
    if (check === 'full' || !checksummed) {
      const actual = chunkName(data);
      if (actual !== expectName) throw new ChunkFormatError(`content hash ${actual} does not match chunk name`);
    }
    return data;
  }
}
