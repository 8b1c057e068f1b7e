/**
 * What one chunk read's integrity check costs, per 1 MiB chunk, single thread: the numbers behind the
 * choice of the cheap per-read checksum in src/imaging/chunk-format.ts.
 *
 *   npx tsx bench/chunk-check.ts [MiB of chunks, default 64]
 *
 * Candidates measured on the decoded bytes of text-like (zstd) and random (raw) chunks cut from the
 * same synthetic disk as bench/nbd.ts:
 * - sha256 (node:crypto), the chunk's name, which every read checked until issue 11;
 * - CRC-32 (zlib.crc32, built into Node ≥ 20.15);
 * - zstd's own content checksum (frame flag; the decoder checks its XXH64 while decoding), as the
 *   extra cost of decoding a frame written with the flag over one written without.
 * CRC-32C and xxHash64 as separate checks would need a native npm addon in the server and in the
 * client's initramfs; zstd's checksum is XXH64, so its line is also what a native XXH64 costs.
 */
import { createHash, randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import zstd from 'zstd-napi/binding.js';
import { makeDisk } from './lib/disk.js';
import { fixed, median, table } from './lib/format.js';

const MiB = 1024 * 1024;

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i += 4096) if (b[i] !== 0) return false;
  return b.equals(Buffer.alloc(b.length));
}

/** Median MB/s of `fn` over `bytes`, five timed rounds after one warm-up. */
function rate(bytes: number, fn: () => void): number {
  fn();
  const rates: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    fn();
    rates.push(bytes / 1e6 / ((performance.now() - t0) / 1000));
  }
  return median(rates);
}

export async function benchChunkCheck(totalMiB = 64): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'netclone-chunkcheck-'));
  try {
    // Twice the chunks wanted, so that after dropping holes enough of each kind remain.
    const disk = await makeDisk(join(dir, 'disk.img'), { size: 3 * totalMiB * MiB, zeroFraction: 0.3, textFraction: 0.35, seed: 11 });
    const img = await readFile(disk.path);
    const cctx = new zstd.CCtx();
    cctx.setParameter(zstd.CParameter.compressionLevel, 1);
    const cctxSum = new zstd.CCtx();
    cctxSum.setParameter(zstd.CParameter.compressionLevel, 1);
    cctxSum.setParameter(zstd.CParameter.checksumFlag, 1);
    const dctx = new zstd.DCtx();
    const text: { data: Buffer; plain: Buffer; summed: Buffer }[] = [];
    const random: Buffer[] = [];
    const randomFrames: Buffer[] = [];
    for (let o = 0; o + MiB <= img.length; o += MiB) {
      const data = img.subarray(o, o + MiB);
      if (isZero(data)) continue;
      const scratch = Buffer.alloc(zstd.compressBound(MiB));
      const n = cctx.compress2(scratch, data);
      if (n < MiB * 0.9) {
        if (text.length < totalMiB) {
          const scratch2 = Buffer.alloc(zstd.compressBound(MiB));
          const m = cctxSum.compress2(scratch2, data);
          text.push({ data, plain: Buffer.from(scratch.subarray(0, n)), summed: Buffer.from(scratch2.subarray(0, m)) });
        }
      } else if (random.length < totalMiB) {
        random.push(data);
        const m = cctxSum.compress2(scratch, data);
        randomFrames.push(Buffer.from(scratch.subarray(0, m)));
      }
    }
    const out = Buffer.allocUnsafeSlow(MiB);
    const rows: string[][] = [];
    const tb = text.length * MiB;
    const rb = random.length * MiB;
    const sha = (b: Buffer): void => void createHash('sha256').update(b).digest();
    const line = (what: string, bytes: number, fn: () => void): void => {
      const r = rate(bytes, fn);
      rows.push([what, fixed(r), fixed((1e6 / r) * (MiB / 1e6), 0)]);
    };
    line('sha256, decoded bytes', rb, () => random.forEach(sha));
    line('CRC-32 (zlib.crc32), decoded bytes', rb, () => random.forEach((b) => crc32(b)));
    line('zstd decode, no checksum (text)', tb, () => text.forEach((t) => dctx.decompress(out, t.plain)));
    line('zstd decode with its content checksum (text)', tb, () => text.forEach((t) => dctx.decompress(out, t.summed)));
    line('zstd decode + CRC-32 of the output (text)', tb, () => text.forEach((t) => crc32(out.subarray(0, dctx.decompress(out, t.plain)))));
    line('zstd decode + sha256 of the output (text)', tb, () => text.forEach((t) => sha(out.subarray(0, dctx.decompress(out, t.plain)))));
    line('zstd decode with its content checksum (random: raw blocks)', rb, () => randomFrames.forEach((f) => dctx.decompress(out, f)));
    line('raw copy of the file bytes (memcpy floor)', rb, () => random.forEach((b) => b.copy(out)));
    // Framing an incompressible chunk costs: zstd raw-block headers, frame header and checksum.
    const frameOverhead = cctxSum.compress2(Buffer.alloc(zstd.compressBound(MiB)), randomBytes(MiB)) - MiB;
    const ratio = text.reduce((s, t) => s + t.plain.length, 0) / tb;
    return [
      `chunk-check: ${text.length} text-like chunks (zstd-1 ratio ${fixed(ratio, 2)}), ${random.length} random chunks (as zstd frames ${fixed(frameOverhead)} bytes over 1 MiB), 1 MiB each, one thread, node ${process.version}`,
      table(['check', 'MB/s of decoded bytes', 'µs per 1 MiB chunk'], rows),
    ].join('\n');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/^.*\//, ''))) {
  console.log(await benchChunkCheck(process.argv[2] ? Number(process.argv[2]) : undefined));
}
