/** Attach/detach bookkeeping, export errors, concurrency and shutdown. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { ExportError, type PeerInfo } from '../../src/nbd/export.js';
import { MemoryExport } from './memory-export.js';
import { GatedExport, gate } from './gated-export.js';
import { observeExport } from '../../src/nbd/filters/observe.js';
import { CMD, CMD_FLAG, ERRNO, OPT, REP, REPLY_TYPE } from '../../src/nbd/protocol.js';
import { RawClient, goData, optionBytes, rawGo, rawGreet, readChunk, readOptionReply, readSimpleReply, request, run, startServer, type Started } from './helpers.js';
import { start } from '../lib/run.js';

const MiB = 1024 * 1024;

describe('lifecycle', () => {
  let s: Started | undefined;
  afterEach(async () => {
    await s?.server.close();
    s = undefined;
  });

  it('write + flush + DISC → clean; write + DISC → unclean; FUA write + DISC → clean', async () => {
    const e = new MemoryExport({ size: MiB });
    s = await startServer({ e });
    const cases: Array<[boolean, boolean, boolean]> = [
      // [fua, flush, expected clean]
      [false, true, true],
      [false, false, false],
      [true, false, true],
    ];
    let n = 0;
    for (const [fua, flush, clean] of cases) {
      const { c } = await rawGo(s.port, 'e');
      c.write(Buffer.concat([request(CMD.WRITE, 1n, 0n, 4096, fua ? CMD_FLAG.FUA : 0), Buffer.alloc(4096, 1)]));
      expect((await readSimpleReply(c)).errno).toBe(0);
      if (flush) {
        c.write(request(CMD.FLUSH, 2n, 0n, 0));
        expect((await readSimpleReply(c)).errno).toBe(0);
      }
      c.write(request(CMD.DISC, 3n, 0n, 0));
      await c.waitClosed();
      const d = await e.waitForDetach(++n);
      expect(d.kind === 'detach' && d.info).toEqual({ clean, discReceived: true, wrote: true, reason: 'client sent NBD_CMD_DISC' });
    }
    expect(e.events.filter((x) => x.kind === 'attach')).toHaveLength(3);
  });

  it('a client flushing then disconnecting (qemu-io) detaches clean', async () => {
    const e = new MemoryExport({ size: MiB });
    s = await startServer({ e });
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 7 0 64k', '-c', 'flush', s.url('e')]);
    expect(r.code, r.stderr).toBe(0);
    const d = await e.waitForDetach(1);
    expect(d.kind === 'detach' && d.info.clean).toBe(true);
  });

  it('SIGKILL of a writing nbdcopy → clean:false', async () => {
    const e = new GatedExport({ size: 64 * MiB });
    const g = gate();
    let child: ChildProcess | undefined;
    let killed = false;
    e.onWrite = (): void => {
      if (!killed && child?.pid !== undefined) {
        killed = true;
        // Hold every later write so the copy cannot complete; kill the client mid-stream.
        e.writeGate = g.promise;
        process.kill(child.pid, 'SIGKILL');
      }
    };
    s = await startServer({ e });
    const dir = mkdtempSync(path.join(tmpdir(), 'ncnbd-'));
    try {
      writeFileSync(path.join(dir, 'src.raw'), Buffer.alloc(64 * MiB, 0x5a));
      const copy = start('nbdcopy', ['--connections=1', path.join(dir, 'src.raw'), s.url('e')]);
      child = copy.proc;
      const res = await copy.result;
      expect(res.signal).toBe('SIGKILL');
      g.open();
      const d = await e.waitForDetach(1);
      expect(d.kind === 'detach' && d.info.clean).toBe(false);
      expect(e.flushes).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('export errors map to their errno; other errors → EIO; the connection survives', async () => {
    const e = new GatedExport({ size: MiB });
    s = await startServer({ e });
    const { c } = await rawGo(s.port, 'e', { structured: true });
    e.failRead = new ExportError('ENOSPC', 'store is full; free space on the server');
    c.write(request(CMD.READ, 1n, 512n, 512));
    const a = await readChunk(c);
    expect(a.type).toBe(REPLY_TYPE.ERROR_OFFSET);
    expect(a.payload.readUInt32BE(0)).toBe(ERRNO.ENOSPC);
    expect(a.payload.subarray(6, 6 + a.payload.readUInt16BE(4)).toString()).toBe('store is full; free space on the server');
    e.failRead = new Error('disk on fire');
    c.write(request(CMD.READ, 2n, 0n, 512));
    const b = await readChunk(c);
    expect(b.payload.readUInt32BE(0)).toBe(ERRNO.EIO);
    expect(b.payload.toString()).not.toContain('fire');
    e.failRead = undefined;
    c.write(request(CMD.READ, 3n, 0n, 512));
    const ok = await readChunk(c);
    expect(ok.type).toBe(REPLY_TYPE.OFFSET_HOLE);
    expect(ok.payload.readUInt32BE(8)).toBe(512);
    c.destroy();
  });

  it('attach throwing ExportError refuses GO with ERR_POLICY and its message', async () => {
    class Busy extends MemoryExport {
      override attach(_p: PeerInfo): void {
        throw new ExportError('EPERM', 'capture already finished; start a new task');
      }
    }
    s = await startServer({ b: new Busy({ size: MiB }) });
    const c = await RawClient.connect(s.port);
    await rawGreet(c);
    c.write(optionBytes(OPT.GO, goData('b')));
    const r = await readOptionReply(c);
    expect(r.type).toBe(REP.ERR_POLICY);
    expect(r.data.toString()).toBe('capture already finished; start a new task');
    c.destroy();
  });

  it('replies out of order, keeps overlapping write→read order, counts stats and transfers', async () => {
    const e = new GatedExport({ size: MiB });
    // Bytes are counted by a filter over the export, the one path every grant uses.
    const counted = { read: 0, written: 0 };
    s = await startServer({ e: observeExport(e, { onRead: (n) => (counted.read += n), onWrite: (n) => (counted.written += n) }) });
    const { c } = await rawGo(s.port, 'e');
    const held = gate();
    e.readGates.set(0, held.promise);
    c.write(request(CMD.READ, 1n, 0n, 512)); // held
    c.write(request(CMD.READ, 2n, 4096n, 512));
    expect((await readSimpleReply(c)).cookie).toBe(2n); // answered first although sent second
    await c.read(512);
    held.open();
    expect((await readSimpleReply(c)).cookie).toBe(1n);
    await c.read(512);

    const wg = gate();
    e.writeGate = wg.promise;
    c.write(Buffer.concat([request(CMD.WRITE, 3n, 8192n, 512), Buffer.alloc(512, 0x77)]));
    c.write(request(CMD.READ, 4n, 8192n, 512)); // overlaps the held write: must see its data
    c.write(request(CMD.READ, 5n, 65536n, 512)); // independent: not held up
    expect((await readSimpleReply(c)).cookie).toBe(5n);
    await c.read(512);
    wg.open();
    expect((await readSimpleReply(c)).cookie).toBe(3n);
    expect(await readSimpleReply(c)).toEqual({ errno: 0, cookie: 4n });
    expect((await c.read(512)).equals(Buffer.alloc(512, 0x77))).toBe(true);

    const st = s.server.stats();
    expect(st.connections).toBe(1);
    expect(st.exports).toHaveLength(1);
    expect(st.exports[0]).toMatchObject({ connections: 1 });
    // Only the read of the written range carried data; the three reads of never-written ranges were holes.
    expect(counted).toEqual({ read: 512, written: 512 });
    c.destroy();
  });

  it('close() ends idle connections, detaches them, and refuses new work', async () => {
    const e = new MemoryExport({ size: MiB });
    s = await startServer({ e });
    const { c } = await rawGo(s.port, 'e');
    const srv = s.server;
    s = undefined;
    await srv.close();
    await c.waitClosed();
    const d = await e.waitForDetach(1);
    expect(d.kind === 'detach' && d.info).toEqual({ clean: false, discReceived: false, wrote: false, reason: 'server shutting down' });
    expect(srv.stats().connections).toBe(0);
  });
});
