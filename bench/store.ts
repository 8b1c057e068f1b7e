/**
 * Micro-bench of the image store: capture of a synthetic disk (40 % zero, 30 % compressible,
 * 30 % random chunks) written as 256 KiB pieces with 16 in flight (like nbdcopy), then a deploy-style
 * read of the version. Run: `node --import tsx bench/store.ts [GiB]`.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ImageStore } from '../src/imaging/image-store.js';
import { nullLogger } from '../src/lib/log.js';

const MiB = 1024 * 1024;
const gib = Number(process.argv[2] ?? '1');
const size = Math.round(gib * 1024) * MiB;
const level = Number(process.env.LEVEL ?? '1');

function textChunk(seed: number): Buffer {
  const words = ['kernel', 'system32', 'config', 'libc.so.6', 'ntoskrnl', 'user', 'home', 'etc', 'usr', 'lib', 'dll', 'registry'];
  const b = Buffer.alloc(MiB);
  let o = 0;
  let s = seed;
  while (o < MiB) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    o += b.write(`${words[s % words.length]}/${(s >>> 8) % 100000} `, o);
  }
  return b;
}

function makeDisk(): Buffer {
  const disk = Buffer.alloc(size);
  for (let i = 0; i < size / MiB; i++) {
    const k = i % 10;
    if (k < 4) continue;
    if (k < 7) textChunk(i).copy(disk, i * MiB);
    else randomBytes(MiB).copy(disk, i * MiB);
  }
  return disk;
}

const disk = makeDisk();
const dir = await mkdtemp(join(tmpdir(), 'netclone-bench-'));
const store = await ImageStore.open(dir, { logger: nullLogger(), compressionLevel: level });
await new Promise((r) => setTimeout(r, 500)); // workers up
try {
  const capture = async (name: string) => {
    const cap = store.beginCapture(name, { size, source: 'bench' });
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const piece = 256 * 1024;
    const inflight = new Set<Promise<void>>();
    for (let o = 0; o < size; o += piece) {
      const p = cap.write(o, disk.subarray(o, o + piece));
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
      if (inflight.size >= 16) await Promise.race(inflight);
    }
    await Promise.all(inflight);
    const v = await cap.commit();
    return { v, tc: Number(process.hrtime.bigint() - t0) / 1e9, cc: process.cpuUsage(c0) };
  };
  const { v, tc, cc } = await capture('bench');
  // The same disk again: every chunk is already stored (a nightly backup of an unchanged PC).
  const again = await capture('bench-again');

  const r = await store.openVersion('bench');
  const c1 = process.cpuUsage();
  const t1 = process.hrtime.bigint();
  let sum = 0;
  const ahead: Promise<number>[] = [];
  for (let o = 0; o < size; o += 4 * MiB) {
    ahead.push(r.read(o, 4 * MiB).then((ps) => ps.reduce((a, p) => a + (p.kind === 'data' ? p.data.length : p.length), 0)));
    if (ahead.length >= 8) sum += await (ahead.shift() as Promise<number>);
  }
  for (const a of ahead) sum += await a;
  const tr = Number(process.hrtime.bigint() - t1) / 1e9;
  const cr = process.cpuUsage(c1);
  // CPU seconds (all threads) are steadier than wall time on a shared machine; the "ideal" figures
  // are what two otherwise idle cores would reach at that CPU cost.
  const cpu = (u: NodeJS.CpuUsage): number => (u.user + u.system) / 1e6;
  r.close();
  const mb = size / 1e6;
  console.log(
    JSON.stringify({
      sizeMiB: size / MiB,
      level,
      captureMBps: Math.round(mb / tc),
      readMBps: Math.round(mb / tr),
      captureCpuSeconds: +cpu(cc).toFixed(2),
      captureSysSeconds: +(cc.system / 1e6).toFixed(2),
      captureIdeal2CoreMBps: Math.round(mb / (cpu(cc) / 2)),
      recaptureMBps: Math.round(mb / again.tc),
      recaptureCpuSeconds: +cpu(again.cc).toFixed(2),
      readCpuSeconds: +cpu(cr).toFixed(2),
      readIdeal2CoreMBps: Math.round(mb / (cpu(cr) / 2)),
      readBytes: sum,
      dataBytes: v.dataBytes,
      storedBytes: v.storedBytes,
      ratio: +(v.dataBytes / v.storedBytes).toFixed(2),
    }),
  );
} finally {
  await store.close();
  await rm(dir, { recursive: true, force: true });
}
