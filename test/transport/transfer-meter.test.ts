/**
 * The transfer meter every grant puts in its export's stream: a deploy counts what clients read,
 * a capture what they write (on the wire) and zero (disk covered only), and one listener hears each step.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { TransferMeter, type MeterStep } from '../../src/transport/transfer-meter.js';
import { NbdGrants } from '../../src/transport/grants.js';
import type { NbdExport } from '../../src/nbd/export.js';
import { MemoryExport } from '../nbd/memory-export.js';

const KiB = 1024;

/** A memory export that takes vectored writes, as a capture export does. */
class VectoredMemoryExport extends MemoryExport {
  writev(offset: number, slices: readonly Buffer[], fua: boolean): Promise<void> {
    return this.write(offset, Buffer.concat(slices), fua);
  }
}

describe('TransferMeter', () => {
  it('counts a deploy by the data clients read: holes are neither wire bytes nor covered', async () => {
    const data = Buffer.alloc(256 * KiB);
    data.fill(7, 0, 64 * KiB);
    const steps: MeterStep[] = [];
    const meter = new TransferMeter('deploy', (step, m) => {
      steps.push(step);
      expect(m).toBe(meter);
    });
    const exp = meter.measure(new MemoryExport({ size: data.length, data }));
    await exp.read(0, 128 * KiB);
    await exp.read(128 * KiB, 128 * KiB);
    expect(steps).toEqual([{ wire: 64 * KiB, covered: 64 * KiB }]);
    expect(meter.wireBytes).toBe(64 * KiB);
    expect(meter.coveredBytes).toBe(64 * KiB);
    expect(meter.describe()).toBe(`${64 * KiB} bytes read over NBD`);
  });

  it('counts a capture by what clients write; zeroed and trimmed ranges cover the disk without crossing the wire; reads do not count', async () => {
    const steps: MeterStep[] = [];
    const meter = new TransferMeter('capture', (step) => steps.push(step));
    const exp = meter.measure(new VectoredMemoryExport({ size: 256 * KiB }));
    expect(exp.writev).toBeDefined();
    await exp.write(0, Buffer.alloc(4 * KiB, 1), false);
    await exp.writev?.(4 * KiB, [Buffer.alloc(KiB, 2), Buffer.alloc(KiB, 3)], false);
    await exp.writeZeroes(64 * KiB, 64 * KiB, { fua: false, fastZero: false, mayTrim: true });
    await exp.trim(128 * KiB, 64 * KiB, false);
    await exp.read(0, 8 * KiB);
    expect(steps).toEqual([
      { wire: 4 * KiB, covered: 4 * KiB },
      { wire: 2 * KiB, covered: 2 * KiB },
      { wire: 0, covered: 64 * KiB },
      { wire: 0, covered: 64 * KiB },
    ]);
    expect(meter.wireBytes).toBe(6 * KiB);
    expect(meter.coveredBytes).toBe(134 * KiB);
    expect(meter.describe()).toBe(`${6 * KiB} bytes written over NBD (${134 * KiB} bytes of disk covered)`);
  });

  it('keeps counting across connections and works without a listener', async () => {
    const meter = new TransferMeter('capture');
    const inner = new MemoryExport({ size: 64 * KiB });
    const first = meter.measure(inner);
    await first.write(0, Buffer.alloc(100, 1), false);
    await first.write(100, Buffer.alloc(50, 1), true);
    expect(meter.wireBytes).toBe(150);
    expect(meter.describe()).toBe('150 bytes written over NBD');
  });
});

describe('NbdGrants and the meter', () => {
  let grants: NbdGrants | null = null;
  afterEach(async () => {
    await grants?.closeAll('test over');
    grants = null;
  });

  function logged(): { lines: Array<Record<string, unknown>>; grants: NbdGrants } {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    });
    grants = new NbdGrants(pino({ level: 'info' }, sink));
    return { lines, grants };
  }

  const peer = { connectionId: 1, address: '127.0.0.1', port: 5000 };

  it('refuses a meter of the other kind', async () => {
    const { grants: g } = logged();
    const open = async () => ({ export: new MemoryExport({ size: 4096 }), close: async () => undefined, finished: () => false });
    await expect(g.grant({ kind: 'deploy', image: 'img', ttlSeconds: 60, meter: new TransferMeter('capture'), open })).rejects.toThrow(/deploy grant was given a capture meter/);
    expect(g.count()).toBe(0);
  });

  it('puts the meter in the granted export’s stream and states what moved when the grant closes', async () => {
    const { lines, grants: g } = logged();
    const inner = new MemoryExport({ size: 64 * KiB, data: Buffer.alloc(64 * KiB, 5) });
    const meter = new TransferMeter('deploy');
    const { name } = await g.grant({ kind: 'deploy', image: 'img', ttlSeconds: 60, meter, open: async () => ({ export: inner, close: async () => undefined, finished: () => false }) });
    const exp = g.resolve(name, peer) as NbdExport;
    exp.attach(peer);
    await exp.read(0, 10 * KiB);
    exp.detach(peer, { clean: true, discReceived: true, wrote: false, reason: 'disc' });
    expect(inner.events.map((e) => e.kind)).toEqual(['attach', 'detach']);
    expect(meter.wireBytes).toBe(10 * KiB);
    await g.revoke(name, 'expired');
    const closed = lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('NBD export closed'));
    expect(closed).toMatchObject({ image: 'img', kind: 'deploy', reason: 'expired', bytesOnWire: 10 * KiB, coveredBytes: 10 * KiB, msg: `NBD export closed (expired): ${10 * KiB} bytes read over NBD` });
  });

  it('revokes a finished capture’s grant when its last connection leaves', async () => {
    const { grants: g } = logged();
    let finished = false;
    const meter = new TransferMeter('capture');
    const { name } = await g.grant({
      kind: 'capture',
      image: 'img',
      ttlSeconds: 60,
      meter,
      open: async () => ({ export: new MemoryExport({ size: 64 * KiB }), close: async () => undefined, finished: () => finished }),
    });
    const exp = g.resolve(name, peer) as NbdExport;
    exp.attach(peer);
    exp.attach({ ...peer, connectionId: 2 });
    await exp.write(0, Buffer.alloc(KiB, 1), false);
    finished = true;
    exp.detach(peer, { clean: true, discReceived: true, wrote: true, reason: 'disc' });
    expect(g.count()).toBe(1);
    exp.detach({ ...peer, connectionId: 2 }, { clean: true, discReceived: true, wrote: false, reason: 'disc' });
    await expect.poll(() => g.count()).toBe(0);
    expect(meter.wireBytes).toBe(KiB);
  });
});
