/**
 * Typed views of single option values (RFC 2132, 3004, 4578) and the encoders for our replies.
 * Decoders return undefined for a value of the wrong shape: a malformed option is treated as absent,
 * which is what clients and other servers do, rather than rejecting the whole packet.
 */
import { bytesToIp, ipToBytes } from '../../lib/ipv4.js';

export function decodeIp(v: Uint8Array | undefined): string | undefined {
  return v && v.length === 4 ? bytesToIp(v) : undefined;
}

export function decodeIpList(v: Uint8Array | undefined): string[] | undefined {
  if (!v || v.length === 0 || v.length % 4 !== 0) return undefined;
  const out: string[] = [];
  for (let i = 0; i < v.length; i += 4) out.push(bytesToIp(v, i));
  return out;
}

export function decodeU8(v: Uint8Array | undefined): number | undefined {
  return v && v.length === 1 ? v[0] : undefined;
}

export function decodeU16(v: Uint8Array | undefined): number | undefined {
  return v && v.length === 2 ? (v[0] << 8) | v[1] : undefined;
}

export function decodeU32(v: Uint8Array | undefined): number | undefined {
  return v && v.length === 4 ? ((v[0] << 24) | (v[1] << 16) | (v[2] << 8) | v[3]) >>> 0 : undefined;
}

/** Text options; a trailing NUL (sent by some firmware) is not part of the value. */
export function decodeString(v: Uint8Array | undefined): string | undefined {
  if (!v) return undefined;
  let end = v.length;
  while (end > 0 && v[end - 1] === 0) end -= 1;
  return Buffer.from(v.subarray(0, end)).toString('latin1');
}

export function decodeCodeList(v: Uint8Array | undefined): number[] | undefined {
  return v ? Array.from(v) : undefined;
}

/**
 * Option 77. RFC 3004 packs length-prefixed class strings, but iPXE (and many DHCP clients before
 * RFC 3004) send the bare text "iPXE". Take the RFC form only when the length bytes tile the value
 * exactly; otherwise the whole value is one class.
 */
export function decodeUserClass(v: Uint8Array | undefined): string[] | undefined {
  if (!v || v.length === 0) return undefined;
  const classes: string[] = [];
  let i = 0;
  while (i < v.length) {
    const len = v[i];
    if (len === 0 || i + 1 + len > v.length) {
      return [decodeString(v) ?? ''];
    }
    classes.push(Buffer.from(v.subarray(i + 1, i + 1 + len)).toString('latin1'));
    i += 1 + len;
  }
  return classes;
}

export function encodeUserClassRfc3004(classes: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  for (const c of classes) {
    const b = Buffer.from(c, 'latin1');
    if (b.length === 0 || b.length > 255) throw new RangeError(`user class "${c}" must be 1..255 bytes`);
    parts.push(Buffer.from([b.length]), b);
  }
  return Buffer.concat(parts);
}

/** Option 93: one or more 16-bit architecture types. */
export function decodeClientArch(v: Uint8Array | undefined): number[] | undefined {
  if (!v || v.length === 0 || v.length % 2 !== 0) return undefined;
  const out: number[] = [];
  for (let i = 0; i < v.length; i += 2) out.push((v[i] << 8) | v[i + 1]);
  return out;
}

export interface ClientNdi {
  readonly type: number;
  readonly major: number;
  readonly minor: number;
}

/** Option 94 (RFC 4578): interface type 1 = UNDI, then major and minor version. */
export function decodeClientNdi(v: Uint8Array | undefined): ClientNdi | undefined {
  return v && v.length === 3 ? { type: v[0], major: v[1], minor: v[2] } : undefined;
}

/** Option 97: type 0 followed by a 16-byte GUID. Returns the GUID in RFC 4122 text form. */
export function decodeClientUuid(v: Uint8Array | undefined): string | undefined {
  if (!v || v.length !== 17 || v[0] !== 0) return undefined;
  const h = Buffer.from(v.subarray(1)).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Encapsulated sub-options (43, 175): undefined when a sub-option runs past the value. */
export function decodeEncapsulated(v: Uint8Array | undefined): Map<number, Buffer> | undefined {
  if (!v) return undefined;
  const out = new Map<number, Buffer>();
  let i = 0;
  while (i < v.length) {
    const code = v[i];
    if (code === 0) {
      i += 1;
      continue;
    }
    if (code === 255) break;
    if (i + 1 >= v.length) return undefined;
    const len = v[i + 1];
    if (i + 2 + len > v.length) return undefined;
    out.set(code, Buffer.from(v.subarray(i + 2, i + 2 + len)));
    i += 2 + len;
  }
  return out;
}

export function encodeEncapsulated(subs: ReadonlyArray<readonly [number, Uint8Array]>, withEnd = true): Buffer {
  const parts: Buffer[] = [];
  for (const [code, data] of subs) {
    if (data.length > 255) throw new RangeError(`sub-option ${code} is ${data.length} bytes; at most 255 fit`);
    parts.push(Buffer.from([code, data.length]), Buffer.from(data));
  }
  if (withEnd) parts.push(Buffer.from([255]));
  return Buffer.concat(parts);
}

export function encodeIp(ip: string): Buffer {
  return ipToBytes(ip);
}

export function encodeIpList(ips: readonly string[]): Buffer {
  return Buffer.concat(ips.map(ipToBytes));
}

export function encodeU8(n: number): Buffer {
  return Buffer.from([n & 0xff]);
}

export function encodeU16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n, 0);
  return b;
}

export function encodeU32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

export function encodeString(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}
