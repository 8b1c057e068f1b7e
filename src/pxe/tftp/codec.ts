/**
 * TFTP wire codec (RFC 1350, option extension RFC 2347). Pure: bytes in, typed values out.
 * Policy (which options to accept, path rules) lives in the server, not here.
 */

export const Opcode = {
  RRQ: 1,
  WRQ: 2,
  DATA: 3,
  ACK: 4,
  ERROR: 5,
  OACK: 6,
} as const;

/** RFC 1350 error codes, plus 8 from RFC 2347 (option negotiation refused). */
export const ErrorCode = {
  NotDefined: 0,
  FileNotFound: 1,
  AccessViolation: 2,
  DiskFull: 3,
  IllegalOperation: 4,
  UnknownTransferId: 5,
  FileExists: 6,
  NoSuchUser: 7,
  OptionNegotiation: 8,
} as const;

/** Option names are case-insensitive (RFC 2347); keys are stored lower-cased, values as sent. */
export type TftpOptions = Map<string, string>;

export interface RequestPacket {
  readonly op: 'RRQ' | 'WRQ';
  /** Raw filename as bytes decoded latin1 (one char per byte) so the server can reject odd bytes itself. */
  readonly filename: string;
  /** Lower-cased transfer mode ("octet", "netascii", "mail" or anything a client invented). */
  readonly mode: string;
  readonly options: TftpOptions;
}
export interface DataPacket {
  readonly op: 'DATA';
  readonly block: number;
  readonly data: Buffer;
}
export interface AckPacket {
  readonly op: 'ACK';
  readonly block: number;
}
export interface ErrorPacket {
  readonly op: 'ERROR';
  readonly code: number;
  readonly message: string;
}
export interface OackPacket {
  readonly op: 'OACK';
  readonly options: TftpOptions;
}
export type TftpPacket = RequestPacket | DataPacket | AckPacket | ErrorPacket | OackPacket;

export type TftpParseErrorKind =
  | 'too-short'
  | 'unknown-opcode'
  | 'missing-terminator'
  | 'empty-filename'
  | 'empty-mode'
  | 'option-without-value'
  | 'empty-option-name'
  | 'duplicate-option'
  | 'wrong-length';

/** Thrown (or returned by tryDecodePacket) for any datagram that is not a well-formed TFTP packet. */
export class TftpParseError extends Error {
  constructor(
    readonly kind: TftpParseErrorKind,
    detail: string,
  ) {
    super(`malformed TFTP packet (${kind}): ${detail}`);
    this.name = 'TftpParseError';
  }
}

export type DecodeResult = { ok: true; packet: TftpPacket } | { ok: false; error: TftpParseError };

/** Splits NUL-terminated strings starting at `offset`; every string must be terminated. */
function readStrings(buf: Buffer, offset: number): string[] {
  const out: string[] = [];
  let start = offset;
  while (start < buf.length) {
    const nul = buf.indexOf(0, start);
    if (nul < 0) throw new TftpParseError('missing-terminator', `string at offset ${start} has no NUL terminator`);
    out.push(buf.toString('latin1', start, nul));
    start = nul + 1;
  }
  return out;
}

function parseOptions(pairs: string[]): TftpOptions {
  if (pairs.length % 2 !== 0) {
    throw new TftpParseError('option-without-value', `option "${pairs[pairs.length - 1]}" has no value`);
  }
  const options: TftpOptions = new Map();
  for (let i = 0; i < pairs.length; i += 2) {
    const name = pairs[i].toLowerCase();
    if (name.length === 0) throw new TftpParseError('empty-option-name', `option ${i / 2} has an empty name`);
    if (options.has(name)) throw new TftpParseError('duplicate-option', `option "${name}" appears twice`);
    options.set(name, pairs[i + 1]);
  }
  return options;
}

function decodeRequest(op: 'RRQ' | 'WRQ', buf: Buffer): RequestPacket {
  const strings = readStrings(buf, 2);
  if (strings.length < 2) throw new TftpParseError('missing-terminator', `${op} needs a filename and a mode`);
  const [filename, mode, ...rest] = strings;
  if (filename.length === 0) throw new TftpParseError('empty-filename', `${op} has an empty filename`);
  if (mode.length === 0) throw new TftpParseError('empty-mode', `${op} has an empty mode`);
  return { op, filename, mode: mode.toLowerCase(), options: parseOptions(rest) };
}

/** Decodes one datagram; throws TftpParseError on anything malformed. */
export function decodePacket(buf: Buffer): TftpPacket {
  if (buf.length < 2) throw new TftpParseError('too-short', `${buf.length} bytes, need at least an opcode`);
  const opcode = buf.readUInt16BE(0);
  switch (opcode) {
    case Opcode.RRQ:
      return decodeRequest('RRQ', buf);
    case Opcode.WRQ:
      return decodeRequest('WRQ', buf);
    case Opcode.DATA:
      if (buf.length < 4) throw new TftpParseError('too-short', `DATA of ${buf.length} bytes has no block number`);
      return { op: 'DATA', block: buf.readUInt16BE(2), data: buf.subarray(4) };
    case Opcode.ACK:
      if (buf.length !== 4) throw new TftpParseError('wrong-length', `ACK must be 4 bytes, got ${buf.length}`);
      return { op: 'ACK', block: buf.readUInt16BE(2) };
    case Opcode.ERROR: {
      if (buf.length < 4) throw new TftpParseError('too-short', `ERROR of ${buf.length} bytes has no code`);
      // Many stacks omit the message terminator; tolerate that rather than drop the peer's error.
      const end = buf.indexOf(0, 4);
      const message = buf.toString('latin1', 4, end < 0 ? buf.length : end);
      return { op: 'ERROR', code: buf.readUInt16BE(2), message };
    }
    case Opcode.OACK:
      return { op: 'OACK', options: parseOptions(readStrings(buf, 2)) };
    default:
      throw new TftpParseError('unknown-opcode', `opcode ${opcode}`);
  }
}

export function tryDecodePacket(buf: Buffer): DecodeResult {
  try {
    return { ok: true, packet: decodePacket(buf) };
  } catch (err) {
    if (err instanceof TftpParseError) return { ok: false, error: err };
    throw err;
  }
}

function assertUint16(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) throw new RangeError(`${what} ${value} is not a 16-bit value`);
}

function assertNoNul(s: string, what: string): void {
  if (s.includes('\0')) throw new RangeError(`${what} must not contain NUL`);
}

function encodeStrings(opcode: number, strings: string[]): Buffer {
  for (const s of strings) assertNoNul(s, 'TFTP string');
  const len = 2 + strings.reduce((n, s) => n + Buffer.byteLength(s, 'latin1') + 1, 0);
  const buf = Buffer.alloc(len);
  buf.writeUInt16BE(opcode, 0);
  let off = 2;
  for (const s of strings) {
    off += buf.write(s, off, 'latin1');
    buf[off++] = 0;
  }
  return buf;
}

function optionStrings(options: TftpOptions | undefined): string[] {
  const out: string[] = [];
  for (const [k, v] of options ?? []) out.push(k, v);
  return out;
}

export function encodeRequest(op: 'RRQ' | 'WRQ', filename: string, mode: string, options?: TftpOptions): Buffer {
  if (filename.length === 0) throw new RangeError('filename must not be empty');
  return encodeStrings(op === 'RRQ' ? Opcode.RRQ : Opcode.WRQ, [filename, mode, ...optionStrings(options)]);
}

export function encodeOack(options: TftpOptions): Buffer {
  return encodeStrings(Opcode.OACK, optionStrings(options));
}

export function encodeAck(block: number): Buffer {
  assertUint16(block, 'block');
  const buf = Buffer.alloc(4);
  buf.writeUInt16BE(Opcode.ACK, 0);
  buf.writeUInt16BE(block, 2);
  return buf;
}

export function encodeData(block: number, data: Buffer): Buffer {
  const buf = Buffer.alloc(4 + data.length);
  writeDataHeader(buf, block);
  data.copy(buf, 4);
  return buf;
}

/** Writes the 4-byte DATA header into `target` at `offset`; lets senders build packets without copying payloads. */
export function writeDataHeader(target: Buffer, block: number, offset = 0): void {
  assertUint16(block, 'block');
  target.writeUInt16BE(Opcode.DATA, offset);
  target.writeUInt16BE(block, offset + 2);
}

export function encodeError(code: number, message: string): Buffer {
  assertUint16(code, 'error code');
  // ASCII only on the wire: messages may echo client-supplied names.
  const safe = message.replace(/[^\x20-\x7e]/g, '?');
  const buf = Buffer.alloc(4 + safe.length + 1);
  buf.writeUInt16BE(Opcode.ERROR, 0);
  buf.writeUInt16BE(code, 2);
  buf.write(safe, 4, 'latin1');
  return buf;
}
