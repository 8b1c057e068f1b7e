/**
 * Disks for the agent bench: seeded, sparse files mixing zero runs, incompressible random data and
 * "2:1" data (each 4 KiB block 80 % text-like words cut from a word-soup corpus, 20 % random bytes:
 * zstd -3 makes it about half its size, like a mix of documents and program files). The layout keeps
 * the data extents so changes can be scattered over the data afterwards.
 */
import { createCipheriv, createHash, type Cipher } from 'node:crypto';
import { open } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { prng } from '../../test/lib/prng.js';
import { buildCorpus, CORPUS_SIZE } from './disk.js';

export interface AgentDiskSpec {
  readonly size: number;
  /** Fractions of the disk (targets: extents are drawn at random); the rest is 2:1 data. */
  readonly zeroFraction: number;
  readonly randomFraction: number;
  readonly seed: number;
}

export interface AgentDiskLayout {
  readonly size: number;
  readonly zeroBytes: number;
  readonly halfBytes: number;
  readonly randomBytes: number;
  /** [offset, length] of every non-zero extent. */
  readonly dataExtents: ReadonlyArray<readonly [number, number]>;
}

const BLOCK = 4096;
/** Text bytes in each 4 KiB block of 2:1 data; the rest is random (zstd -3 of the mix ≈ 0.5). */
const TEXT_PER_BLOCK = 3270;
const PIECE = 1024 * 1024;

/** Makes the content of the three kinds, deterministically from one seed. */
class Filler {
  private readonly rand: () => number;
  private readonly corpus: Buffer;
  private readonly cipher: Cipher;
  private readonly zeros = Buffer.alloc(PIECE);

  constructor(seed: number) {
    this.rand = prng(seed);
    this.corpus = buildCorpus(this.rand);
    const key = createHash('sha256').update(`netclone-agent-bench-${seed}`).digest();
    this.cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  }

  random(n: number): Buffer {
    return this.cipher.update(this.zeros.subarray(0, n));
  }

  /** 2:1 data for disk offset `at` (stamped with it, so no two blocks are equal). */
  half(n: number, at: number): Buffer {
    const buf = this.random(n);
    for (let b = 0; b + BLOCK <= n; b += BLOCK) {
      const from = Math.floor(this.rand() * (CORPUS_SIZE - TEXT_PER_BLOCK));
      this.corpus.copy(buf, b, from, from + TEXT_PER_BLOCK);
      buf.write(`\n# block ${at + b} of the agent bench disk\n`, b, 'latin1');
    }
    return buf;
  }

  next(): number {
    return this.rand();
  }
}

async function writeFully(fh: Awaited<ReturnType<typeof open>>, buf: Buffer, at: number): Promise<void> {
  let w = 0;
  while (w < buf.length) w += (await fh.write(buf, w, buf.length - w, at + w)).bytesWritten;
}

type Kind = 'zero' | 'half' | 'random';

/** Writes the image at `path` (sparse: zero extents are never written) and returns its layout. */
export async function makeAgentDisk(path: string, spec: AgentDiskSpec): Promise<AgentDiskLayout> {
  if (spec.size % BLOCK !== 0) throw new RangeError(`disk size ${spec.size} must be a multiple of ${BLOCK}`);
  const fill = new Filler(spec.seed);
  const target: Record<Kind, number> = { zero: spec.zeroFraction, random: spec.randomFraction, half: 1 - spec.zeroFraction - spec.randomFraction };
  const have: Record<Kind, number> = { zero: 0, half: 0, random: 0 };
  const dataExtents: Array<[number, number]> = [];
  const fh = await open(path, 'w');
  try {
    await fh.truncate(spec.size);
    let pos = 0;
    while (pos < spec.size) {
      // 64 KiB .. 8 MiB extents, 4 KiB aligned: files, free space and metadata of a real filesystem.
      const len = Math.min((16 + Math.floor(fill.next() * fill.next() * 2032)) * BLOCK, spec.size - pos);
      // The kind furthest behind its target (random half the time), so the mix lands on target.
      let kind: Kind;
      const r = fill.next();
      if (pos === 0 || fill.next() < 0.5) kind = r < target.zero ? 'zero' : r < target.zero + target.random ? 'random' : 'half';
      else kind = (['zero', 'half', 'random'] as const).reduce((best, k) => (target[k] * pos - have[k] > target[best] * pos - have[best] ? k : best));
      if (kind !== 'zero') {
        for (let off = 0; off < len; off += PIECE) {
          const n = Math.min(PIECE, len - off);
          await writeFully(fh, kind === 'random' ? fill.random(n) : fill.half(n, pos + off), pos + off);
        }
        const last = dataExtents[dataExtents.length - 1];
        if (last && last[0] + last[1] === pos) last[1] += len;
        else dataExtents.push([pos, len]);
      }
      have[kind] += len;
      pos += len;
    }
  } finally {
    await fh.close();
  }
  return { size: spec.size, zeroBytes: have.zero, halfBytes: have.half, randomBytes: have.random, dataExtents };
}

export interface Changes {
  readonly writes: number;
  readonly bytes: number;
  /** Chunks (of `chunkSize`) that at least one write touched. */
  readonly chunksTouched: number;
}

/**
 * Rewrites `fraction` of the disk's data with fresh 2:1 data, as scattered writes of `writeSize` bytes
 * at random 4 KiB-aligned places inside the data (so most straddle a chunk boundary, as a file's
 * rewrite does): what a week of office use changes on a PC.
 */
export async function scatterWrites(path: string, layout: AgentDiskLayout, opts: { fraction: number; writeSize: number; seed: number; chunkSize: number }): Promise<Changes> {
  const fill = new Filler(opts.seed);
  const dataBytes = layout.dataExtents.reduce((s, [, l]) => s + l, 0);
  const goal = Math.round(opts.fraction * dataBytes);
  const touched = new Set<number>();
  let bytes = 0;
  let writes = 0;
  const fh = await open(path, 'r+');
  try {
    while (bytes < goal) {
      // An extent picked by its size, then a place in it.
      let at = Math.floor(fill.next() * dataBytes);
      let ext = layout.dataExtents[0];
      for (const e of layout.dataExtents) {
        ext = e;
        if (at < e[1]) break;
        at -= e[1];
      }
      const start = ext[0] + Math.floor(Math.min(at, Math.max(0, ext[1] - BLOCK)) / BLOCK) * BLOCK;
      const n = Math.min(opts.writeSize, goal - bytes, layout.size - start);
      await writeFully(fh, fill.half(n, start), start);
      for (let c = Math.floor(start / opts.chunkSize); c <= Math.floor((start + n - 1) / opts.chunkSize); c++) touched.add(c);
      bytes += n;
      writes++;
    }
  } finally {
    await fh.close();
  }
  return { writes, bytes, chunksTouched: touched.size };
}

export interface DataSummary {
  /** Bytes in chunks that are not all zero (what a chunk transfer examines as data). */
  readonly nonZeroChunkBytes: number;
  readonly nonZeroChunks: number;
  readonly chunks: number;
  /** `zstd -3 -c` (the CLI, one stream, one thread) of those chunks concatenated. */
  readonly zstd3Bytes: number;
}

/** Reads the disk in chunks and pipes the non-zero ones through the zstd CLI. */
export async function summarizeData(path: string, size: number, chunkSize: number): Promise<DataSummary> {
  const z = spawn('zstd', ['-3', '-c', '-T1', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let zstd3Bytes = 0;
  let stderr = '';
  z.stdout.on('data', (d: Buffer) => (zstd3Bytes += d.length));
  z.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const closed = new Promise<number | null>((resolve, reject) => {
    z.on('error', reject);
    z.on('close', (code) => resolve(code));
  });
  let nonZeroChunkBytes = 0;
  let nonZeroChunks = 0;
  let chunks = 0;
  const fh = await open(path, 'r');
  try {
    for (let off = 0; off < size; off += chunkSize) {
      const n = Math.min(chunkSize, size - off);
      const buf = Buffer.allocUnsafe(n);
      let got = 0;
      while (got < n) {
        const { bytesRead } = await fh.read(buf, got, n - got, off + got);
        if (bytesRead === 0) throw new Error(`${path} ended at byte ${off + got}, before its size ${size}`);
        got += bytesRead;
      }
      chunks++;
      if (buf.every((b) => b === 0)) continue;
      nonZeroChunks++;
      nonZeroChunkBytes += n;
      if (!z.stdin.write(buf)) await new Promise<void>((resolve) => z.stdin.once('drain', () => resolve()));
    }
  } finally {
    await fh.close();
    z.stdin.end();
  }
  const code = await closed;
  if (code !== 0) throw new Error(`zstd -3 failed (exit ${code}): ${stderr.trim()}`);
  return { nonZeroChunkBytes, nonZeroChunks, chunks, zstd3Bytes };
}
