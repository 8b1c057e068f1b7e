/**
 * Decides whether a transmission request may reach the export, and which NBD error it gets if not.
 * Pure: the connection supplies what was negotiated, this answers. Exports rely on it to see
 * only in-range, aligned requests (see export.ts).
 */
import type { Extent, ReadPiece } from './export.js';
import { CMD, CMD_FLAG, ERRNO, type RequestHeader, type WireExtent } from './protocol.js';

export interface TransmissionContext {
  readonly size: number;
  readonly readOnly: boolean;
  readonly structured: boolean;
  /** Context id of base:allocation when it was selected for this export, else undefined. */
  readonly allocationContextId: number | undefined;
  readonly minimumBlock: number;
  /** Effective maximum payload the server enforces (advertised in NBD_INFO_BLOCK_SIZE). */
  readonly maximumPayload: number;
  readonly trim: boolean;
  readonly writeZeroes: boolean;
  readonly fastZero: boolean;
  readonly cache: boolean;
}

export type RequestCheck =
  | { readonly ok: true; readonly offset: number }
  | { readonly ok: false; readonly errno: number; readonly message: string };

const WRITE_TYPES: ReadonlySet<number> = new Set([CMD.WRITE, CMD.WRITE_ZEROES, CMD.TRIM]);

export function isWriteCommand(type: number): boolean {
  return WRITE_TYPES.has(type);
}

export function commandName(type: number): string {
  for (const [k, v] of Object.entries(CMD)) if (v === type) return `NBD_CMD_${k}`;
  return `command ${type}`;
}

/**
 * FUA is accepted on every command: the spec says clients are known to set it on non-writing
 * commands and the server must accept it there.
 */
function allowedFlags(type: number, ctx: TransmissionContext): number {
  switch (type) {
    case CMD.READ:
      return CMD_FLAG.FUA | (ctx.structured ? CMD_FLAG.DF : 0);
    case CMD.WRITE_ZEROES:
      return CMD_FLAG.FUA | CMD_FLAG.NO_HOLE | (ctx.fastZero ? CMD_FLAG.FAST_ZERO : 0);
    case CMD.BLOCK_STATUS:
      return CMD_FLAG.FUA | CMD_FLAG.REQ_ONE;
    default:
      return CMD_FLAG.FUA;
  }
}

function fail(errno: number, message: string): RequestCheck {
  return { ok: false, errno, message };
}

export function checkRequest(h: RequestHeader, ctx: TransmissionContext): RequestCheck {
  const name = commandName(h.type);
  if (h.type > CMD.BLOCK_STATUS) return fail(ERRNO.EINVAL, `unknown command type ${h.type}`);
  const bad = h.flags & ~allowedFlags(h.type, ctx);
  if (bad !== 0) return fail(ERRNO.EINVAL, `${name}: flags 0x${bad.toString(16)} are not valid for this command`);

  if (h.type === CMD.FLUSH || h.type === CMD.DISC) {
    if (h.offset !== 0n || h.length !== 0) return fail(ERRNO.EINVAL, `${name}: offset and length must be zero`);
    return { ok: true, offset: 0 };
  }

  if (isWriteCommand(h.type) && ctx.readOnly) return fail(ERRNO.EPERM, `${name}: export is read-only`);
  if (h.type === CMD.TRIM && !ctx.trim) return fail(ERRNO.EINVAL, `${name}: trim is not supported by this export`);
  if (h.type === CMD.WRITE_ZEROES && !ctx.writeZeroes) return fail(ERRNO.EINVAL, `${name}: not supported by this export`);
  if (h.type === CMD.CACHE && !ctx.cache) return fail(ERRNO.EINVAL, `${name}: not supported by this export`);
  if (h.type === CMD.BLOCK_STATUS) {
    if (ctx.allocationContextId === undefined) {
      return fail(ERRNO.EINVAL, `${name}: no metadata context was selected with NBD_OPT_SET_META_CONTEXT`);
    }
    if (h.length === 0) return fail(ERRNO.EINVAL, `${name}: length must be nonzero`);
  }

  // bigint arithmetic: offset + length can exceed 2^64 on hostile input.
  const end = h.offset + BigInt(h.length);
  if (end > BigInt(ctx.size)) {
    const errno = h.type === CMD.WRITE || h.type === CMD.WRITE_ZEROES ? ERRNO.ENOSPC : ERRNO.EINVAL;
    return fail(errno, `${name}: range ${h.offset}+${h.length} is beyond the export size ${ctx.size}`);
  }
  const offset = Number(h.offset);

  const min = ctx.minimumBlock;
  if (min > 1 && h.type !== CMD.BLOCK_STATUS) {
    // The final block of an export whose size is not a multiple of the minimum may end unaligned.
    const endOk = (offset + h.length) % min === 0 || offset + h.length === ctx.size;
    if (offset % min !== 0 || !endOk) {
      return fail(ERRNO.EINVAL, `${name}: offset ${offset} / length ${h.length} not aligned to minimum block size ${min}`);
    }
  }

  if (h.type === CMD.READ && h.length > ctx.maximumPayload) {
    // Structured replies may reject oversize reads with EOVERFLOW (client retries smaller); simple replies get EINVAL.
    const errno = ctx.structured ? ERRNO.EOVERFLOW : ERRNO.EINVAL;
    return fail(errno, `${name}: length ${h.length} exceeds maximum payload ${ctx.maximumPayload}`);
  }
  if (h.type === CMD.WRITE && h.length > ctx.maximumPayload) {
    return fail(ERRNO.EINVAL, `${name}: length ${h.length} exceeds maximum payload ${ctx.maximumPayload}`);
  }
  return { ok: true, offset };
}

/**
 * Checks that an export's READ answer covers exactly [offset, offset+length) in order, dropping
 * empty pieces; returns a message when it does not, so a buggy export yields EIO, not garbage.
 */
export function checkReadPieces(pieces: readonly ReadPiece[], offset: number, length: number): ReadPiece[] | string {
  const out: ReadPiece[] = [];
  let pos = offset;
  for (const p of pieces) {
    const len = p.kind === 'data' ? p.data.length : p.length;
    if (!Number.isInteger(len) || len < 0) return `piece at ${p.offset} has invalid length ${len}`;
    if (len === 0) continue;
    if (p.offset !== pos) return `piece at ${p.offset} does not continue at ${pos}`;
    pos += len;
    if (pos > offset + length) return `pieces run past the requested end ${offset + length}`;
    out.push(p);
  }
  if (pos !== offset + length) return `pieces end at ${pos}, request ends at ${offset + length}`;
  return out;
}

/** Largest descriptor length that fits in 32 bits and stays a multiple of any legal minimum block size. */
const MAX_DESCRIPTOR = 2 ** 32 - 65536;
/** Spec: servers SHOULD NOT send more than 2^20 descriptors in one chunk. */
export const MAX_DESCRIPTORS = 2 ** 20;

/**
 * Turns an export's extents into the descriptors the spec allows: none past the export end,
 * none after the requested length is covered, at most one (no longer than the request) for REQ_ONE.
 */
export function clampExtents(
  extents: readonly Extent[],
  offset: number,
  length: number,
  size: number,
  reqOne: boolean,
): WireExtent[] | string {
  const out: WireExtent[] = [];
  let pos = offset;
  for (const e of extents) {
    if (!Number.isInteger(e.length) || e.length <= 0) return `extent with invalid length ${e.length}`;
    if (!Number.isInteger(e.flags) || e.flags < 0 || e.flags > 0xffffffff) return `extent with invalid flags ${e.flags}`;
    if (pos >= size) break;
    let len = Math.min(e.length, size - pos, MAX_DESCRIPTOR);
    if (reqOne) len = Math.min(len, length);
    out.push({ length: len, flags: e.flags });
    pos += len;
    if (reqOne || len < e.length || pos - offset >= length || out.length >= MAX_DESCRIPTORS) break;
  }
  if (out.length === 0) return 'export returned no extents';
  return out;
}
