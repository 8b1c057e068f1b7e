/**
 * A synthetic disk image that looks like a used PC disk to the imaging path: interleaved extents of
 * holes (zeros), compressible text-like data, and incompressible random data. Deterministic (seeded),
 * so two runs bench the same bytes, and sparse on disk (the zero extents are never written).
 *
 * Compressible blocks are 4 KiB windows cut at random places from a 16 MiB word-soup corpus and
 * stamped with their disk offset: they compress roughly like text files (zstd-1 ≈ 3×) but no two
 * 1 MiB chunks are equal, so dedup cannot flatter the numbers.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { prng } from '../../test/lib/prng.js';

export interface DiskSpec {
  readonly size: number;
  /** Fractions of the disk (they are targets: extents are drawn at random). */
  readonly zeroFraction: number;
  readonly textFraction: number;
  readonly seed: number;
}

export interface DiskLayout {
  readonly path: string;
  readonly size: number;
  readonly zeroBytes: number;
  readonly textBytes: number;
  readonly randomBytes: number;
  readonly extents: number;
  /** sha256 of the whole image as a raw disk (holes read as zeros). */
  readonly sha256: string;
  readonly ms: number;
}

export const DEFAULT_DISK: DiskSpec = { size: 1024 * 1024 * 1024, zeroFraction: 0.4, textFraction: 0.3, seed: 20240601 };

const BLOCK = 4096;
export const CORPUS_SIZE = 16 * 1024 * 1024;


export function buildCorpus(rand: () => number): Buffer {
  const letters = 'etaoinshrdlcumwfgypbvkjxqz';
  const words: Buffer[] = [];
  for (let i = 0; i < 2000; i++) {
    const len = 2 + Math.floor(rand() * rand() * 12);
    let w = '';
    // Skewed letter choice makes the words look like a natural language to an entropy coder.
    for (let j = 0; j < len; j++) w += letters[Math.floor(rand() * rand() * letters.length)];
    words.push(Buffer.from(w));
  }
  const out = Buffer.alloc(CORPUS_SIZE);
  let pos = 0;
  let line = 0;
  while (pos < CORPUS_SIZE) {
    // Zipf-ish: a few words are very common, most are rare.
    const w = words[Math.floor(words.length * rand() ** 3)];
    const n = Math.min(w.length, CORPUS_SIZE - pos);
    w.copy(out, pos, 0, n);
    pos += n;
    if (pos >= CORPUS_SIZE) break;
    line += n + 1;
    if (line > 60 + rand() * 40) {
      out[pos++] = 0x0a;
      line = 0;
    } else {
      out[pos++] = 0x20;
    }
  }
  return out;
}

type Kind = 'zero' | 'text' | 'random';

/** Random by the target weights half the time, else the kind furthest behind its target: the mix lands on target. */
function pickKind(rand: () => number, spec: DiskSpec, pos: number, have: Record<Kind, number>): Kind {
  const target: Record<Kind, number> = { zero: spec.zeroFraction, text: spec.textFraction, random: 1 - spec.zeroFraction - spec.textFraction };
  if (rand() < 0.5 || pos === 0) {
    const r = rand();
    return r < target.zero ? 'zero' : r < target.zero + target.text ? 'text' : 'random';
  }
  let best: Kind = 'zero';
  for (const k of ['text', 'random'] as const) if (target[k] * pos - have[k] > target[best] * pos - have[best]) best = k;
  return best;
}

/** Writes the image at `path` (sparse) and returns what it holds. */
export async function makeDisk(path: string, spec: DiskSpec = DEFAULT_DISK): Promise<DiskLayout> {
  const t0 = performance.now();
  if (spec.size % BLOCK !== 0) throw new RangeError(`disk size ${spec.size} must be a multiple of ${BLOCK}`);
  const rand = prng(spec.seed);
  const corpus = buildCorpus(rand);
  const key = createHash('sha256').update(`netclone-bench-${spec.seed}`).digest();
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  const hash = createHash('sha256');
  const fh = await open(path, 'w');
  let zeroBytes = 0;
  let textBytes = 0;
  let randomBytes = 0;
  let extents = 0;
  const zeroBuf = Buffer.alloc(1024 * 1024);
  const piece = 1024 * 1024;
  try {
    await fh.truncate(spec.size);
    let pos = 0;
    while (pos < spec.size) {
      // 64 KiB .. 8 MiB extents, 4 KiB aligned: files, free space and metadata of a real filesystem.
      const blocks = 16 + Math.floor(rand() * rand() * 2032);
      const len = Math.min(blocks * BLOCK, spec.size - pos);
      const kind = pickKind(rand, spec, pos, { zero: zeroBytes, text: textBytes, random: randomBytes });
      extents++;
      for (let off = 0; off < len; off += piece) {
        const n = Math.min(piece, len - off);
        if (kind === 'zero') {
          hash.update(zeroBuf.subarray(0, n));
          continue;
        }
        let buf: Buffer;
        if (kind === 'random') {
          buf = cipher.update(zeroBuf.subarray(0, n));
        } else {
          buf = Buffer.allocUnsafe(n);
          for (let b = 0; b < n; b += BLOCK) {
            const at = Math.floor(rand() * (CORPUS_SIZE - BLOCK));
            corpus.copy(buf, b, at, at + BLOCK);
            buf.write(`\n# block ${pos + off + b} of the bench disk\n`, b, 'latin1');
          }
        }
        hash.update(buf);
        let w = 0;
        while (w < n) w += (await fh.write(buf, w, n - w, pos + off + w)).bytesWritten;
      }
      if (kind === 'zero') zeroBytes += len;
      else if (kind === 'text') textBytes += len;
      else randomBytes += len;
      pos += len;
    }
  } finally {
    await fh.close();
  }
  return { path, size: spec.size, zeroBytes, textBytes, randomBytes, extents, sha256: hash.digest('hex'), ms: performance.now() - t0 };
}
