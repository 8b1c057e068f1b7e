import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { spawn } from 'node:child_process';
import { run } from '../lib/run.js';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importFile } from '../../src/imaging/image-import.js';
import { readBytes } from '../../src/imaging/image-export.js';
import { DeployExport } from '../../src/transport/deploy-export.js';
import { CaptureExport } from '../../src/transport/capture-export.js';
import { NbdServer } from '../../src/nbd/server.js';
import type { ExportRefusal, ExportResolver, NbdExport } from '../../src/nbd/export.js';
import { nullLogger } from '../../src/lib/log.js';
import { tempDir, mixedDisk } from './helpers.js';

const MiB = 1024 * 1024;

class Exports implements ExportResolver {
  readonly map = new Map<string, NbdExport>();
  resolve(name: string): NbdExport | ExportRefusal {
    return this.map.get(name) ?? { refused: 'unknown', reason: `no export ${name}` };
  }
}

describe('NBD exports over the image store, with nbdcopy, qemu-img and nbdinfo', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  let server: NbdServer;
  let exports: Exports;
  let url: (name: string) => string;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('exports'));
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger() });
    exports = new Exports();
    server = new NbdServer({ resolver: exports, logger: nullLogger() });
    const { port } = await server.listen(0, '127.0.0.1');
    url = (name) => `nbd://127.0.0.1:${port}/${name}`;
  });
  afterEach(async () => {
    await server.close();
    await store.close();
    await cleanup();
  });

  it('captures with nbdcopy over 4 connections, then deploys the version back byte for byte', async () => {
    const size = 48 * MiB + 512 * 3;
    const disk = mixedDisk(size, 11);
    disk.fill(0, 8 * MiB, 20 * MiB);
    const src = join(dir, 'src.img');
    await writeFile(src, disk);

    const committed: number[] = [];
    const cap = new CaptureExport(store.beginCapture('pc1', { size, source: 'capture 52:54:00:00:00:01' }), {
      logger: nullLogger(),
      onCommitted: (v) => committed.push(v.version),
    });
    exports.map.set('cap', cap);
    const r = await run('nbdcopy', ['--connections=4', '--request-size=262144', '--flush', src, url('cap')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const v = await cap.whenDone();
    expect(v.version).toBe(1);
    expect(committed).toEqual([1]);
    expect(cap.bytesWritten).toBeGreaterThanOrEqual(size - 12 * MiB);
    // Once committed the export refuses new clients.
    const late = await run('nbdinfo', [url('cap')]);
    expect(late.code).not.toBe(0);

    const reader = await store.openVersion('pc1');
    const dep = new DeployExport(reader, { logger: nullLogger() });
    exports.map.set('dep', dep);
    const out = join(dir, 'out.img');
    const c = await run('nbdcopy', ['--connections=4', url('dep'), out]);
    expect(c.code).toBe(0);
    expect((await readFile(out)).equals(disk)).toBe(true);
    const map = await run('nbdinfo', ['--map', url('dep')]);
    expect(map.code).toBe(0);
    // 8..20 MiB are hole chunks: the map shows them as "hole,zero".
    expect(map.stdout).toMatch(new RegExp(`^\\s*${8 * MiB}\\s+${12 * MiB}\\s+3\\s+hole,zero`, 'm'));
    dep.close();
  });

  it('captures with qemu-img convert and commits a second version', async () => {
    const size = 16 * MiB;
    const v1 = randomBytes(size);
    const first = new CaptureExport(store.beginCapture('pc2', { size, source: 'v1' }), { logger: nullLogger() });
    exports.map.set('a', first);
    await writeFile(join(dir, 'v1.img'), v1);
    const r1 = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', join(dir, 'v1.img'), url('a')]);
    expect(r1.stderr).toBe('');
    expect((await first.whenDone()).version).toBe(1);

    const v2 = Buffer.from(v1);
    v2.fill(0, 0, 4 * MiB);
    randomBytes(100).copy(v2, 9 * MiB + 5);
    await writeFile(join(dir, 'v2.img'), v2);
    const second = new CaptureExport(store.beginCapture('pc2', { size, source: 'v2' }), { logger: nullLogger() });
    exports.map.set('b', second);
    const r2 = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', join(dir, 'v2.img'), url('b')]);
    expect(r2.code).toBe(0);
    expect((await second.whenDone()).version).toBe(2);
    const rd = await store.openVersion('pc2');
    expect((await readBytes(rd, 0, size)).equals(v2)).toBe(true);
    rd.close();
    const details = await store.show('pc2');
    expect(details.dedupSavings).toBeGreaterThan(10 * MiB); // v2 reuses 11 of v1's chunks
  });

  it('a client killed mid-capture aborts it: previous version intact, later clients refused', async () => {
    const size = 64 * MiB;
    const v1 = randomBytes(size);
    await writeFile(join(dir, 'v1.img'), v1);
    await importFile(store, 'pc3', join(dir, 'v1.img'));
    const failures: string[] = [];
    const cap = new CaptureExport(store.beginCapture('pc3', { size, source: 'doomed' }), { logger: nullLogger(), onFailed: (r) => failures.push(r) });
    exports.map.set('c', cap);
    // nbdcopy reads the new disk from a pipe that stalls after 8 MiB, so it is surely mid-copy when killed.
    const child = spawn('nbdcopy', ['--connections=2', '--request-size=65536', '-', url('c')], { stdio: ['pipe', 'ignore', 'ignore'] });
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    child.stdin.on('error', () => undefined);
    child.stdin.write(randomBytes(8 * MiB));
    while (cap.bytesWritten < 4 * MiB) await new Promise((r) => setTimeout(r, 10));
    process.kill(child.pid as number, 'SIGKILL');
    expect(await exited).not.toBe(0);
    await expect(cap.whenDone()).rejects.toThrow(/uncleanly/);
    expect(cap.status).toBe('failed');
    expect(failures.length).toBe(1);
    const again = await run('nbdinfo', [url('c')]);
    expect(again.code).not.toBe(0);
    expect(await store.versions('pc3')).toEqual([1]);
    const rd = await store.openVersion('pc3');
    expect((await readBytes(rd, 0, size)).equals(v1)).toBe(true);
    rd.close();
  });

  it('a capture whose writes were never flushed commits on DISC (the commit makes them durable)', async () => {
    const size = 8 * MiB;
    const d = randomBytes(size);
    await writeFile(join(dir, 'n.img'), d);
    const cap = new CaptureExport(store.beginCapture('pc5', { size, source: 'no flush' }), { logger: nullLogger() });
    exports.map.set('n', cap);
    // nbdcopy flushes only with --flush.
    const r = await run('nbdcopy', [join(dir, 'n.img'), url('n')]);
    expect(r.code).toBe(0);
    expect((await cap.whenDone()).version).toBe(1);
    expect(await store.versions('pc5')).toEqual([1]);
    const rd = await store.openVersion('pc5');
    expect((await readBytes(rd, 0, size)).equals(d)).toBe(true);
    rd.close();
  });

  it('a probe that writes nothing leaves the capture waiting for the real client', async () => {
    const size = 4 * MiB;
    const d = randomBytes(size);
    await writeFile(join(dir, 'p.img'), d);
    const cap = new CaptureExport(store.beginCapture('pc6', { size, source: 'probe first' }), { logger: nullLogger() });
    exports.map.set('p', cap);
    const info = await run('nbdinfo', ['--json', url('p')]);
    expect(info.code).toBe(0);
    expect(JSON.parse(info.stdout)).toMatchObject({ exports: [{ 'export-size': size, 'can_multi_conn': true, 'is_read_only': false }] });
    expect(cap.status).toBe('open');
    const r = await run('nbdcopy', ['--flush', join(dir, 'p.img'), url('p')]);
    expect(r.code).toBe(0);
    expect((await cap.whenDone()).version).toBe(1);
    const rd = await store.openVersion('pc6');
    expect((await readBytes(rd, 0, size)).equals(d)).toBe(true);
    rd.close();
  });

  it('a damaged chunk makes deploy reads fail with EIO instead of serving wrong bytes', async () => {
    const size = 4 * MiB;
    const d = randomBytes(size);
    await writeFile(join(dir, 'd.img'), d);
    await importFile(store, 'pc4', join(dir, 'd.img'));
    const reader = await store.openVersion('pc4');
    const h = reader.chunkHash(2) as string;
    const p = join(dir, 'store', 'chunks', h.slice(0, 2), h);
    const f = await readFile(p);
    f[f.length - 1] ^= 0x80;
    await writeFile(p, f);
    exports.map.set('d', new DeployExport(reader, { logger: nullLogger() }));
    const r = await run('nbdcopy', [url('d'), join(dir, 'out.img')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Input\/output error/);
    reader.close();
  });
});
