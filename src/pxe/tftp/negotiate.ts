/**
 * Option negotiation policy for read requests: RFC 2347 (framework), 2348 (blksize),
 * 2349 (timeout, tsize), 7440 (windowsize). Pure: decides what to grant, performs no I/O.
 */
import type { TftpOptions } from './codec.js';

export const DEFAULT_BLKSIZE = 512;
export const MIN_BLKSIZE = 8;
export const MAX_BLKSIZE = 65464;
export const MAX_WINDOWSIZE = 65535;

export interface NegotiationLimits {
  /** Largest block size we grant; a client asking more gets this (RFC 2348 lets the server lower it). */
  readonly maxBlksize: number;
  /** Largest window we grant; bigger windows only add burst loss on real links. */
  readonly maxWindowsize: number;
  /** Transfer timeout used when the client does not ask for one. */
  readonly defaultTimeoutMs: number;
}

export interface Negotiated {
  readonly blksize: number;
  readonly windowsize: number;
  readonly timeoutMs: number;
  /** Options to echo in an OACK; empty means "no OACK, start with DATA 1" (plain RFC 1350). */
  readonly oack: TftpOptions;
}

/** Parses a decimal option value strictly: digits only, no sign, no exponent, no whitespace. */
function parseDecimal(value: string): number | undefined {
  if (!/^[0-9]{1,10}$/.test(value)) return undefined;
  return Number(value);
}

/**
 * Grants the options we understand and whose values are sane; silently drops the rest, which
 * RFC 2347 allows (the client then falls back to defaults for them).
 */
export function negotiateRead(requested: TftpOptions, fileSize: number, limits: NegotiationLimits): Negotiated {
  const oack: TftpOptions = new Map();
  let blksize = DEFAULT_BLKSIZE;
  let windowsize = 1;
  let timeoutMs = limits.defaultTimeoutMs;

  const b = requested.has('blksize') ? parseDecimal(requested.get('blksize') ?? '') : undefined;
  if (b !== undefined && b >= MIN_BLKSIZE) {
    blksize = Math.min(b, limits.maxBlksize, MAX_BLKSIZE);
    oack.set('blksize', String(blksize));
  }

  const t = requested.has('timeout') ? parseDecimal(requested.get('timeout') ?? '') : undefined;
  if (t !== undefined && t >= 1 && t <= 255) {
    timeoutMs = t * 1000;
    oack.set('timeout', String(t));
  }

  // RFC 2349: in a read request the client sends 0 and the server answers with the real size.
  if (requested.has('tsize') && parseDecimal(requested.get('tsize') ?? '') !== undefined) {
    oack.set('tsize', String(fileSize));
  }

  const w = requested.has('windowsize') ? parseDecimal(requested.get('windowsize') ?? '') : undefined;
  if (w !== undefined && w >= 1 && w <= MAX_WINDOWSIZE) {
    windowsize = Math.min(w, limits.maxWindowsize);
    oack.set('windowsize', String(windowsize));
  }

  return { blksize, windowsize, timeoutMs, oack };
}
