/** Real NBD clients (libnbd's nbdinfo/nbdcopy, qemu-img, qemu-io) against MemoryExport over loopback. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryExport } from './memory-export.js';
import { run, startServer, type Started } from './helpers.js';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;

/** Deterministic, non-repeating content with a 4 MiB hole in the middle and zeroes at the end. */
function sourceImage(): Buffer {
  const b = Buffer.alloc(SIZE);
  let x = 0x12345678;
  for (let i = 0; i < 6 * MiB; i += 4) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b.writeUInt32LE(x, i);
  }
  b.fill(0xab, 10 * MiB, 12 * MiB);
  return b;
}

describe('real NBD clients', () => {
  let s: Started;
  let dir: string;
  const src = sourceImage();
  const ro = new MemoryExport({ size: SIZE, data: src, readOnly: true, multiConn: false, description: 'read-only test image' });
  const rw = new MemoryExport({ size: SIZE, description: 'writable test disk' });
  const rw2 = new MemoryExport({ size: SIZE });
  const rw3 = new MemoryExport({ size: SIZE });

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'ncnbd-'));
    writeFileSync(path.join(dir, 'src.raw'), src);
    s = await startServer({ 'ro-secret': ro, 'rw-secret': rw, rw2, rw3 });
  });
  afterAll(async () => {
    await s.server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('nbdinfo --json reports size and flags of a read-only export', async () => {
    const r = await run('nbdinfo', ['--json', s.url('ro-secret')]);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout) as { protocol: string; structured: boolean; exports: Array<Record<string, unknown>> };
    expect(info.protocol).toBe('newstyle-fixed');
    expect(info.structured).toBe(true);
    const e = info.exports[0];
    expect(e['export-size']).toBe(SIZE);
    expect(e.is_read_only).toBe(true);
    expect(e.can_multi_conn).toBe(false);
    expect(e.can_trim).toBe(false);
    expect(e.can_zero).toBe(false);
    expect(e.can_flush).toBe(true);
    expect(e.description).toBe('read-only test image');
    expect(e.contexts).toEqual(['base:allocation']);
    expect(e.block_size_minimum).toBe(1);
    expect(e.block_size_maximum).toBe(32 * MiB);
  });

  it('nbdinfo --json reports a writable multi-conn export', async () => {
    const r = await run('nbdinfo', ['--json', s.url('rw-secret')]);
    expect(r.code, r.stderr).toBe(0);
    const e = (JSON.parse(r.stdout) as { exports: Array<Record<string, unknown>> }).exports[0];
    expect(e.is_read_only).toBe(false);
    expect(e.can_multi_conn).toBe(true);
    expect(e.can_trim).toBe(true);
    expect(e.can_zero).toBe(true);
    expect(e.can_fast_zero).toBe(true);
    expect(e.can_fua).toBe(true);
  });

  it('nbdinfo --map shows holes from base:allocation', async () => {
    const r = await run('nbdinfo', ['--map', '--json', s.url('ro-secret')]);
    expect(r.code, r.stderr).toBe(0);
    const map = JSON.parse(r.stdout) as Array<{ offset: number; length: number; type: number }>;
    expect(map).toEqual([
      { offset: 0, length: 6 * MiB, type: 0, description: 'data' },
      { offset: 6 * MiB, length: 4 * MiB, type: 3, description: 'hole,zero' },
      { offset: 10 * MiB, length: 2 * MiB, type: 0, description: 'data' },
      { offset: 12 * MiB, length: 4 * MiB, type: 3, description: 'hole,zero' },
    ]);
  });

  it('nbdinfo --list is refused by policy (export names are secret) and lists nothing', async () => {
    const r = await run('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${s.port}/`]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).not.toContain('secret');
    expect(r.stderr).toMatch(/nbd_opt_list/);
  });

  it('an unknown export is refused with a message and the refusal is recorded', async () => {
    const r = await run('nbdinfo', ['--json', s.url('nope')]);
    expect(r.code).not.toBe(0);
    // libnbd reports the errno only; the server's message is checked with a raw client in hostile.test.ts.
    expect(r.stderr).toMatch(/nbd_opt_go: server replied with error/);
    expect(s.resolver.refusals).toContain('nope');
  });

  it('qemu-img convert and nbdcopy read back exactly the bytes', async () => {
    const a = path.join(dir, 'a.raw');
    const b = path.join(dir, 'b.raw');
    const r1 = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', s.url('ro-secret'), a]);
    expect(r1.code, r1.stderr).toBe(0);
    expect(readFileSync(a).equals(src)).toBe(true);
    const r2 = await run('nbdcopy', [s.url('ro-secret'), b]);
    expect(r2.code, r2.stderr).toBe(0);
    expect(readFileSync(b).equals(src)).toBe(true);
  });

  it('nbdcopy --connections=4 writes into a writable export', async () => {
    const before = rw.events.filter((e) => e.kind === 'attach').length;
    const r = await run('nbdcopy', ['--flush', '--connections=4', '--threads=4', path.join(dir, 'src.raw'), s.url('rw-secret')]);
    expect(r.code, r.stderr).toBe(0);
    expect(rw.contents().equals(src)).toBe(true);
    // Four writing connections attached; each detaches cleanly after nbdcopy's flush (--flush) + disconnect.
    const attaches = rw.events.filter((e) => e.kind === 'attach').length;
    expect(attaches - before).toBe(4);
    await rw.waitForDetach(attaches);
    const detaches = rw.events.filter((e) => e.kind === 'detach');
    expect(detaches.length).toBe(attaches);
    expect(detaches.every((e) => e.kind === 'detach' && e.info.clean)).toBe(true);
  });

  it('nbdcopy without --flush ends with DISC but unflushed writes: detach says wrote, DISC received, not clean', async () => {
    const fresh = new MemoryExport({ size: SIZE });
    s.resolver.exports.set('noflush', fresh);
    const r = await run('nbdcopy', ['--connections=1', path.join(dir, 'src.raw'), s.url('noflush')]);
    expect(r.code, r.stderr).toBe(0);
    const d = await fresh.waitForDetach(1);
    expect(d.kind === 'detach' && d.info).toEqual({ clean: false, discReceived: true, wrote: true, reason: 'client sent NBD_CMD_DISC' });
    expect(fresh.flushes).toBe(0);
  });

  it('qemu-img convert writes into a writable export', async () => {
    const r = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', path.join(dir, 'src.raw'), s.url('rw2')]);
    expect(r.code, r.stderr).toBe(0);
    expect(rw2.contents().equals(src)).toBe(true);
    // qemu-img flushes before disconnecting.
    const d = await rw2.waitForDetach(1);
    expect(d.kind === 'detach' && d.info.clean).toBe(true);
  });

  it('qemu-io write -z, discard, flush and qemu-img map', async () => {
    // Fill 2 MiB with data first so zeroing and discarding have something to change.
    const fill = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x55 0 2M', s.url('rw3')]);
    expect(fill.code, fill.stderr).toBe(0);
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -z 0 64k', '-c', 'discard 1M 1M', '-c', 'flush', '-c', 'read -P 0 0 64k', '-c', 'read -P 0x55 64k 64k', s.url('rw3')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
    expect(r.stdout).toMatch(/discard 1048576\/1048576 bytes at offset 1048576/);
    const c = rw3.contents();
    expect(c.subarray(0, 65536).every((v) => v === 0)).toBe(true);
    expect(c.subarray(65536, MiB).every((v) => v === 0x55)).toBe(true);
    expect(rw3.flushes).toBeGreaterThan(0);

    const m = await run('qemu-img', ['map', '--output=json', '-f', 'raw', s.url('rw3')]);
    expect(m.code, m.stderr).toBe(0);
    const map = JSON.parse(m.stdout) as Array<{ start: number; length: number; zero: boolean; data: boolean }>;
    const at = (off: number): { zero: boolean; data: boolean } => map.find((e) => e.start <= off && off < e.start + e.length)!;
    expect(at(100_000)).toMatchObject({ data: true, zero: false });
    expect(at(1.5 * MiB)).toMatchObject({ data: false, zero: true });
    expect(at(8 * MiB)).toMatchObject({ data: false, zero: true });
    expect(map[map.length - 1].start + map[map.length - 1].length).toBe(SIZE);
  });
});
