/**
 * `npm run bench -- capture`: what a capture costs the appliance's disk and memory.
 *
 * 1. Rewrite-heavy stream (a filesystem on nbd-client): 4 KiB random writes over a 64 MiB disk,
 *    8 times its size in all, then commit. The store's chunk directory is sampled during the
 *    capture; its peak is compared with the committed version's stored bytes, and the reference is
 *    `zstd -3` of the same final image (what any compressed copy of that disk takes).
 * 2. A sparse 1 TiB capture and deploy-style reads (64 MiB of data), as the deployed (compiled) build:
 *    peak RSS of the process, since capture memory must follow the chunks touched, not the size declared.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImageStore } from '../src/imaging/image-store.js';
import { nullLogger } from '../src/lib/log.js';
import { compileImaging } from '../test/imaging/helpers.js';
import { assertOk, runCommand } from './lib/proc.js';

const MiB = 1024 * 1024;

async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const sub of await readdir(dir)) {
    for (const f of await readdir(join(dir, sub))) n += (await stat(join(dir, sub, f))).size;
  }
  return n;
}

export interface CaptureBenchResult {
  readonly rewrite: { diskBytes: number; written: number; peakStoreBytes: number; finalStoredBytes: number; zstd3Bytes: number; peakOverFinal: number; seconds: number };
  readonly sparse: { declared: number; dataBytes: number; peakRssMB: number };
}

async function rewriteHeavy(root: string): Promise<CaptureBenchResult['rewrite']> {
  const storeDir = join(root, 'store');
  const store = await ImageStore.open(storeDir, { logger: nullLogger() });
  const size = 64 * MiB;
  const model = Buffer.alloc(size);
  let peak = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, await dirBytes(join(storeDir, 'chunks')));
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const t0 = performance.now();
  const cap = store.beginCapture('rewrite', { size, source: 'bench' });
  const total = 8 * size;
  const inflight = new Set<Promise<void>>();
  for (let done = 0; done < total; done += 4096) {
    const off = Math.floor(Math.random() * (size / 4096)) * 4096;
    const piece = randomBytes(4096);
    piece.copy(model, off);
    const p = cap.write(off, piece);
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
    if (inflight.size >= 32) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  const v = await cap.commit();
  const seconds = (performance.now() - t0) / 1000;
  sampling = false;
  await sampler;
  peak = Math.max(peak, await dirBytes(join(storeDir, 'chunks')));
  await store.close();
  const raw = join(root, 'final.raw');
  await writeFile(raw, model);
  const z = await runCommand('zstd', ['-3', '-q', '-f', raw, '-o', `${raw}.zst`]);
  assertOk('zstd -3', z);
  const zstd3Bytes = (await stat(`${raw}.zst`)).size;
  return { diskBytes: size, written: total, peakStoreBytes: peak, finalStoredBytes: v.storedBytes, zstd3Bytes, peakOverFinal: peak / v.storedBytes, seconds };
}

async function sparseRss(root: string): Promise<CaptureBenchResult['sparse']> {
  const built = await compileImaging(join(root, 'build'), ['test/imaging/fixtures/capture-child.ts']);
  const child = built('test/imaging/fixtures/capture-child.ts');
  const r = await runCommand(process.execPath, [child, 'rss', join(root, 'rss-store')]);
  assertOk('1 TiB sparse capture child', r);
  const res = JSON.parse(r.stdout.split('\n')[0]) as { peak: number; size: number; dataBytes: number };
  return { declared: res.size, dataBytes: res.dataBytes, peakRssMB: Math.round(res.peak / 1e6) };
}

export async function benchCapture(): Promise<CaptureBenchResult> {
  const root = await mkdtemp(join(tmpdir(), 'netclone-bench-capture-'));
  try {
    const rewrite = await rewriteHeavy(root);
    console.log(
      `rewrite-heavy: ${rewrite.written / MiB} MiB of 4 KiB writes over a ${rewrite.diskBytes / MiB} MiB disk in ${rewrite.seconds.toFixed(1)} s; ` +
        `store peak ${(rewrite.peakStoreBytes / MiB).toFixed(1)} MiB, final version ${(rewrite.finalStoredBytes / MiB).toFixed(1)} MiB (${rewrite.peakOverFinal.toFixed(2)}x), zstd -3 of the same image ${(rewrite.zstd3Bytes / MiB).toFixed(1)} MiB`,
    );
    const sparse = await sparseRss(root);
    console.log(`sparse 1 TiB capture + reads, compiled: peak RSS ${sparse.peakRssMB} MB`);
    return { rewrite, sparse };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

export function summarizeCapture(r: CaptureBenchResult): string {
  return `rewrite store peak/final ${r.rewrite.peakOverFinal.toFixed(2)}x (final ${(r.rewrite.finalStoredBytes / MiB).toFixed(1)} MiB, zstd -3 ${(r.rewrite.zstd3Bytes / MiB).toFixed(1)} MiB), 1 TiB sparse peak RSS ${r.sparse.peakRssMB} MB`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await benchCapture();
