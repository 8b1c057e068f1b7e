/** The real server object on loopback, unprivileged high ports; broadcasts redirected to the test socket. */
import { createSocket, type Socket } from 'node:dgram';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nullLogger } from '../../../src/lib/log.js';
import { type DhcpMode, DhcpServer, parseDhcpPacket } from '../../../src/pxe/dhcp/index.js';
import { testBooter } from './booter.js';
import { fuzzPackets } from './fuzz.js';
import { opt, ovmfDiscover, rawPacket } from './packets.js';

interface Reply {
  data: Buffer;
  port: number;
}

class Client {
  readonly replies: Reply[] = [];
  private waiters: (() => void)[] = [];
  private constructor(readonly sock: Socket) {
    sock.on('message', (data, r) => {
      this.replies.push({ data, port: r.port });
      for (const w of this.waiters.splice(0)) w();
    });
  }
  static open(): Promise<Client> {
    return new Promise((resolve) => {
      const s = createSocket('udp4');
      s.bind({ address: '127.0.0.1', port: 0 }, () => resolve(new Client(s)));
    });
  }
  get port(): number {
    return this.sock.address().port;
  }
  send(pkt: Buffer, port: number): Promise<void> {
    return new Promise((resolve, reject) => this.sock.send(pkt, port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));
  }
  /** Resolves once a reply with this xid arrived; the test timeout is the only deadline. */
  async reply(xid: number): Promise<Reply> {
    for (;;) {
      const hit = this.replies.find((r) => r.data.length >= 8 && r.data.readUInt32BE(4) === xid);
      if (hit) return hit;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }
  close(): void {
    this.sock.close();
  }
}

describe('DhcpServer on loopback', () => {
  let client: Client;
  let server: DhcpServer | undefined;
  let dir: string;

  beforeEach(async () => {
    client = await Client.open();
    dir = await mkdtemp(join(tmpdir(), 'ncdhcp-'));
  });
  afterEach(async () => {
    await server?.stop();
    server = undefined;
    client.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function start(mode: DhcpMode): Promise<DhcpServer> {
    server = new DhcpServer({
      mode,
      serverIp: '127.0.0.1',
      httpPort: 8080,
      bindAddress: '127.0.0.1',
      ports: { dhcp: 0, proxy: 0, client: client.port },
      broadcastAddress: '127.0.0.1',
      pool: { start: '10.50.0.10', end: '10.50.255.250', netmask: '255.255.0.0', leaseSeconds: 600 },
      leaseFile: join(dir, 'leases.json'),
      booter: testBooter(),
      logger: nullLogger(),
    });
    await server.start();
    return server;
  }

  it('proxy: DISCOVER on the DHCP port and REQUEST on the boot server port', async () => {
    const s = await start('proxy');
    await client.send(ovmfDiscover(1, '02:00:00:00:01:01'), s.boundPorts.dhcp);
    const offer = await client.reply(1);
    expect(offer.port).toBe(s.boundPorts.dhcp);
    const p = parseDhcpPacket(offer.data);
    expect(p.ok && p.packet.options.get(53)?.[0]).toBe(2);
    expect(p.ok && p.packet.file).toBe('snponly.efi');
    await client.send(ovmfDiscover(2, '02:00:00:00:01:01', 3, '127.0.0.1'), s.boundPorts.proxy);
    const ack = await client.reply(2);
    expect(ack.port).toBe(s.boundPorts.proxy);
    const a = parseDhcpPacket(ack.data);
    expect(a.ok && a.packet.options.get(53)?.[0]).toBe(5);
    expect(s.sent.get('OFFER')).toBe(1);
    expect(s.sent.get('ACK')).toBe(1);
  });

  it('a port already in use fails start with a message naming it', async () => {
    const s = await start('proxy');
    const other = new DhcpServer({ mode: 'proxy', serverIp: '127.0.0.1', httpPort: 1, bindAddress: '127.0.0.1', ports: { dhcp: s.boundPorts.dhcp, proxy: 0 }, booter: testBooter(), logger: nullLogger() });
    await expect(other.start()).rejects.toThrow(new RegExp(`127\\.0\\.0\\.1:${s.boundPorts.dhcp}`));
  });

  it('mode off binds nothing', async () => {
    const s = await start('off');
    expect(s.boundPorts).toEqual({ dhcp: 0, proxy: 0 });
  });

  it('configuration errors are refused up front', () => {
    expect(() => new DhcpServer({ mode: 'proxy', serverIp: 'server', httpPort: 80, booter: testBooter(), logger: nullLogger() })).toThrow(/serverIp/);
    expect(() => new DhcpServer({ mode: 'full', serverIp: '10.0.0.1', httpPort: 80, booter: testBooter(), logger: nullLogger() })).toThrow(/pool/);
  });

  for (const mode of ['proxy', 'full'] as const) {
    it(`live fuzz (${mode}): 3000 hostile packets on both ports, then a good DISCOVER is answered${mode === 'full' ? ' and the lease it takes is in the lease file' : ''}`, async () => {
      const s = await start(mode);
      const packets = fuzzPackets(mode === 'proxy' ? 7 : 8, 3000);
      for (const [i, pkt] of packets.entries()) {
        await client.send(pkt, i % 4 === 0 ? s.boundPorts.proxy : s.boundPorts.dhcp);
        if (i % 100 === 0) await new Promise((r) => setImmediate(r));
      }
      const mac = '02:00:00:00:09:09';
      await client.send(ovmfDiscover(0xabcdef, mac), s.boundPorts.dhcp);
      const offer = await client.reply(0xabcdef);
      const p = parseDhcpPacket(offer.data);
      expect(p.ok && p.packet.options.get(53)?.[0]).toBe(2);
      expect(s.parseErrors).toBeGreaterThan(100);
      if (mode === 'full') {
        // A good client takes its address after the fuzz; the lease file must hold that lease, in valid JSON.
        const ip = p.ok ? p.packet.yiaddr : '';
        expect(ip).toMatch(/^10\.50\./);
        await client.send(fullRequest(0xabcdf0, mac, ip), s.boundPorts.dhcp);
        const ack = parseDhcpPacket((await client.reply(0xabcdf0)).data);
        expect(ack.ok && ack.packet.options.get(53)?.[0]).toBe(5);
        await s.stop();
        const file = JSON.parse(await readFile(join(dir, 'leases.json'), 'utf8')) as { leases: Array<{ mac: string; ip: string; state: string }> };
        expect(file.leases.filter((l) => l.mac === mac)).toEqual([expect.objectContaining({ ip, state: 'bound' })]);
      }
    });
  }

  it('a burst of distinct clients each gets exactly one OFFER, addressed to it', async () => {
    const s = await start('proxy');
    const count = 300;
    const window = 25;
    const mac = (i: number): string => `02:00:00:01:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;
    // In windows: the kernel may drop datagrams from an overfull loopback buffer, which says nothing about
    // the server. The rate a burst reaches is measured by bench/dhcp.ts, not here.
    for (let first = 0; first < count; first += window) {
      const batch = Array.from({ length: Math.min(window, count - first) }, (_, k) => first + k);
      await Promise.all(batch.map((i) => client.send(ovmfDiscover(0x200000 + i, mac(i)), s.boundPorts.dhcp)));
      await Promise.all(batch.map((i) => client.reply(0x200000 + i)));
    }
    const offers = client.replies.map((r) => parseDhcpPacket(r.data)).filter((p) => p.ok && p.packet.options.get(53)?.[0] === 2);
    expect(offers).toHaveLength(count);
    const seen = new Map<number, string>();
    for (const o of offers) if (o.ok) seen.set(o.packet.xid, o.packet.chaddr.toString('hex').match(/../g)!.join(':'));
    expect(seen.size).toBe(count);
    for (let i = 0; i < count; i++) expect(seen.get(0x200000 + i)).toBe(mac(i));
    expect(s.sent.get('OFFER')).toBe(count);
  });
});

/** A full-mode REQUEST in the selecting state: takes `ip` from our offer (server id 127.0.0.1). */
function fullRequest(xid: number, mac: string, ip: string): Buffer {
  return rawPacket({
    xid,
    mac,
    flags: 0x8000,
    options: [
      ...opt(53, [3]),
      ...opt(50, ip.split('.').map(Number)),
      ...opt(54, [127, 0, 0, 1]),
      ...opt(93, [0x00, 0x07]),
      ...opt(60, 'PXEClient:Arch:00007:UNDI:003000'),
      255,
    ],
  });
}
