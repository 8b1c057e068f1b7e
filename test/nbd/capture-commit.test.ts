/**
 * The capture commit rule, connection by connection, over a real image store and raw NBD clients:
 * which connections count (only those that issued WRITE, WRITE_ZEROES or TRIM), what a clean end is
 * (NBD_CMD_DISC, with or without FLUSH), what discards (a writer closing without DISC), and that the
 * store's capture lock is taken only by the first write.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { ImageStore } from '../../src/imaging/image-store.js';
import { readBytes } from '../../src/imaging/image-export.js';
import { CaptureExport } from '../../src/transport/capture-export.js';
import { observeExport } from '../../src/nbd/filters/observe.js';
import type { DetachInfo, NbdExport } from '../../src/nbd/export.js';
import { CMD } from '../../src/nbd/protocol.js';
import { nullLogger } from '../../src/lib/log.js';
import { rawGo, rawSimpleRead, readSimpleReply, request, run, startServer, type RawClient, type Started } from './helpers.js';

const MiB = 1024 * 1024;
const SIZE = 4 * MiB;

describe('capture commit rule', () => {
  let dir: string;
  let store: ImageStore;
  let s: Started;
  let detaches: DetachInfo[];
  let detachWaiters: Array<() => void>;
  let made: CaptureExport[];

  /** Registers a lazily begun capture export of `image` under `name`; detaches are recorded. */
  function captureExport(name: string, image: string, commitDelayMs: number): CaptureExport {
    const exp = new CaptureExport({ name: image, size: SIZE, begin: () => store.beginCapture(image, { size: SIZE, source: 'test' }) }, { logger: nullLogger(), commitDelayMs });
    const observed: NbdExport = observeExport(exp, {
      onDetach: (_peer, info) => {
        detaches.push(info);
        const w = detachWaiters;
        detachWaiters = [];
        for (const f of w) f();
      },
    });
    s.resolver.exports.set(name, observed);
    made.push(exp);
    return exp;
  }

  async function detached(n: number): Promise<void> {
    while (detaches.length < n) await new Promise<void>((r) => detachWaiters.push(r));
  }

  async function write(c: RawClient, offset: number, data: Buffer, cookie = 1n): Promise<void> {
    c.write(Buffer.concat([request(CMD.WRITE, cookie, BigInt(offset), data.length), data]));
    expect((await readSimpleReply(c)).errno).toBe(0);
  }

  async function disc(c: RawClient): Promise<void> {
    c.write(request(CMD.DISC, 99n, 0n, 0));
    await c.waitClosed();
  }

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'nc-capcommit-'));
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger() });
    s = await startServer({});
    detaches = [];
    detachWaiters = [];
    made = [];
  });

  afterEach(async () => {
    await s.server.close();
    for (const e of made) e.abort('test over');
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a write and DISC without FLUSH commits exactly what was written, at once (no settle wait once data arrived)', async () => {
    const exp = captureExport('c', 'img', 600_000);
    const { c } = await rawGo(s.port, 'c');
    await write(c, MiB + 5, Buffer.alloc(3000, 0xab));
    await disc(c);
    const v = await exp.whenDone();
    expect(v.version).toBe(1);
    expect(await store.versions('img')).toEqual([1]);
    const rd = await store.openVersion('img');
    const expected = Buffer.alloc(SIZE);
    expected.fill(0xab, MiB + 5, MiB + 5 + 3000);
    expect((await readBytes(rd, 0, SIZE)).equals(expected)).toBe(true);
    rd.close();
  });

  it('a connection that only reads, then closes abruptly, neither begins, commits nor discards the capture', async () => {
    const exp = captureExport('c', 'img', 10);
    const { c } = await rawGo(s.port, 'c');
    expect((await rawSimpleRead(c, 0, 4096)).equals(Buffer.alloc(4096))).toBe(true);
    c.destroy();
    await detached(1);
    expect(detaches[0]).toMatchObject({ wrote: false, discReceived: false });
    expect(exp.status).toBe('open');
    expect(exp.begun).toBe(false);
    // No lock is held: the store lets another capture of the image begin and end.
    const other = store.beginCapture('img', { size: SIZE, source: 'other' });
    await other.abort('test: only checking the lock');
    // The real writer comes later on the same export and commits.
    const { c: w } = await rawGo(s.port, 'c');
    await write(w, 0, Buffer.alloc(512, 7));
    await disc(w);
    expect((await exp.whenDone()).version).toBe(1);
  });

  it('a writer closing without DISC discards the capture even after another writer ended cleanly', async () => {
    const exp = captureExport('c', 'img', 60_000);
    const { c: a } = await rawGo(s.port, 'c');
    const { c: b } = await rawGo(s.port, 'c');
    await write(a, 0, Buffer.alloc(4096, 1));
    await write(b, MiB, Buffer.alloc(4096, 2));
    await disc(a);
    b.destroy();
    await expect(exp.whenDone()).rejects.toThrow(/uncleanly after writing/);
    expect(exp.status).toBe('failed');
    expect(await store.versions('img')).toEqual([]);
    // Later connections are refused.
    await expect(rawGo(s.port, 'c')).rejects.toThrow(/GO refused/);
  });

  it('a connection that only sends WRITE_ZEROES and TRIM is a writer: its DISC commits an all-zero disk after the settle wait', async () => {
    const exp = captureExport('c', 'img', 50);
    const { c } = await rawGo(s.port, 'c');
    c.write(request(CMD.WRITE_ZEROES, 1n, 0n, 2 * MiB));
    expect((await readSimpleReply(c)).errno).toBe(0);
    c.write(request(CMD.TRIM, 2n, BigInt(2 * MiB), 2 * MiB));
    expect((await readSimpleReply(c)).errno).toBe(0);
    await disc(c);
    await detached(1);
    expect(detaches[0]).toMatchObject({ wrote: true, discReceived: true, clean: false });
    const v = await exp.whenDone();
    expect(v.version).toBe(1);
    expect(v.dataBytes).toBe(0);
  });

  it('qemu-img\'s create probe (zero sector 0, FLUSH, DISC) does not commit: the copy connection that follows attaches, and its bytes are the one version', async () => {
    const exp = captureExport('c', 'img', 600_000);
    const { c: probe } = await rawGo(s.port, 'c');
    probe.write(request(CMD.WRITE_ZEROES, 1n, 0n, 512));
    expect((await readSimpleReply(probe)).errno).toBe(0);
    probe.write(request(CMD.FLUSH, 2n, 0n, 0));
    expect((await readSimpleReply(probe)).errno).toBe(0);
    await disc(probe);
    await detached(1);
    expect(exp.status).toBe('open');
    expect(await store.versions('img')).toEqual([]);
    const { c: copy } = await rawGo(s.port, 'c');
    await write(copy, 0, Buffer.alloc(MiB, 0x33));
    await disc(copy);
    expect((await exp.whenDone()).version).toBe(1);
    expect(await store.versions('img')).toEqual([1]);
    const rd = await store.openVersion('img');
    const expected = Buffer.alloc(SIZE);
    expected.fill(0x33, 0, MiB);
    expect((await readBytes(rd, 0, SIZE)).equals(expected)).toBe(true);
    rd.close();
  });

  it('a write refused because the image is being captured elsewhere fails that write only; the export stays usable', async () => {
    const exp = captureExport('c', 'img', 10);
    const other = store.beginCapture('img', { size: SIZE, source: 'other' });
    const { c } = await rawGo(s.port, 'c');
    c.write(Buffer.concat([request(CMD.WRITE, 1n, 0n, 512), Buffer.alloc(512, 1)]));
    expect((await readSimpleReply(c)).errno).not.toBe(0);
    await disc(c);
    await detached(1);
    expect(exp.status).toBe('open');
    expect(exp.begun).toBe(false);
    await other.abort('test: free the image');
    const { c: again } = await rawGo(s.port, 'c');
    await write(again, 0, Buffer.alloc(512, 1));
    await disc(again);
    expect((await exp.whenDone()).version).toBe(1);
  });

  it('nbdinfo probing a capture export commits nothing and takes no lock', async () => {
    const exp = captureExport('c', 'img', 10);
    const r = await run('nbdinfo', ['--json', s.url('c')]);
    expect(r.code, r.stderr).toBe(0);
    await detached(1);
    expect(detaches[0]).toMatchObject({ wrote: false, discReceived: true });
    expect(exp.status).toBe('open');
    expect(exp.begun).toBe(false);
    expect(await store.versions('img')).toEqual([]);
  });
});
