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

export interface Manifest {
  readonly header: ManifestHeader;
  /** chunkCount × 32 bytes; an all-zero entry is a hole. */
  readonly hashes: Buffer;
  /** Chunk file size per chunk, 0 for holes. */
  readonly sizes: Uint32Array;
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

/** Length of the magic + length prefix; read this many bytes first, then headerLength(). */
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
  const hashStart = o;
  const sizeStart = hashStart + header.dataChunks * HASH_LEN;
  const hashes = Buffer.alloc(n * HASH_LEN);
  const sizes = new Uint32Array(n);
  let k = 0;
  let dataBytes = 0;
  for (let i = 0; i < n; i++) {
    if ((bitmap[i >> 3] & (0x80 >> (i & 7))) === 0) continue;
    if (k >= header.dataChunks) throw new ManifestError('bitmap marks more data chunks than the header declares');
    buf.copy(hashes, i * HASH_LEN, hashStart + k * HASH_LEN, hashStart + (k + 1) * HASH_LEN);
    if (isHoleEntry(hashes, i)) throw new ManifestError(`chunk ${i} is marked as data but has an all-zero hash`);
    sizes[i] = buf.readUInt32BE(sizeStart + k * 4);
    dataBytes += chunkLength(header.size, header.chunkSize, i);
    k++;
  }
  if (k !== header.dataChunks) throw new ManifestError(`bitmap marks ${k} data chunks, header declares ${header.dataChunks}`);
  if (n % 8 !== 0 && (bitmap[bitmap.length - 1] & (0xff >> (n % 8))) !== 0) throw new ManifestError('bitmap has bits set past the last chunk');
  if (dataBytes !== header.dataBytes) throw new ManifestError(`data bytes ${header.dataBytes} do not match the table (${dataBytes})`);
  return { header, hashes, sizes };
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
  const bitmap = Buffer.alloc(Math.ceil(n / 8));
  let dataChunks = 0;
  let dataBytes = 0;
  for (let i = 0; i < n; i++) {
    if (isHoleEntry(hashes, i)) continue;
    bitmap[i >> 3] |= 0x80 >> (i & 7);
    dataChunks++;
    dataBytes += chunkLength(input.size, input.chunkSize, i);
  }
  const header: ManifestHeader = { ...input, format: MANIFEST_FORMAT, chunkCount: n, dataChunks, dataBytes };
  validateHeader(header);
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(PREFIX);
  prefix.write(MANIFEST_MAGIC, 0, 'latin1');
  prefix.writeUInt32BE(json.length, 8);
  const table = Buffer.alloc(dataChunks * (HASH_LEN + 4));
  let k = 0;
  for (let i = 0; i < n; i++) {
    if ((bitmap[i >> 3] & (0x80 >> (i & 7))) === 0) continue;
    hashes.copy(table, k * HASH_LEN, i * HASH_LEN, (i + 1) * HASH_LEN);
    table.writeUInt32BE(sizes[i], dataChunks * HASH_LEN + k * 4);
    k++;
  }
  const body = Buffer.concat([prefix, json, bitmap, table]);
  return { bytes: Buffer.concat([body, createHash('sha256').update(body).digest()]), header };
}
