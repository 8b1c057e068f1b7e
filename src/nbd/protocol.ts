/**
 * NBD wire format (fixed newstyle handshake, simple and structured replies): constants and
 * pure encode/decode functions. Bytes in, typed values out; no sockets, no policy.
 * Reference: NetworkBlockDevice/nbd doc/proto.md.
 */

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server → client). */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
/** Client flags (client → server). */
export const FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_C_NO_ZEROES = 1 << 1;
export const KNOWN_CLIENT_FLAGS = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES;

/** Transmission flags. */
export const TFLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const REP_ERR_BIT = 0x80000000;
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: REP_ERR_BIT + 1,
  ERR_POLICY: REP_ERR_BIT + 2,
  ERR_INVALID: REP_ERR_BIT + 3,
  ERR_PLATFORM: REP_ERR_BIT + 4,
  ERR_TLS_REQD: REP_ERR_BIT + 5,
  ERR_UNKNOWN: REP_ERR_BIT + 6,
  ERR_SHUTDOWN: REP_ERR_BIT + 7,
  ERR_BLOCK_SIZE_REQD: REP_ERR_BIT + 8,
  ERR_TOO_BIG: REP_ERR_BIT + 9,
} as const;

export const INFO = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

export const CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

export const CMD_FLAG = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

export const REPLY_FLAG_DONE = 1 << 0;

export const REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

export const ERRNO = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type ErrnoName = keyof typeof ERRNO;

export const STATE_HOLE = 1;
export const STATE_ZERO = 2;

/** The spec's string limit: names, queries and messages longer than this are invalid. */
export const MAX_STRING_LENGTH = 4096;

export const OPTION_HEADER_LENGTH = 16;
export const REQUEST_HEADER_LENGTH = 28;
export const SIMPLE_REPLY_HEADER_LENGTH = 16;
export const STRUCTURED_HEADER_LENGTH = 20;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes UTF-8 strictly; returns undefined for malformed bytes so callers can answer ERR_INVALID. */
export function decodeUtf8(bytes: Buffer): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Handshake

/** S: NBDMAGIC, IHAVEOPT, 16-bit handshake flags. */
export function encodeServerGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.allocUnsafe(18);
  b.writeBigUInt64BE(NBDMAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

export function decodeClientFlags(b: Buffer): number {
  return b.readUInt32BE(0);
}

export interface OptionHeader {
  readonly magicOk: boolean;
  readonly option: number;
  readonly length: number;
}

export function decodeOptionHeader(b: Buffer): OptionHeader {
  return {
    magicOk: b.readBigUInt64BE(0) === IHAVEOPT,
    option: b.readUInt32BE(8),
    length: b.readUInt32BE(12),
  };
}

export function encodeOptionReply(option: number, replyType: number, data?: Buffer): Buffer {
  const len = data?.length ?? 0;
  const b = Buffer.allocUnsafe(20 + len);
  b.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(replyType >>> 0, 12);
  b.writeUInt32BE(len, 16);
  if (data) data.copy(b, 20);
  return b;
}

/** Error replies carry a human-readable message (truncated to the spec's string limit). */
export function encodeOptionError(option: number, replyType: number, message: string): Buffer {
  return encodeOptionReply(option, replyType, truncateUtf8(message, MAX_STRING_LENGTH));
}

export function encodeInfoExport(size: number, transmissionFlags: number): Buffer {
  const b = Buffer.allocUnsafe(12);
  b.writeUInt16BE(INFO.EXPORT, 0);
  b.writeBigUInt64BE(BigInt(size), 2);
  b.writeUInt16BE(transmissionFlags, 10);
  return b;
}

export function encodeInfoString(infoType: typeof INFO.NAME | typeof INFO.DESCRIPTION, text: string): Buffer {
  const s = truncateUtf8(text, MAX_STRING_LENGTH);
  const b = Buffer.allocUnsafe(2 + s.length);
  b.writeUInt16BE(infoType, 0);
  s.copy(b, 2);
  return b;
}

export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const b = Buffer.allocUnsafe(14);
  b.writeUInt16BE(INFO.BLOCK_SIZE, 0);
  b.writeUInt32BE(minimum, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(maximum, 10);
  return b;
}

export function encodeRepServer(name: string, description: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

export function encodeRepMetaContext(contextId: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length);
  b.writeUInt32BE(contextId, 0);
  n.copy(b, 4);
  return b;
}

/** Reply to NBD_OPT_EXPORT_NAME: size, flags and (unless NO_ZEROES) 124 reserved zero bytes. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? 10 : 134);
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

export type OptionParseResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly message: string };

export interface GoRequest {
  readonly name: string;
  readonly infoRequests: readonly number[];
}

/** Data of NBD_OPT_INFO / NBD_OPT_GO: u32 name length, name, u16 count, u16 × count. */
export function parseGoOption(data: Buffer): OptionParseResult<GoRequest> {
  if (data.length < 6) return { ok: false, message: `option data too short (${data.length} bytes, need at least 6)` };
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 6) return { ok: false, message: `export name length ${nameLen} exceeds option data` };
  if (nameLen > MAX_STRING_LENGTH) return { ok: false, message: `export name longer than ${MAX_STRING_LENGTH} bytes` };
  const name = decodeUtf8(data.subarray(4, 4 + nameLen));
  if (name === undefined) return { ok: false, message: 'export name is not valid UTF-8' };
  const count = data.readUInt16BE(4 + nameLen);
  if (data.length !== 6 + nameLen + 2 * count) {
    return { ok: false, message: `option length ${data.length} does not match ${count} information requests` };
  }
  const infoRequests: number[] = [];
  for (let i = 0; i < count; i++) infoRequests.push(data.readUInt16BE(6 + nameLen + 2 * i));
  return { ok: true, value: { name, infoRequests } };
}

/** Data of NBD_OPT_EXPORT_NAME: the whole payload is the name. */
export function parseExportNameOption(data: Buffer): OptionParseResult<string> {
  if (data.length > MAX_STRING_LENGTH) return { ok: false, message: `export name longer than ${MAX_STRING_LENGTH} bytes` };
  const name = decodeUtf8(data);
  if (name === undefined) return { ok: false, message: 'export name is not valid UTF-8' };
  return { ok: true, value: name };
}

export interface MetaContextRequest {
  readonly name: string;
  readonly queries: readonly string[];
}

/** Data of NBD_OPT_{LIST,SET}_META_CONTEXT: u32 name length, name, u32 count, (u32 len, query) × count. */
export function parseMetaContextOption(data: Buffer, maxQueries: number): OptionParseResult<MetaContextRequest> {
  if (data.length < 8) return { ok: false, message: `option data too short (${data.length} bytes, need at least 8)` };
  const nameLen = data.readUInt32BE(0);
  if (nameLen > data.length - 8) return { ok: false, message: `export name length ${nameLen} exceeds option data` };
  if (nameLen > MAX_STRING_LENGTH) return { ok: false, message: `export name longer than ${MAX_STRING_LENGTH} bytes` };
  const name = decodeUtf8(data.subarray(4, 4 + nameLen));
  if (name === undefined) return { ok: false, message: 'export name is not valid UTF-8' };
  let pos = 4 + nameLen;
  const count = data.readUInt32BE(pos);
  pos += 4;
  if (count > maxQueries) return { ok: false, message: `too many queries (${count}, limit ${maxQueries})` };
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (pos + 4 > data.length) return { ok: false, message: `query ${i} length runs past option data` };
    const qLen = data.readUInt32BE(pos);
    pos += 4;
    if (qLen > data.length - pos) return { ok: false, message: `query ${i} length ${qLen} runs past option data` };
    if (qLen > MAX_STRING_LENGTH) return { ok: false, message: `query ${i} longer than ${MAX_STRING_LENGTH} bytes` };
    const q = decodeUtf8(data.subarray(pos, pos + qLen));
    if (q === undefined) return { ok: false, message: `query ${i} is not valid UTF-8` };
    queries.push(q);
    pos += qLen;
  }
  if (pos !== data.length) return { ok: false, message: `${data.length - pos} trailing bytes after queries` };
  return { ok: true, value: { name, queries } };
}

// ---------------------------------------------------------------------------------------------
// Transmission

export interface RequestHeader {
  readonly magicOk: boolean;
  readonly flags: number;
  readonly type: number;
  /** Opaque; echoed in every reply. */
  readonly cookie: bigint;
  /** Unsigned 64-bit; may exceed Number.MAX_SAFE_INTEGER on hostile input, hence bigint. */
  readonly offset: bigint;
  readonly length: number;
}

export function decodeRequestHeader(b: Buffer, at = 0): RequestHeader {
  return {
    magicOk: b.readUInt32BE(at) === REQUEST_MAGIC,
    flags: b.readUInt16BE(at + 4),
    type: b.readUInt16BE(at + 6),
    cookie: b.readBigUInt64BE(at + 8),
    offset: b.readBigUInt64BE(at + 16),
    length: b.readUInt32BE(at + 24),
  };
}

export function encodeRequestHeader(h: Omit<RequestHeader, 'magicOk'>): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_HEADER_LENGTH);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(h.flags, 4);
  b.writeUInt16BE(h.type, 6);
  b.writeBigUInt64BE(h.cookie, 8);
  b.writeBigUInt64BE(h.offset, 16);
  b.writeUInt32BE(h.length >>> 0, 24);
  return b;
}

export function encodeSimpleReply(errno: number, cookie: bigint): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_LENGTH);
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(errno, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}

function structuredHeader(b: Buffer, flags: number, type: number, cookie: bigint, payloadLength: number): void {
  b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeUInt32BE(payloadLength, 16);
}

export function encodeNoneChunk(cookie: bigint): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_HEADER_LENGTH);
  structuredHeader(b, REPLY_FLAG_DONE, REPLY_TYPE.NONE, cookie, 0);
  return b;
}

/** Header plus the 8-byte offset of an OFFSET_DATA chunk; the caller sends `dataLength` bytes after it. */
export function encodeOffsetDataHeader(cookie: bigint, offset: number, dataLength: number, done: boolean): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_HEADER_LENGTH + 8);
  structuredHeader(b, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE.OFFSET_DATA, cookie, 8 + dataLength);
  b.writeBigUInt64BE(BigInt(offset), 20);
  return b;
}

export function encodeOffsetHoleChunk(cookie: bigint, offset: number, length: number, done: boolean): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_HEADER_LENGTH + 12);
  structuredHeader(b, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE.OFFSET_HOLE, cookie, 12);
  b.writeBigUInt64BE(BigInt(offset), 20);
  b.writeUInt32BE(length, 28);
  return b;
}

/** NBD_REPLY_TYPE_ERROR, or ERROR_OFFSET when `offset` is given. */
export function encodeErrorChunk(cookie: bigint, errno: number, message: string, done: boolean, offset?: number): Buffer {
  const msg = truncateUtf8(message, MAX_STRING_LENGTH);
  const tail = offset === undefined ? 0 : 8;
  const b = Buffer.allocUnsafe(STRUCTURED_HEADER_LENGTH + 6 + msg.length + tail);
  const type = offset === undefined ? REPLY_TYPE.ERROR : REPLY_TYPE.ERROR_OFFSET;
  structuredHeader(b, done ? REPLY_FLAG_DONE : 0, type, cookie, 6 + msg.length + tail);
  b.writeUInt32BE(errno, 20);
  b.writeUInt16BE(msg.length, 24);
  msg.copy(b, 26);
  if (offset !== undefined) b.writeBigUInt64BE(BigInt(offset), 26 + msg.length);
  return b;
}

export interface WireExtent {
  readonly length: number;
  readonly flags: number;
}

export function encodeBlockStatusChunk(cookie: bigint, contextId: number, extents: readonly WireExtent[], done: boolean): Buffer {
  const payload = 4 + 8 * extents.length;
  const b = Buffer.allocUnsafe(STRUCTURED_HEADER_LENGTH + payload);
  structuredHeader(b, done ? REPLY_FLAG_DONE : 0, REPLY_TYPE.BLOCK_STATUS, cookie, payload);
  b.writeUInt32BE(contextId, 20);
  let pos = 24;
  for (const e of extents) {
    b.writeUInt32BE(e.length, pos);
    b.writeUInt32BE(e.flags >>> 0, pos + 4);
    pos += 8;
  }
  return b;
}

/** Truncates to at most `max` bytes without splitting a UTF-8 sequence. */
export function truncateUtf8(text: string, max: number): Buffer {
  const b = Buffer.from(text, 'utf8');
  if (b.length <= max) return b;
  let end = max;
  // Back up over continuation bytes (10xxxxxx) so the cut lands on a character boundary.
  while (end > 0 && (b[end] & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

export function errnoName(errno: number): string {
  for (const [k, v] of Object.entries(ERRNO)) if (v === errno) return k;
  return `errno ${errno}`;
}
