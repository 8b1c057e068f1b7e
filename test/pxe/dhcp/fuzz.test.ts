import { describe, expect, it } from 'vitest';
import { nullLogger } from '../../../src/lib/log.js';
import { buildReply, describeRequest, DhcpHandler, LeasePool, parseDhcpPacket } from '../../../src/pxe/dhcp/index.js';
import { testBooter } from './booter.js';
import { fuzzPackets } from './fuzz.js';

describe('parser fuzz', () => {
  it('120 000 seeded mutated and random packets: typed result every time, no throw', () => {
    const counts = new Map<string, number>();
    let replies = 0;
    for (const seed of [1, 2, 3, 4]) {
      for (const pkt of fuzzPackets(seed, 30_000)) {
        const r = parseDhcpPacket(pkt);
        if (r.ok) {
          counts.set('ok', (counts.get('ok') ?? 0) + 1);
          const req = describeRequest(r.packet);
          expect(typeof req.mac).toBe('string');
          // Our reply to whatever parsed must itself be a valid packet.
          const reply = buildReply(req, { messageType: 2, serverIp: '10.0.0.1', boot: { ok: true, kind: 'bios-loader', filename: 'undionly.kpxe', vendorClass: 'PXEClient' } });
          expect(parseDhcpPacket(reply).ok).toBe(true);
          replies += 1;
        } else {
          expect(r.error.kind).toBe('dhcp-parse-error');
          counts.set(r.error.code, (counts.get(r.error.code) ?? 0) + 1);
        }
      }
    }
    // The corpus must reach both the accept path and every rejection path, or the fuzz proves little.
    for (const code of ['ok', 'too-short', 'bad-op', 'bad-hlen', 'no-magic-cookie', 'option-overrun', 'bad-overload']) {
      expect(counts.get(code) ?? 0, `too few packets ended as ${code}`).toBeGreaterThan(20);
    }
    expect(replies).toBe(counts.get('ok'));
  });

  it('20 000 mutated packets through the proxy and full-mode handlers: never throws', async () => {
    const pool = new LeasePool({ start: '10.0.0.10', end: '10.0.3.250', netmask: '255.255.252.0', leaseSeconds: 600 });
    const handlers = [
      new DhcpHandler({ mode: 'proxy', serverIp: '10.0.0.1', httpPort: 80, booter: testBooter(), logger: nullLogger(), ports: { server: 67, client: 68, broadcastAddress: '255.255.255.255' } }),
      new DhcpHandler({ mode: 'full', serverIp: '10.0.0.1', httpPort: 80, booter: testBooter(), pool, logger: nullLogger(), ports: { server: 67, client: 68, broadcastAddress: '255.255.255.255' } }),
    ];
    let answered = 0;
    for (const [i, pkt] of fuzzPackets(99, 20_000).entries()) {
      for (const h of handlers) {
        const out = await h.handle(pkt, { address: '10.0.0.50', port: 68 }, i % 3 === 0 ? 'proxy' : 'dhcp');
        if (out) {
          answered += 1;
          expect(parseDhcpPacket(out.data).ok).toBe(true);
        }
      }
    }
    expect(answered).toBeGreaterThan(100);
  });
});
