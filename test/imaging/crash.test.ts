import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { spawn } from 'node:child_process';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importStream } from '../../src/imaging/image-import.js';
import { readBytes } from '../../src/imaging/image-export.js';
import { encodeManifest, parseManifest, ManifestError } from '../../src/imaging/manifest.js';
import { nullLogger } from '../../src/lib/log.js';
import { compileImaging, tempDir } from './helpers.js';
import { versionData } from './fixtures/version-data.js';

const MiB = 1024 * 1024;
const CHILD = fileURLToPath(new URL('./fixtures/capture-child.ts', import.meta.url));

interface Child {
  pid: number;
  lines: Promise<string>;
  done: Promise<number | null>;
  /** Every stdout line so far. */
  all: string[];
  /** Resolves at the first line matching `re` (or when the child exits). */
  waitFor(re: RegExp): Promise<string | null>;
  kill: () => void;
}

function startChild(mode: string, dir: string, compiledChild?: string): Child {
  const args = compiledChild ? [compiledChild, mode, dir] : ['--import', 'tsx', CHILD, mode, dir];
  const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const all: string[] = [];
  let watchers: { re: RegExp; resolve: (l: string | null) => void }[] = [];
  let firstLine: (s: string) => void;
  const lines = new Promise<string>((r) => (firstLine = r));
  p.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    const parts = out.split('\n');
    out = parts.pop() ?? '';
    for (const l of parts) {
      if (all.length === 0) firstLine(l);
      all.push(l);
      watchers = watchers.filter((w) => {
        if (!w.re.test(l)) return true;
        w.resolve(l);
        return false;
      });
    }
  });
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<number | null>((r) =>
    p.on('exit', (code) => {
      if (all.length === 0) firstLine(`exited ${code}: ${err}`);
      for (const w of watchers) w.resolve(null);
      watchers = [];
      r(code);
    }),
  );
  return {
    pid: p.pid as number,
    lines,
    done,
    all,
    waitFor: (re) => {
      const hit = all.find((l) => re.test(l));
      if (hit !== undefined) return Promise.resolve(hit);
      if (p.exitCode !== null) return Promise.resolve(null);
      return new Promise((resolve) => watchers.push({ re, resolve }));
    },
    kill: () => {
      if (p.exitCode === null) process.kill(p.pid as number, 'SIGKILL');
    },
  };
}

async function chunkCount(storeDir: string): Promise<number> {
  let n = 0;
  for (const sub of await readdir(join(storeDir, 'chunks'))) n += (await readdir(join(storeDir, 'chunks', sub))).length;
  return n;
}

describe('crash safety and hostile manifests', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('crash'));
  });
  afterEach(async () => cleanup());

  it('a capture SIGKILLed mid-way leaves the previous version intact; gc collects its orphans', async () => {
    const storeDir = join(dir, 'store');
    const v1 = randomBytes(32 * MiB);
    let store = await ImageStore.open(storeDir, { logger: nullLogger() });
    await importStream(store, 'victim', Readable.from([v1]), v1.length, { source: 'v1' });
    await store.close();

    const child = startChild('kill', storeDir);
    try {
      expect(await child.lines).toBe('ready');
    } finally {
      child.kill();
    }
    await child.done;
    expect((await readdir(join(storeDir, 'tmp'))).length).toBeGreaterThan(0); // its spill/temp leftovers
    const orphans = (await chunkCount(storeDir)) - 32;
    expect(orphans).toBeGreaterThan(0); // chunks it stored before it was killed

    store = await ImageStore.open(storeDir, { logger: nullLogger() });
    try {
      expect(await readdir(join(storeDir, 'tmp'))).toEqual([]);
      expect(await store.versions('victim')).toEqual([1]);
      const r = await store.openVersion('victim');
      expect((await readBytes(r, 0, r.size)).equals(v1)).toBe(true);
      r.close();
      expect((await store.verify('victim')).ok).toBe(true);
      const g = await store.gc();
      expect(g.removedChunks).toBe(orphans);
      expect(g.keptChunks).toBe(32);
    } finally {
      await store.close();
    }
  });

  it('SIGKILL during writes, chunk stores and commits never leaves a partial or damaged version', async () => {
    const storeDir = join(dir, 'store');
    // Kill points: in the commit of version 2 (chunk stores, manifest write, rename, prune) at
    // several delays, and during the writes of the version after a commit.
    const points: { after: RegExp; delayMs: number }[] = [
      ...[0, 1, 2, 4, 7, 11, 16].map((delayMs) => ({ after: /^commit 2$/, delayMs })),
      ...[0, 3, 9].map((delayMs) => ({ after: /^committed 2$/, delayMs })),
    ];
    for (const { after, delayMs } of points) {
      await rm(storeDir, { recursive: true, force: true });
      const child = startChild('commits', storeDir);
      try {
        expect(await child.waitFor(after), child.all.join('\n')).not.toBeNull();
        await new Promise((r) => setTimeout(r, delayMs));
      } finally {
        child.kill();
      }
      await child.done;
      const began = child.all.filter((l) => l.startsWith('commit ')).map((l) => Number(l.split(' ')[1]));
      const ended = child.all.filter((l) => l.startsWith('committed ')).map((l) => Number(l.split(' ')[1]));
      const store = await ImageStore.open(storeDir, { logger: nullLogger(), keepVersions: 1000 });
      try {
        const vs = await store.versions('loop');
        const where = `killed ${delayMs} ms after ${after.source}; versions on disk ${vs.join(',')}`;
        // Every version the child saw committed is there; nothing beyond the last one it began.
        expect(vs.slice(0, ended.length), where).toEqual(ended);
        expect(vs.length, where).toBeLessThanOrEqual(Math.max(...began));
        for (const v of vs) {
          const r = await store.openVersion('loop', v);
          expect((await readBytes(r, 0, r.size)).equals(versionData(v)), `${where}: version ${v}`).toBe(true);
          r.close();
        }
        expect(await readdir(join(storeDir, 'tmp'))).toEqual([]);
        await store.gc();
        for (const v of vs) expect((await store.verify('loop', { version: v })).ok, `${where}: version ${v} after gc`).toBe(true);
      } finally {
        await store.close();
      }
    }
  });

  it('opens, serves and commits a sparse 1 TiB disk (compiled build, as deployed)', async () => {
    // bench/store-rss.ts runs the same child and reports its peak RSS.
    const built = await compileImaging(join(dir, 'build'), ['test/imaging/fixtures/capture-child.ts']);
    const child = startChild('rss', join(dir, 'store'), built('test/imaging/fixtures/capture-child.ts'));
    const line = await child.lines;
    expect(await child.done).toBe(0);
    const res = JSON.parse(line) as { peak: number; size: number; dataBytes: number; dataPieces: number; extents: number; tail: string[] };
    expect(res.size).toBe(1024 ** 4);
    expect(res.dataBytes).toBe(64 * MiB);
    expect(res.dataPieces).toBe(64);
    expect(res.extents).toBe(128);
    expect(res.tail).toEqual(['hole']);
  });

  it('rejects hostile manifests with clear errors and never serves them', async () => {
    const hashes = Buffer.alloc(4 * 32);
    hashes.fill(0xab, 32, 64);
    const sizes = new Uint32Array([0, 1234, 0, 0]);
    const good = encodeManifest({ version: 1, size: 4 * MiB, sectorSize: 512, chunkSize: MiB, digest: 'a'.repeat(64), created: new Date().toISOString(), source: 't', storedBytes: 1234 }, hashes, sizes);
    expect(parseManifest(good).header.dataChunks).toBe(1);

    const cases: [string, Buffer, RegExp][] = [
      ['bad magic', Buffer.concat([Buffer.from('XXMANIF1'), good.subarray(8)]), /bad magic/],
      ['truncated table', good.subarray(0, good.length - 40), /expected \d+ \(truncated/],
      ['flipped table byte', (() => { const b = Buffer.from(good); b[b.length - 50] ^= 1; return b; })(), /checksum mismatch/],
      ['empty', Buffer.alloc(0), /too short/],
      ['huge header length', (() => { const b = Buffer.from(good); b.writeUInt32BE(0xffffffff, 8); return b; })(), /header length/],
    ];
    const reheader = (patch: Record<string, unknown>): Buffer => {
      const len = good.readUInt32BE(8);
      const h = { ...(JSON.parse(good.toString('utf8', 12, 12 + len)) as Record<string, unknown>), ...patch };
      const j = Buffer.from(JSON.stringify(h));
      const pre = Buffer.alloc(12);
      pre.write('NCMANIF1', 0, 'latin1');
      pre.writeUInt32BE(j.length, 8);
      return Buffer.concat([pre, j, good.subarray(12 + len)]);
    };
    cases.push(['huge size', reheader({ size: 2 ** 60, chunkCount: 2 ** 40 }), /disk size .* out of range/]);
    cases.push(['chunk count lie', reheader({ chunkCount: 3 }), /chunk count/]);
    cases.push(['odd chunk size', reheader({ chunkSize: 1000000 }), /chunk size/]);
    cases.push(['not json', Buffer.concat([good.subarray(0, 12), Buffer.from('{'.padEnd(good.readUInt32BE(8), ' ')), good.subarray(12 + good.readUInt32BE(8))]), /not valid JSON/]);
    for (const [what, buf, re] of cases) {
      expect(() => parseManifest(buf), what).toThrow(ManifestError);
      expect(() => parseManifest(buf), what).toThrow(re);
    }

    // On disk: a damaged manifest makes openVersion fail clearly; gc reports it, goes on with the rest
    // of the store, and keeps every chunk the damaged file may still name.
    const store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger() });
    try {
      const mData = randomBytes(2 * MiB);
      await importStream(store, 'm', Readable.from([mData]), mData.length, { source: 't' });
      await importStream(store, 'other', Readable.from([randomBytes(MiB)]), MiB, { source: 't' });
      await store.remove('other'); // its chunk is garbage gc must still collect
      const path = join(dir, 'store', 'images', 'm', 'versions', '1.manifest');
      const f = await readFile(path);
      await writeFile(path, f.subarray(0, f.length - 3));
      await expect(store.openVersion('m')).rejects.toThrow(/1\.manifest: file is .* bytes, expected/);
      const g = await store.gc();
      expect(g.damagedManifests).toEqual(['m version 1']);
      expect(g.removedChunks).toBe(1);
      expect(g.keptChunks).toBe(2);
      expect(await store.list()).toEqual([]);
      // Repairing the manifest brings the version back whole: gc deleted nothing it named.
      await writeFile(path, f);
      expect((await store.verify('m')).ok).toBe(true);
    } finally {
      await store.close();
    }
  });
});
