/**
 * Resource bounds of the NBD server (issue 9, defect 11): unauthenticated handshakes cannot starve
 * real clients, attached connections have their own cap and an idle timeout, and request payloads
 * across all connections stay within one memory budget that is given back when connections end.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryExport } from './memory-export.js';
import { GatedExport, gate } from './gated-export.js';
import { MemoryBudget } from '../../src/nbd/memory-budget.js';
import type { DetachInfo } from '../../src/nbd/export.js';
import { CMD, OPT, REP } from '../../src/nbd/protocol.js';
import { RawClient, goData, optionBytes, rawGo, rawGreet, readOptionReply, readSimpleReply, request, run, startServer, type Started } from './helpers.js';
import { sleep, waitFor } from '../lib/wait.js';

const MiB = 1024 * 1024;

/** A connection that reads the greeting and then says nothing, as the attacker did. */
function greetingOnly(port: number, localAddress: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress }, () => resolve(s));
    // Read (and drop) the greeting, so a close by the server is seen.
    s.resume();
    s.on('error', () => undefined);
    s.once('error', reject);
  });
}

describe('NBD limits', () => {
  let s: Started | undefined;
  const sockets: net.Socket[] = [];
  afterEach(async () => {
    for (const x of sockets.splice(0)) x.destroy();
    await s?.server.close();
    s = undefined;
  });

  it('200 greeting-only connections from one address do not stop nbdinfo from another', async () => {
    s = await startServer({ e: new MemoryExport({ size: MiB }) });
    for (let i = 0; i < 200; i++) sockets.push(await greetingOnly(s.port, '127.0.0.2'));
    const r = await run('nbdinfo', ['--size', s.url('e')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(String(MiB));
    // The attacker's address keeps at most its own share of handshake slots (8 by default).
    expect(s.server.stats().handshaking).toBeLessThanOrEqual(8);
  });

  it('attackers on 3 addresses topping up greeting-only connections as fast as the server drops them do not make 20 real clients fail', async () => {
    s = await startServer({ e: new MemoryExport({ size: MiB }) });
    const port = s.port;
    let stop = false;
    let dropped = 0;
    const attacker = async (address: string): Promise<void> => {
      const live = new Set<net.Socket>();
      while (!stop) {
        // Keep 100 connections open from this address; replace each one the server drops at once.
        while (live.size < 100 && !stop) {
          const sock = await greetingOnly(port, address).catch(() => null);
          if (sock === null) continue;
          live.add(sock);
          sockets.push(sock);
          sock.once('close', () => {
            live.delete(sock);
            dropped++;
          });
        }
        await sleep(1);
      }
    };
    const attackers = ['127.0.0.2', '127.0.0.3', '127.0.0.4'].map(attacker);
    await waitFor('the server has dropped many attacker connections', () => dropped >= 300);
    const results = [];
    for (let i = 0; i < 20; i++) results.push(await run('nbdinfo', ['--size', s.url('e')]));
    stop = true;
    for (const x of sockets) x.destroy();
    await Promise.all(attackers);
    expect(results.filter((r) => r.code !== 0).map((r) => `${r.code}: ${r.stderr}`)).toEqual([]);
    expect(results).toHaveLength(20);
  });

  it('when every handshake slot is held by clients that are talking, a newcomer is refused rather than one of them dropped', async () => {
    s = await startServer({ e: new MemoryExport({ size: MiB }) }, { maxHandshakes: 2, maxHandshakesPerAddress: 2 });
    const talking: RawClient[] = [];
    for (const address of ['127.0.0.2', '127.0.0.3']) {
      const c = await RawClient.connect(s.port, address);
      await rawGreet(c);
      talking.push(c);
    }
    const server = s.server;
    await waitFor('both have answered the greeting', () => server.stats().handshaking === 2);
    const late = await RawClient.connect(s.port, '127.0.0.4');
    await late.waitClosed();
    expect(talking.every((c) => !c.closed)).toBe(true);
    // The talking clients still finish their handshakes.
    for (const c of talking) {
      c.write(optionBytes(OPT.GO, goData('e')));
      for (;;) {
        const r = await readOptionReply(c);
        if (r.type === REP.ACK) break;
        expect(r.type).toBe(REP.INFO);
      }
      c.destroy();
    }
  });

  it('connections attached to an export have their own cap; a refused client is told why', async () => {
    s = await startServer({ e: new MemoryExport({ size: MiB }) }, { maxConnections: 2 });
    const a = await rawGo(s.port, 'e');
    const b = await rawGo(s.port, 'e');
    await expect(rawGo(s.port, 'e')).rejects.toThrow(/NBD connections attached \(limit 2\)/);
    a.c.write(request(CMD.DISC, 1n, 0n, 0));
    await a.c.waitClosed();
    await waitFor('the first connection is detached', () => s!.server.stats().exports[0]?.connections === 1);
    const c = await rawGo(s.port, 'e');
    c.c.destroy();
    b.c.destroy();
  });

  it('an attached connection that sends nothing is dropped after the idle timeout; one waiting on the export is not', async () => {
    const e = new GatedExport({ size: MiB });
    s = await startServer({ e }, { idleTimeoutMs: 300 });
    const idle = await rawGo(s.port, 'e');
    await idle.c.waitClosed();
    const d = await e.waitForDetach(1);
    expect(d.kind === 'detach' && d.info.reason).toMatch(/idle timeout/);

    const g = gate();
    e.writeGate = g.promise;
    const busy = await rawGo(s.port, 'e');
    busy.c.write(Buffer.concat([request(CMD.WRITE, 1n, 0n, 4096), Buffer.alloc(4096, 9)]));
    // Several idle periods pass while the export holds the write.
    await sleep(1000);
    expect(busy.c.closed).toBe(false);
    g.open();
    expect((await readSimpleReply(busy.c)).errno).toBe(0);
    busy.c.write(request(CMD.DISC, 2n, 0n, 0));
    await busy.c.waitClosed();
    const d2 = await e.waitForDetach(2);
    expect(d2.kind === 'detach' && (d2.info as DetachInfo).discReceived).toBe(true);
  });

  it('WRITEs short by one byte fill the budget once; other connections wait without buffering, and everything is given back when they close', async () => {
    const size = 64 * MiB;
    s = await startServer({ e: new MemoryExport({ size }) }, { memoryBudgetBytes: 4 * MiB });
    const clients: RawClient[] = [];
    for (let i = 0; i < 6; i++) {
      const { c } = await rawGo(s.port, 'e');
      clients.push(c);
      c.write(Buffer.concat([request(CMD.WRITE, BigInt(i), BigInt(i * 2 * MiB), 2 * MiB), Buffer.alloc(2 * MiB - 1, i)]));
    }
    const server = s.server;
    await waitFor('two payloads are buffered and four requests wait', () => {
      const m = server.stats().memory;
      return m.usedBytes === 4 * MiB && m.waitingRequests === 4 && m.queuedBytes >= 4 * MiB - 2;
    });
    const m = server.stats().memory;
    expect(m.usedBytes).toBe(4 * MiB);
    // The four waiting connections together hold less than one of their payloads.
    expect(m.queuedBytes).toBeLessThan(4 * MiB + 2 * MiB);
    for (const c of clients) c.destroy();
    await waitFor('every connection is gone', () => server.stats().connections === 0);
    expect(server.stats().memory).toEqual({ budgetBytes: 4 * MiB, usedBytes: 0, waitingRequests: 0, queuedBytes: 0 });
  });

  it('a WRITE waiting for budget runs once another request gives its bytes back', async () => {
    const e = new GatedExport({ size: 4 * MiB });
    s = await startServer({ e }, { memoryBudgetBytes: MiB });
    const g = gate();
    e.writeGate = g.promise;
    const a = await rawGo(s.port, 'e');
    const b = await rawGo(s.port, 'e');
    a.c.write(Buffer.concat([request(CMD.WRITE, 1n, 0n, MiB), Buffer.alloc(MiB, 0xaa)]));
    const server = s.server;
    await waitFor('the first write holds the budget', () => server.stats().memory.usedBytes === MiB);
    b.c.write(Buffer.concat([request(CMD.WRITE, 2n, BigInt(MiB), MiB), Buffer.alloc(MiB, 0xbb)]));
    await waitFor('the second write waits', () => server.stats().memory.waitingRequests === 1);
    g.open();
    expect((await readSimpleReply(a.c)).errno).toBe(0);
    expect((await readSimpleReply(b.c)).errno).toBe(0);
    const expected = Buffer.alloc(4 * MiB);
    expected.fill(0xaa, 0, MiB);
    expected.fill(0xbb, MiB, 2 * MiB);
    expect(e.contents().equals(expected)).toBe(true);
    // A READ takes budget too, and gives it back once its reply is sent.
    a.c.write(request(CMD.READ, 3n, 0n, 2 * MiB));
    expect((await readSimpleReply(a.c)).errno).toBe(0);
    expect((await a.c.read(2 * MiB)).equals(expected.subarray(0, 2 * MiB))).toBe(true);
    await waitFor('the budget is back to zero', () => server.stats().memory.usedBytes === 0);
    a.c.destroy();
    b.c.destroy();
  });
});

describe('MemoryBudget', () => {
  it('serves waiters in order, never lets a later request overtake, grants an oversize request when empty, and withdraws cancelled ones', () => {
    const b = new MemoryBudget(10);
    expect(b.tryAcquire(6)).toBe(true);
    const granted: string[] = [];
    b.wait(8, () => granted.push('big'));
    // 2 bytes would fit, but a queued request comes first.
    expect(b.tryAcquire(2)).toBe(false);
    const cancel = b.wait(1, () => granted.push('cancelled'));
    b.wait(30, () => granted.push('oversize'));
    cancel();
    b.release(6);
    expect(granted).toEqual(['big']);
    expect(b.usedBytes).toBe(8);
    b.release(8);
    expect(granted).toEqual(['big', 'oversize']);
    expect(b.usedBytes).toBe(30);
    b.release(30);
    expect(b.usedBytes).toBe(0);
    expect(b.waiting).toBe(0);
    expect(() => b.release(1)).toThrow(/accounting bug/);
  });
});
