/**
 * Seeded random operation streams for captures, in the spirit of xfstests' fsx: offsets and lengths
 * that cross and align with chunk edges, whole-chunk zeroes followed by partial writes, bursts of
 * small writes to one hot chunk, repeated fill patterns (so chunks deduplicate within and across
 * captures), reads and flushes in between. A plain Buffer is the model: every operation is applied to
 * it in the order it is issued, which is the order the capture applies them in.
 */
import { prng } from '../lib/prng.js';

export type Op =
  | { readonly kind: 'write'; readonly offset: number; readonly length: number; readonly fill: number | null; readonly seed: number }
  | { readonly kind: 'zero'; readonly offset: number; readonly length: number }
  | { readonly kind: 'trim'; readonly offset: number; readonly length: number }
  | { readonly kind: 'read'; readonly offset: number; readonly length: number }
  | { readonly kind: 'flush' };

export interface Stream {
  readonly size: number;
  readonly ops: Op[];
}

/** Fill bytes shared by every stream, so that whole chunks of them deduplicate. */
const PALETTE = [0x11, 0x22, 0x33, 0x44];

export function generate(seed: number, count: number, chunkSize: number, align = 1): Stream {
  const rnd = prng(seed);
  const int = (n: number): number => Math.floor(rnd() * n);
  const chunks = 2 + int(24);
  const tail = rnd() < 0.5 ? int(chunkSize / align) * align : 0;
  const size = chunks * chunkSize + tail;
  const hot = Array.from({ length: 1 + int(3) }, () => int(chunks));
  const down = (n: number): number => Math.floor(n / align) * align;
  const range = (maxLen: number): { offset: number; length: number } => {
    const r = rnd();
    let offset: number;
    if (r < 0.3) offset = int(chunks) * chunkSize; // on a chunk edge
    else if (r < 0.5) offset = Math.max(0, (1 + int(chunks)) * chunkSize - 1 - int(2048)); // just before one
    else if (r < 0.7) offset = hot[int(hot.length)] * chunkSize + int(chunkSize); // a hot chunk
    else offset = int(size);
    offset = Math.min(down(offset), size - align);
    const length = Math.max(align, Math.min(size - offset, down(1 + int(maxLen))));
    return { offset, length };
  };
  const ops: Op[] = [];
  while (ops.length < count) {
    const r = rnd();
    if (r < 0.45) {
      const small = rnd() < 0.5;
      const { offset, length } = range(small ? 4096 : 3 * chunkSize);
      ops.push({ kind: 'write', offset, length, fill: rnd() < 0.35 ? PALETTE[int(PALETTE.length)] : rnd() < 0.05 ? 0 : null, seed: int(2 ** 31) });
    } else if (r < 0.55) {
      // A whole-chunk zero, then partial writes into that chunk.
      const c = int(chunks);
      const len = Math.min(chunkSize, size - c * chunkSize);
      ops.push({ kind: 'zero', offset: c * chunkSize, length: len });
      for (let k = int(3); k >= 0; k--) {
        const offset = Math.min(down(c * chunkSize + int(len)), size - align);
        ops.push({ kind: 'write', offset, length: Math.max(align, Math.min(size - offset, down(1 + int(8192)))), fill: null, seed: int(2 ** 31) });
      }
    } else if (r < 0.65) {
      ops.push({ kind: 'zero', ...range(2 * chunkSize) });
    } else if (r < 0.7) {
      ops.push({ kind: 'trim', ...range(2 * chunkSize) });
    } else if (r < 0.8) {
      // A burst of small writes to one chunk, many in flight at once.
      const c = hot[int(hot.length)];
      for (let k = 2 + int(8); k > 0; k--) {
        const offset = Math.min(down(c * chunkSize + int(chunkSize)), size - align);
        ops.push({ kind: 'write', offset, length: Math.max(align, Math.min(size - offset, down(1 + int(2048)))), fill: rnd() < 0.3 ? PALETTE[int(PALETTE.length)] : null, seed: int(2 ** 31) });
      }
    } else if (r < 0.95) {
      ops.push({ kind: 'read', ...range(2 * chunkSize) });
    } else {
      ops.push({ kind: 'flush' });
    }
  }
  return { size, ops: ops.slice(0, count) };
}

/** The bytes a write op carries (deterministic from its seed). */
export function payload(op: Extract<Op, { kind: 'write' }>): Buffer {
  if (op.fill !== null) return Buffer.alloc(op.length, op.fill);
  const b = Buffer.allocUnsafe(op.length);
  const rnd = prng(op.seed);
  for (let i = 0; i < b.length; i += 4) {
    const v = Math.floor(rnd() * 2 ** 32);
    if (i + 4 <= b.length) b.writeUInt32LE(v, i);
    else for (let j = i; j < b.length; j++) b[j] = (v >>> ((j - i) * 8)) & 0xff;
  }
  return b;
}

export function applyToModel(model: Buffer, op: Op): void {
  if (op.kind === 'write') payload(op).copy(model, op.offset);
  else if (op.kind === 'zero' || op.kind === 'trim') model.fill(0, op.offset, op.offset + op.length);
}

export function describeOp(op: Op): string {
  switch (op.kind) {
    case 'write':
      return `write ${op.offset}+${op.length} ${op.fill === null ? `random(${op.seed})` : `fill 0x${op.fill.toString(16)}`}`;
    case 'flush':
      return 'flush';
    default:
      return `${op.kind} ${op.offset}+${op.length}`;
  }
}

/** First differing offset of two equal-length buffers, or -1. */
export function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : Math.min(a.length, b.length);
}
