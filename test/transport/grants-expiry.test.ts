/**
 * An expired nbd:// URL is refused as expired, before and after the sweep that frees its export:
 * a client that comes late hears why, not "no such export".
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { NbdGrants } from '../../src/transport/grants.js';
import { TransferMeter } from '../../src/transport/transfer-meter.js';
import { nullLogger } from '../../src/lib/log.js';
import { MemoryExport } from '../nbd/memory-export.js';

const peer = { connectionId: 1, address: '127.0.0.1', port: 5000 };

afterEach(() => {
  vi.useRealTimers();
});

describe('expired grants', () => {
  it('say "expired" before and after the sweep, and "no such export" only for names never issued', async () => {
    vi.useFakeTimers();
    const grants = new NbdGrants(nullLogger());
    let closed = 0;
    const { name } = await grants.grant({
      kind: 'deploy', image: 'img', ttlSeconds: 1, meter: new TransferMeter('deploy'),
      open: async () => ({ export: new MemoryExport({ size: 4096 }), close: async () => void closed++, finished: () => false }),
    });
    vi.advanceTimersByTime(1500);
    expect(grants.resolve(name, peer)).toMatchObject({ refused: 'policy', reason: expect.stringMatching(/has expired/) });
    // The sweep (every 10 s) frees the export; the name is still known to have expired.
    await vi.advanceTimersByTimeAsync(10_000);
    expect(closed).toBe(1);
    expect(grants.count()).toBe(0);
    expect(grants.resolve(name, peer)).toMatchObject({ refused: 'policy', reason: expect.stringMatching(/has expired/) });
    expect(grants.resolve('d-never-issued-0123456789', peer)).toMatchObject({ refused: 'unknown' });
    await grants.closeAll('test over');
  });
});
