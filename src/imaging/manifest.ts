/**
 * Version manifests: pure encode/parse plus the whole-image digest.
 *
 * File layout (all integers big-endian):
 *   "NCMANIF1"                      8 bytes magic
 *   u32 headerLength                JSON header length (≤ 64 KiB)
 *   JSON header                     ManifestHeader
 *   bitmap                          ceil(chunkCount/8) bytes, bit i (MSB first) set = chunk i holds data
 *   hashes                          32 bytes per data chunk, in chunk order
 *   stored sizes                    u32 per data chunk (chunk file size, for accounting)
 *   sha256                          32 bytes over everything before it (catches torn or edited files)
 *
 * A fully written 1 TiB disk gives a 36 MiB file; an empty one about 128 KiB, so huge sparse
 * disks cost nothing. Holes are chunks whose bytes are all zero: no file is stored for them.
 */
import { createHash } from 'node:crypto';
import { MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from './chunk-format.js';

export const MANIFEST_MAGIC = 'NCMANIF1';
export const MANIFEST_FORMAT = 1;
/** 64 TiB: beyond this, a capture or a manifest is refused as hostile rather than trusted with memory. */
export const MAX_DISK_SIZE = 2 ** 46;
const MAX_HEADER_LENGTH = 64 * 1024;
const PREFIX = 12;
const HASH_LEN = 32;

export interface ManifestHeader {
  readonly format: number;
  readonly version: number;
  readonly size: number;
  readonly sectorSize: number;
  readonly chunkSize: number;
  readonly chunkCount: number;
  readonly dataChunks: number;
  /** Whole-image digest, see imageDigest(). */
  readonly digest: string;
  readonly created: string;
  readonly source: string;
  /** Bytes in non-hole chunks. */
  readonly dataBytes: number;
  /** Sum of chunk file sizes over the distinct chunks this version names. */
  readonly storedBytes: number;
}

/**
 * A parsed manifest, as sparse as the file: memory follows the data chunks, not the disk size (a
 * 64 TiB disk with 1 GiB of data is an 8 MiB bitmap plus 1,024 entries). Look chunks up with
 * manifestHashAt(), dataIndexOf() and manifestEntries().
 */
export interface Manifest {
  readonly header: ManifestHeader;
  /** dataChunks × 32 bytes: the data chunks' hashes in disk order; holes have no entry. */
  readonly hashes: Buffer;
  /** Chunk file size per data chunk, in the same order. */
  readonly sizes: Uint32Array;
  /** Bit i (most significant first in each byte) is set when chunk i holds data. */
  readonly bitmap: Buffer;
  /** rank[j]: data chunks before chunk j × RANK_STEP. */
  readonly rank: Uint32Array;
}

const RANK_STEP = 256;
const POPCOUNT = Uint8Array.from({ length: 256 }, (_, b) => {
  let n = 0;
  for (let x = b; x; x >>= 1) n += x & 1;
  return n;
});

function rankOf(bitmap: Buffer, chunkCount: number): Uint32Array {
  const rank = new Uint32Array(Math.ceil(chunkCount / RANK_STEP) + 1);
  let acc = 0;
  for (let j = 0; j < rank.length; j++) {
    rank[j] = acc;
    const from = (j * RANK_STEP) / 8;
    const to = Math.min(bitmap.length, from + RANK_STEP / 8);
    for (let b = from; b < to; b++) acc += POPCOUNT[bitmap[b]];
  }
  return rank;
}

/** Position of chunk `index` among the data chunks, or -1 for a hole. */
export function dataIndexOf(m: Manifest, index: number): number {
  const byte = index >> 3;
  if ((m.bitmap[byte] & (0x80 >> (index & 7))) === 0) return -1;
  const block = Math.floor(index / RANK_STEP);
  let k = m.rank[block];
  for (let b = (block * RANK_STEP) / 8; b < byte; b++) k += POPCOUNT[m.bitmap[b]];
  // Bits of this byte before `index`.
  k += POPCOUNT[m.bitmap[byte] & (0xff00 >> (index & 7)) & 0xff];
  return k;
}

/** Hex hash of chunk `index`, or null for a hole. */
export function manifestHashAt(m: Manifest, index: number): string | null {
  const k = dataIndexOf(m, index);
  return k < 0 ? null : m.hashes.toString('hex', k * HASH_LEN, (k + 1) * HASH_LEN);
}

/** The data chunks in disk order. */
export function* manifestEntries(m: Manifest): Generator<TableEntry> {
  let k = 0;
  for (let byte = 0; byte < m.bitmap.length; byte++) {
    const bits = m.bitmap[byte];
    if (bits === 0) continue;
    for (let j = 0; j < 8; j++) {
      if ((bits & (0x80 >> j)) === 0) continue;
      yield { index: byte * 8 + j, hash: m.hashes.subarray(k * HASH_LEN, (k + 1) * HASH_LEN), size: m.sizes[k] };
      k++;
    }
  }
}

export class ManifestError extends Error {
  constructor(message: string) {
    super(`invalid manifest: ${message}`);
    this.name = 'ManifestError';
  }
}

export function chunkCountFor(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize);
}

export function chunkLength(size: number, chunkSize: number, index: number): number {
  return Math.min(chunkSize, size - index * chunkSize);
}

export function isHoleEntry(hashes: Buffer, index: number): boolean {
  const o = index * HASH_LEN;
  for (let i = 0; i < HASH_LEN; i += 8) if (hashes.readBigUInt64LE(o + i) !== 0n) return false;
  return true;
}

export function hashAt(hashes: Buffer, index: number): string | null {
  return isHoleEntry(hashes, index) ? null : hashes.toString('hex', index * HASH_LEN, index * HASH_LEN + HASH_LEN);
}

const zeroHashes = new Map<number, string>();
/** sha256 hex of `length` zero bytes (what a hole chunk hashes to on the client). */
export function zeroChunkHash(length: number): string {
  let h = zeroHashes.get(length);
  if (h === undefined) {
    h = createHash('sha256').update(Buffer.alloc(length)).digest('hex');
    if (zeroHashes.size < 16) zeroHashes.set(length, h);
  }
  return h;
}

/**
 * Whole-image digest: sha256 over the text made of each chunk's lowercase sha256 hex digest followed by
 * "\n", in disk order, holes included as the hash of that many zero bytes. A thin client recomputes it with
 *   for i in ...; do dd if=/dev/sda bs=1M skip=$i count=1 | sha256sum | cut -d' ' -f1; done | sha256sum
 */
export function imageDigest(chunkHashesHex: Iterable<string>): string {
  const h = createHash('sha256');
  for (const c of chunkHashesHex) h.update(c + '\n');
  return h.digest('hex');
}

/** Each chunk's hex hash in order, holes as the zero-bytes hash of their length. */
export function* chunkHashesOf(hashes: Buffer, size: number, chunkSize: number): Generator<string> {
  const n = chunkCountFor(size, chunkSize);
  for (let i = 0; i < n; i++) yield hashAt(hashes, i) ?? zeroChunkHash(chunkLength(size, chunkSize, i));
}

function isInt(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max;
}

/** Validates the JSON header's fields; throws ManifestError naming the first bad one. */
export function validateHeader(raw: unknown): ManifestHeader {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ManifestError('header is not a JSON object');
  const r = raw as Record<string, unknown>;
  if (r.format !== MANIFEST_FORMAT) throw new ManifestError(`format ${String(r.format)} is not supported (expected ${MANIFEST_FORMAT})`);
  if (!isInt(r.version, 1, 2 ** 31)) throw new ManifestError('version is not a positive integer');
  if (!isInt(r.size, 1, MAX_DISK_SIZE)) throw new ManifestError(`disk size ${String(r.size)} is out of range (1 byte to ${MAX_DISK_SIZE})`);
  if (r.sectorSize !== 512 && r.sectorSize !== 4096) throw new ManifestError(`sector size ${String(r.sectorSize)} is not 512 or 4096`);
  const cs = r.chunkSize;
  if (!isInt(cs, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE) || (cs & (cs - 1)) !== 0) throw new ManifestError(`chunk size ${String(cs)} is not a power of two in ${MIN_CHUNK_SIZE}..${MAX_CHUNK_SIZE}`);
  const expectCount = chunkCountFor(r.size, cs);
  if (r.chunkCount !== expectCount) throw new ManifestError(`chunk count ${String(r.chunkCount)} does not match size/chunk size (${expectCount})`);
  if (!isInt(r.dataChunks, 0, expectCount)) throw new ManifestError('data chunk count is out of range');
  if (typeof r.digest !== 'string' || !/^[0-9a-f]{64}$/.test(r.digest)) throw new ManifestError('digest is not a sha256 hex string');
  if (typeof r.created !== 'string' || Number.isNaN(Date.parse(r.created))) throw new ManifestError('created is not an ISO date');
  if (typeof r.source !== 'string' || r.source.length > 4096) throw new ManifestError('source is not a string of at most 4096 characters');
  if (!isInt(r.dataBytes, 0, r.size)) throw new ManifestError('data bytes out of range');
  if (!isInt(r.storedBytes, 0, Number.MAX_SAFE_INTEGER)) throw new ManifestError('stored bytes out of range');
  return {
    format: MANIFEST_FORMAT,
    version: r.version,
    size: r.size,
    sectorSize: r.sectorSize,
    chunkSize: cs,
    chunkCount: expectCount,
    dataChunks: r.dataChunks,
    digest: r.digest,
    created: r.created,
    source: r.source,
    dataBytes: r.dataBytes,
    storedBytes: r.storedBytes,
  };
}

/** Length of the magic + length prefix; read this many bytes first, then manifestHeaderLength(). */
export const MANIFEST_PREFIX_LENGTH = PREFIX;

export function manifestHeaderLength(prefix: Buffer): number {
  if (prefix.length < PREFIX) throw new ManifestError(`file is ${prefix.length} bytes, too short for a manifest`);
  if (prefix.toString('latin1', 0, 8) !== MANIFEST_MAGIC) throw new ManifestError('bad magic (not a netclone manifest)');
  const len = prefix.readUInt32BE(8);
  if (len < 2 || len > MAX_HEADER_LENGTH) throw new ManifestError(`header length ${len} is out of range`);
  return len;
}

/** Parses only the header, from the first PREFIX + headerLength bytes. */
export function parseManifestHeader(buf: Buffer): ManifestHeader {
  const len = manifestHeaderLength(buf);
  if (buf.length < PREFIX + len) throw new ManifestError('truncated header');
  let raw: unknown;
  try {
    raw = JSON.parse(buf.toString('utf8', PREFIX, PREFIX + len));
  } catch {
    throw new ManifestError('header is not valid JSON');
  }
  return validateHeader(raw);
}

export function expectedManifestLength(headerLength: number, h: ManifestHeader): number {
  return PREFIX + headerLength + Math.ceil(h.chunkCount / 8) + h.dataChunks * (HASH_LEN + 4) + HASH_LEN;
}

export function parseManifest(buf: Buffer): Manifest {
  const headerLength = manifestHeaderLength(buf);
  const header = parseManifestHeader(buf);
  const expect = expectedManifestLength(headerLength, header);
  if (buf.length !== expect) throw new ManifestError(`file is ${buf.length} bytes, expected ${expect} (truncated or padded chunk table)`);
  const body = buf.subarray(0, buf.length - HASH_LEN);
  const sum = createHash('sha256').update(body).digest();
  if (!sum.equals(buf.subarray(buf.length - HASH_LEN))) throw new ManifestError('checksum mismatch (file damaged or edited)');
  const n = header.chunkCount;
  let o = PREFIX + headerLength;
  const bitmap = buf.subarray(o, o + Math.ceil(n / 8));
  o += bitmap.length;
  if (n % 8 !== 0 && (bitmap[bitmap.length - 1] & (0xff >> (n % 8))) !== 0) throw new ManifestError('bitmap has bits set past the last chunk');
  let k = 0;
  for (let b = 0; b < bitmap.length; b++) k += POPCOUNT[bitmap[b]];
  if (k !== header.dataChunks) throw new ManifestError(`bitmap marks ${k} data chunks, header declares ${header.dataChunks}`);
  const lastIsData = (bitmap[(n - 1) >> 3] & (0x80 >> ((n - 1) & 7))) !== 0;
  const dataBytes = k * header.chunkSize - (lastIsData ? header.chunkSize - chunkLength(header.size, header.chunkSize, n - 1) : 0);
  if (dataBytes !== header.dataBytes) throw new ManifestError(`data bytes ${header.dataBytes} do not match the table (${dataBytes})`);
  const hashes = Buffer.from(buf.subarray(o, o + k * HASH_LEN));
  for (let i = 0; i < k; i++) if (isHoleEntry(hashes, i)) throw new ManifestError(`data chunk ${i} of the table has an all-zero hash`);
  const sizes = new Uint32Array(k);
  const sizeStart = o + k * HASH_LEN;
  for (let i = 0; i < k; i++) sizes[i] = buf.readUInt32BE(sizeStart + i * 4);
  const ownBitmap = Buffer.from(bitmap);
  return { header, hashes, sizes, bitmap: ownBitmap, rank: rankOf(ownBitmap, n) };
}

export type ManifestHeaderInput = Omit<ManifestHeader, 'format' | 'chunkCount' | 'dataChunks' | 'dataBytes'>;

/** Builds the file bytes; counts and data bytes are derived from the table so they cannot disagree. */
export function encodeManifest(input: ManifestHeaderInput, hashes: Buffer, sizes: Uint32Array): Buffer {
  return encodeManifestWithHeader(input, hashes, sizes).bytes;
}

/** Like encodeManifest, also returning the derived header (saves re-parsing a big table). */
export function encodeManifestWithHeader(input: ManifestHeaderInput, hashes: Buffer, sizes: Uint32Array): { bytes: Buffer; header: ManifestHeader } {
  const n = chunkCountFor(input.size, input.chunkSize);
  if (hashes.length !== n * HASH_LEN || sizes.length !== n) throw new Error('chunk table length does not match the disk size');
  function* entries(): Generator<TableEntry> {
    for (let i = 0; i < n; i++) if (!isHoleEntry(hashes, i)) yield { index: i, hash: hashes.subarray(i * HASH_LEN, (i + 1) * HASH_LEN), size: sizes[i] };
  }
  return encodeManifestFromEntries(input, entries);
}

/** One data chunk of a table: its index, 32-byte binary hash and file size. */
export interface TableEntry {
  readonly index: number;
  readonly hash: Buffer;
  readonly size: number;
}

/**
 * Builds the file bytes from the data chunks alone, in ascending index order (called twice: once to
 * count, once to fill). Memory is the bitmap plus the data entries, whatever the disk size.
 */
export function encodeManifestFromEntries(input: ManifestHeaderInput, entries: () => Iterable<TableEntry>): { bytes: Buffer; header: ManifestHeader } {
  const n = chunkCountFor(input.size, input.chunkSize);
  const bitmap = Buffer.alloc(Math.ceil(n / 8));
  let dataChunks = 0;
  let dataBytes = 0;
  let last = -1;
  for (const e of entries()) {
    if (e.index <= last || e.index >= n) throw new Error(`chunk table entry ${e.index} is out of order or past the end`);
    last = e.index;
    bitmap[e.index >> 3] |= 0x80 >> (e.index & 7);
    dataChunks++;
    dataBytes += chunkLength(input.size, input.chunkSize, e.index);
  }
  const header: ManifestHeader = { ...input, format: MANIFEST_FORMAT, chunkCount: n, dataChunks, dataBytes };
  validateHeader(header);
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(PREFIX);
  prefix.write(MANIFEST_MAGIC, 0, 'latin1');
  prefix.writeUInt32BE(json.length, 8);
  const table = Buffer.alloc(dataChunks * (HASH_LEN + 4));
  let k = 0;
  for (const e of entries()) {
    if (k >= dataChunks) throw new Error('chunk table changed while it was being encoded');
    e.hash.copy(table, k * HASH_LEN, 0, HASH_LEN);
    table.writeUInt32BE(e.size, dataChunks * HASH_LEN + k * 4);
    k++;
  }
  const body = Buffer.concat([prefix, json, bitmap, table]);
  return { bytes: Buffer.concat([body, createHash('sha256').update(body).digest()]), header };
}

/**
 * imageDigest() over a sparse table: data chunks from `entries` (ascending), holes in between.
 * Runs of full-size holes are hashed as blocks of repeated lines rather than one call per chunk, so a
 * huge mostly-empty disk costs sha256 time only.
 */
export function imageDigestFromEntries(size: number, chunkSize: number, entries: Iterable<TableEntry>): string {
  const n = chunkCountFor(size, chunkSize);
  const h = createHash('sha256');
  const line = Buffer.from(zeroChunkHash(chunkSize) + '\n', 'latin1');
  const BLOCK = 4096;
  let block: Buffer | null = null;
  const holes = (from: number, to: number): void => {
    let i = from;
    // The short last chunk's hole hashes differently: leave it to the loop below.
    const fullEnd = Math.min(to, size % chunkSize === 0 ? n : n - 1);
    while (fullEnd - i >= BLOCK) {
      block ??= Buffer.concat(Array.from({ length: BLOCK }, () => line));
      h.update(block);
      i += BLOCK;
    }
    for (; i < to; i++) h.update(zeroChunkHash(chunkLength(size, chunkSize, i)) + '\n');
  };
  let next = 0;
  for (const e of entries) {
    holes(next, e.index);
    h.update(e.hash.toString('hex') + '\n');
    next = e.index + 1;
  }
  holes(next, n);
  return h.digest('hex');
}
