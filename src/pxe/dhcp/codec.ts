/**
 * DHCPv4 / BOOTP packet codec (RFC 2131, RFC 2132, RFC 3396). Pure: bytes in, typed values out.
 *
 * The parser never throws on wire input: every malformed packet becomes a typed
 * {@link DhcpParseError} so a server can log it and carry on. The encoder only sees values we
 * built ourselves, so it throws RangeError on programmer mistakes (bad address, oversized field).
 */
import {
  BOOTP_HEADER_LENGTH,
  BOOTP_MIN_LENGTH,
  FILE_LENGTH,
  FILE_OFFSET,
  MAGIC_COOKIE,
  OPTIONS_OFFSET,
  Opt,
  SNAME_LENGTH,
  SNAME_OFFSET,
} from './constants.js';
import { bytesToIp, ipToBytes } from '../../lib/ipv4.js';

export interface DhcpPacket {
  readonly op: number;
  readonly htype: number;
  readonly hlen: number;
  readonly hops: number;
  readonly xid: number;
  readonly secs: number;
  readonly flags: number;
  readonly ciaddr: string;
  readonly yiaddr: string;
  readonly siaddr: string;
  readonly giaddr: string;
  /** The first `hlen` bytes of the 16-byte chaddr field. */
  readonly chaddr: Buffer;
  /** Empty when option 52 moved options into the field. */
  readonly sname: string;
  readonly file: string;
  /** Option code → value; repeated instances are concatenated as RFC 3396 requires. */
  readonly options: ReadonlyMap<number, Buffer>;
}

export type DhcpParseErrorCode =
  | 'too-short'
  | 'bad-op'
  | 'bad-hlen'
  | 'no-magic-cookie'
  | 'option-overrun'
  | 'bad-overload';

export interface DhcpParseError {
  readonly kind: 'dhcp-parse-error';
  readonly code: DhcpParseErrorCode;
  /** What was wrong, phrased for a log line. */
  readonly message: string;
  readonly offset?: number;
}

export type DhcpParseResult =
  | { readonly ok: true; readonly packet: DhcpPacket }
  | { readonly ok: false; readonly error: DhcpParseError };

function fail(code: DhcpParseErrorCode, message: string, offset?: number): DhcpParseResult {
  return { ok: false, error: { kind: 'dhcp-parse-error', code, message, offset } };
}

/** Colon-separated lowercase hex, the form iPXE's ${net0/mac} and our host table use. */
export function formatMac(hw: Uint8Array): string {
  return Array.from(hw, (b) => b.toString(16).padStart(2, '0')).join(':');
}

function readCString(buf: Buffer, start: number, length: number): string {
  const field = buf.subarray(start, start + length);
  const nul = field.indexOf(0);
  return field.subarray(0, nul === -1 ? field.length : nul).toString('latin1');
}

/**
 * Walk one option area. Pad bytes are skipped, END stops the walk; running out of bytes without
 * END is tolerated (several embedded stacks omit it), an option claiming more bytes than remain is not.
 */
function parseOptionArea(
  buf: Buffer,
  start: number,
  end: number,
  into: Map<number, Buffer[]>,
  area: string,
): DhcpParseError | undefined {
  let i = start;
  while (i < end) {
    const code = buf[i];
    if (code === Opt.PAD) {
      i += 1;
      continue;
    }
    if (code === Opt.END) return undefined;
    if (i + 1 >= end) {
      return { kind: 'dhcp-parse-error', code: 'option-overrun', message: `option ${code} in ${area} has no length byte`, offset: i };
    }
    const len = buf[i + 1];
    if (i + 2 + len > end) {
      return {
        kind: 'dhcp-parse-error',
        code: 'option-overrun',
        message: `option ${code} in ${area} claims ${len} bytes but only ${end - i - 2} remain`,
        offset: i,
      };
    }
    const parts = into.get(code);
    const value = buf.subarray(i + 2, i + 2 + len);
    if (parts) parts.push(value);
    else into.set(code, [value]);
    i += 2 + len;
  }
  return undefined;
}

/** Parse one UDP payload as a BOOTP/DHCP message. Never throws. */
export function parseDhcpPacket(input: Uint8Array): DhcpParseResult {
  const buf = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (buf.length < BOOTP_HEADER_LENGTH + 4) {
    return fail('too-short', `packet is ${buf.length} bytes; a DHCP message needs at least ${BOOTP_HEADER_LENGTH + 4}`);
  }
  const op = buf[0];
  if (op !== 1 && op !== 2) return fail('bad-op', `op is ${op}; only 1 (BOOTREQUEST) and 2 (BOOTREPLY) exist`, 0);
  const hlen = buf[2];
  if (hlen > 16) return fail('bad-hlen', `hlen is ${hlen}; chaddr holds at most 16 bytes`, 2);
  if (buf.readUInt32BE(BOOTP_HEADER_LENGTH) !== MAGIC_COOKIE) {
    return fail('no-magic-cookie', 'no DHCP magic cookie 99.130.83.99 after the BOOTP header (plain BOOTP is not served)', BOOTP_HEADER_LENGTH);
  }

  const collected = new Map<number, Buffer[]>();
  const mainErr = parseOptionArea(buf, OPTIONS_OFFSET, buf.length, collected, 'options');
  if (mainErr) return { ok: false, error: mainErr };

  let fileHoldsOptions = false;
  let snameHoldsOptions = false;
  const overload = collected.get(Opt.OVERLOAD);
  if (overload) {
    const value = overload[0];
    if (value.length !== 1 || value[0] < 1 || value[0] > 3) {
      return fail('bad-overload', `option 52 (overload) must be one byte 1..3, got ${value.length} bytes`);
    }
    fileHoldsOptions = (value[0] & 1) !== 0;
    snameHoldsOptions = (value[0] & 2) !== 0;
    // RFC 2131 4.1 order: options field, then file, then sname.
    if (fileHoldsOptions) {
      const err = parseOptionArea(buf, FILE_OFFSET, FILE_OFFSET + FILE_LENGTH, collected, 'file field');
      if (err) return { ok: false, error: err };
    }
    if (snameHoldsOptions) {
      const err = parseOptionArea(buf, SNAME_OFFSET, SNAME_OFFSET + SNAME_LENGTH, collected, 'sname field');
      if (err) return { ok: false, error: err };
    }
  }

  const options = new Map<number, Buffer>();
  for (const [code, parts] of collected) {
    options.set(code, parts.length === 1 ? Buffer.from(parts[0]) : Buffer.concat(parts));
  }

  return {
    ok: true,
    packet: {
      op,
      htype: buf[1],
      hlen,
      hops: buf[3],
      xid: buf.readUInt32BE(4),
      secs: buf.readUInt16BE(8),
      flags: buf.readUInt16BE(10),
      ciaddr: bytesToIp(buf, 12),
      yiaddr: bytesToIp(buf, 16),
      siaddr: bytesToIp(buf, 20),
      giaddr: bytesToIp(buf, 24),
      chaddr: Buffer.from(buf.subarray(28, 28 + hlen)),
      sname: snameHoldsOptions ? '' : readCString(buf, SNAME_OFFSET, SNAME_LENGTH),
      file: fileHoldsOptions ? '' : readCString(buf, FILE_OFFSET, FILE_LENGTH),
      options,
    },
  };
}

/** One option to send; order is kept, so put 53 first as clients expect. */
export interface DhcpOption {
  readonly code: number;
  readonly data: Uint8Array;
}

export interface DhcpPacketInit {
  readonly op: number;
  readonly htype?: number;
  /** Defaults to chaddr's length. */
  readonly hlen?: number;
  readonly hops?: number;
  readonly xid: number;
  readonly secs?: number;
  readonly flags?: number;
  readonly ciaddr?: string;
  readonly yiaddr?: string;
  readonly siaddr?: string;
  readonly giaddr?: string;
  readonly chaddr: Uint8Array;
  readonly sname?: string;
  readonly file?: string;
  readonly options: readonly DhcpOption[];
  /** Pad the message to this length; defaults to the BOOTP minimum of 300. 0 disables padding. */
  readonly minLength?: number;
}

function writeCString(out: Buffer, value: string, offset: number, length: number, field: string): void {
  const bytes = Buffer.from(value, 'latin1');
  if (bytes.length >= length) {
    throw new RangeError(`${field} "${value}" is ${bytes.length} bytes; the BOOTP field holds ${length - 1} plus NUL`);
  }
  bytes.copy(out, offset);
}

/** Build a BOOTP/DHCP message. Options longer than 255 bytes are split into several instances (RFC 3396). */
export function encodeDhcpPacket(init: DhcpPacketInit): Buffer {
  if (init.chaddr.length > 16) throw new RangeError(`chaddr is ${init.chaddr.length} bytes; at most 16 fit`);
  let optionBytes = 1; // END
  for (const o of init.options) {
    if (!Number.isInteger(o.code) || o.code <= 0 || o.code >= 255) {
      throw new RangeError(`option code ${o.code} cannot be encoded; pad (0) and end (255) are written by the encoder`);
    }
    optionBytes += Math.max(1, Math.ceil(o.data.length / 255)) * 2 + o.data.length;
  }
  const length = Math.max(OPTIONS_OFFSET + optionBytes, init.minLength ?? BOOTP_MIN_LENGTH);
  const out = Buffer.alloc(length); // zero fill doubles as pad bytes after END
  out[0] = init.op;
  out[1] = init.htype ?? 1;
  out[2] = init.hlen ?? init.chaddr.length;
  out[3] = init.hops ?? 0;
  out.writeUInt32BE(init.xid >>> 0, 4);
  out.writeUInt16BE(init.secs ?? 0, 8);
  out.writeUInt16BE(init.flags ?? 0, 10);
  ipToBytes(init.ciaddr ?? '0.0.0.0').copy(out, 12);
  ipToBytes(init.yiaddr ?? '0.0.0.0').copy(out, 16);
  ipToBytes(init.siaddr ?? '0.0.0.0').copy(out, 20);
  ipToBytes(init.giaddr ?? '0.0.0.0').copy(out, 24);
  Buffer.from(init.chaddr).copy(out, 28);
  writeCString(out, init.sname ?? '', SNAME_OFFSET, SNAME_LENGTH, 'sname');
  writeCString(out, init.file ?? '', FILE_OFFSET, FILE_LENGTH, 'file');
  out.writeUInt32BE(MAGIC_COOKIE, BOOTP_HEADER_LENGTH);
  let pos = OPTIONS_OFFSET;
  for (const o of init.options) {
    let rest = Buffer.from(o.data);
    do {
      const chunk = rest.subarray(0, 255);
      out[pos] = o.code;
      out[pos + 1] = chunk.length;
      chunk.copy(out, pos + 2);
      pos += 2 + chunk.length;
      rest = rest.subarray(chunk.length);
    } while (rest.length > 0);
  }
  out[pos] = Opt.END;
  return out;
}
