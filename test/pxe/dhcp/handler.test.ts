import { mkdtemp, readFile, rm, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nullLogger } from '../../../src/lib/log.js';
import {
  decodeEncapsulated,
  DhcpHandler,
  type DhcpHooks,
  type DhcpMode,
  type FirstStageBooter,
  LeasePool,
  LeaseStore,
  type Outgoing,
  parseDhcpPacket,
  type PoolConfig,
  type PxeRequestInfo,
  type DhcpPacket,
} from '../../../src/pxe/dhcp/index.js';
import { testBooter } from './booter.js';
import { httpBootDiscover, ipxeBiosDiscover, opt, ovmfDiscover, paddedPxeDiscover, rawPacket, udhcpcDiscover } from './packets.js';

const SERVER = '10.9.0.1';
const PORTS = { server: 67, client: 68, broadcastAddress: '255.255.255.255' };
const FROM68 = { address: '0.0.0.0', port: 68 };
const POOL: PoolConfig = { start: '10.9.0.100', end: '10.9.0.102', netmask: '255.255.255.0', router: '10.9.0.1', dns: ['10.9.0.53'], leaseSeconds: 3600 };

function reply(out: Outgoing | undefined): DhcpPacket {
  expect(out).toBeDefined();
  const r = parseDhcpPacket((out as Outgoing).data);
  if (!r.ok) throw new Error(r.error.message);
  return r.packet;
}

function handler(mode: DhcpMode, extra: { pool?: LeasePool; store?: LeaseStore; hooks?: DhcpHooks; booter?: FirstStageBooter } = {}): DhcpHandler {
  return new DhcpHandler({ mode, serverIp: SERVER, httpPort: 8080, logger: nullLogger(), ports: PORTS, booter: testBooter(), ...extra });
}

function request(xid: number, mac: string, o: { requested?: string; server?: string; ciaddr?: string; type?: number; clientId?: boolean } = {}): Buffer {
  const macBytes = mac.split(':').map((h) => parseInt(h, 16));
  return rawPacket({
    xid,
    mac,
    ciaddr: o.ciaddr,
    options: [
      ...opt(53, [o.type ?? 3]),
      ...(o.clientId === false ? [] : opt(61, [1, ...macBytes])),
      ...(o.requested ? opt(50, o.requested.split('.').map(Number)) : []),
      ...(o.server ? opt(54, o.server.split('.').map(Number)) : []),
      255,
    ],
  });
}

describe('proxy mode', () => {
  const MAC = '52:54:00:00:00:01';

  it('OVMF DISCOVER gets a proxy OFFER: no address, our server id, PXEClient, option 43, UUID echoed, snponly.efi', async () => {
    const seen: PxeRequestInfo[] = [];
    const h = handler('proxy', { hooks: { onPxeRequest: (i) => seen.push(i) } });
    const out = await h.handle(ovmfDiscover(0x1234, MAC), FROM68, 'dhcp');
    const p = reply(out);
    expect(out?.to).toEqual({ address: '255.255.255.255', port: 68 });
    expect(p.op).toBe(2);
    expect(p.xid).toBe(0x1234);
    expect(p.yiaddr).toBe('0.0.0.0');
    expect(p.siaddr).toBe(SERVER);
    expect(p.file).toBe('snponly.efi');
    expect(p.flags).toBe(0x8000);
    expect(p.options.get(53)).toEqual(Buffer.from([2]));
    expect(p.options.get(54)).toEqual(Buffer.from([10, 9, 0, 1]));
    expect(p.options.get(60)?.toString()).toBe('PXEClient');
    expect(p.options.get(67)?.toString()).toBe('snponly.efi');
    expect(p.options.get(66)?.toString()).toBe(SERVER);
    expect(decodeEncapsulated(p.options.get(43))?.get(6)).toEqual(Buffer.from([8]));
    expect(p.options.get(97)?.length).toBe(17);
    expect(p.options.has(175)).toBe(false);
    expect(p.options.has(51)).toBe(false);
    expect((out as Outgoing).data.length).toBeGreaterThanOrEqual(300);
    expect(seen).toEqual([{ mac: MAC, arch: 7, vendorClass: 'PXEClient:Arch:00007:UNDI:003000', userClass: undefined, ip: undefined, isIpxe: false }]);
  });

  it('iPXE gets its script URL and option 175.176 = 1', async () => {
    const p = reply(await handler('proxy').handle(ipxeBiosDiscover(5, MAC), FROM68, 'dhcp'));
    expect(p.options.get(67)?.toString()).toBe('http://10.9.0.1:8080/boot/ipxe?mac=${net0/mac}&platform=${platform}&arch=${buildarch}&chip=${net0/chip}');
    expect(decodeEncapsulated(p.options.get(175))?.get(176)).toEqual(Buffer.from([1]));
  });

  it('BIOS PXE without iPXE gets undionly.kpxe', async () => {
    const p = reply(await handler('proxy').handle(paddedPxeDiscover(6, MAC), FROM68, 'dhcp'));
    expect(p.file).toBe('undionly.kpxe');
  });

  it('HTTP boot gets HTTPClient and a URL, no option 43', async () => {
    const p = reply(await handler('proxy').handle(httpBootDiscover(7, MAC), FROM68, 'dhcp'));
    expect(p.options.get(60)?.toString()).toBe('HTTPClient');
    expect(p.options.get(67)?.toString()).toBe('http://10.9.0.1:8080/boot/ipxe.efi');
    expect(p.options.has(43)).toBe(false);
  });

  it('non-PXE DISCOVER gets nothing', async () => {
    expect(await handler('proxy').handle(udhcpcDiscover(8, MAC), FROM68, 'dhcp')).toBeUndefined();
  });

  it('REQUEST to us is ACKed, REQUEST to another server is ignored', async () => {
    const h = handler('proxy');
    const pxeRequest = (server: number[]): Buffer =>
      rawPacket({ xid: 9, mac: MAC, options: [...opt(53, [3]), ...opt(54, server), ...opt(93, [0, 7]), ...opt(60, 'PXEClient:Arch:00007:UNDI:003000'), 255] });
    const ack = reply(await h.handle(pxeRequest([10, 9, 0, 1]), FROM68, 'dhcp'));
    expect(ack.options.get(53)).toEqual(Buffer.from([5]));
    expect(ack.yiaddr).toBe('0.0.0.0');
    expect(ack.file).toBe('snponly.efi');
    expect(await h.handle(pxeRequest([10, 9, 0, 2]), FROM68, 'dhcp')).toBeUndefined();
  });

  it('notes the address a PXE client requests from the office server, without answering', async () => {
    const seen: PxeRequestInfo[] = [];
    const h = handler('proxy', { hooks: { onPxeRequest: (i) => seen.push(i) } });
    const officeRequest = rawPacket({
      xid: 10,
      mac: MAC,
      options: [...opt(53, [3]), ...opt(54, [10, 9, 0, 2]), ...opt(50, [10, 9, 0, 77]), ...opt(93, [0, 0]), ...opt(60, 'PXEClient:Arch:00000:UNDI:002001'), 255],
    });
    expect(await h.handle(officeRequest, FROM68, 'dhcp')).toBeUndefined();
    expect(seen).toMatchObject([{ mac: MAC, arch: 0, ip: '10.9.0.77' }]);
    // A non-PXE client's REQUEST stays invisible in proxy mode.
    const plain = rawPacket({ xid: 11, mac: '52:54:00:00:00:09', options: [...opt(53, [3]), ...opt(54, [10, 9, 0, 2]), ...opt(50, [10, 9, 0, 78]), 255] });
    expect(await h.handle(plain, FROM68, 'dhcp')).toBeUndefined();
    expect(seen).toHaveLength(1);
  });

  it('port 4011 REQUEST gets a unicast ACK to the source with the boot file', async () => {
    const from = { address: '10.9.0.77', port: 68 };
    const out = await handler('proxy').handle(ovmfDiscover(10, MAC, 3, '10.9.0.77'), from, 'proxy');
    const p = reply(out);
    expect(out?.to).toEqual(from);
    expect(p.options.get(53)).toEqual(Buffer.from([5]));
    expect(p.ciaddr).toBe('10.9.0.77');
    expect(p.yiaddr).toBe('0.0.0.0');
    expect(p.file).toBe('snponly.efi');
  });

  it('relayed DISCOVER is answered to the relay on port 67', async () => {
    const buf = ovmfDiscover(11, MAC);
    Buffer.from([10, 20, 0, 1]).copy(buf, 24);
    const out = await handler('proxy').handle(buf, { address: '10.20.0.1', port: 67 }, 'dhcp');
    expect(out?.to).toEqual({ address: '10.20.0.1', port: 67 });
    expect(reply(out).giaddr).toBe('10.20.0.1');
  });

  it('a throwing hook does not stop the answer, and the booter\'s per-host EFI loader picks ipxe.efi', async () => {
    const h = handler('proxy', {
      hooks: {
        onPxeRequest: () => {
          throw new Error('boom');
        },
      },
      booter: testBooter({ ipxeEfiMacs: [MAC] }),
    });
    expect(reply(await h.handle(ovmfDiscover(12, MAC), FROM68, 'dhcp')).file).toBe('ipxe.efi');
  });

  it('a throwing booter is no boot file: proxy mode stays silent instead of failing the message', async () => {
    const seen: PxeRequestInfo[] = [];
    const h = handler('proxy', {
      hooks: { onPxeRequest: (i) => seen.push(i) },
      booter: {
        firstStage: () => {
          throw new Error('policy bug');
        },
      },
    });
    expect(await h.handle(ovmfDiscover(14, MAC), FROM68, 'dhcp')).toBeUndefined();
    expect(seen).toEqual([]);
  });

  it('mode off answers nothing', async () => {
    expect(await handler('off').handle(ovmfDiscover(13, MAC), FROM68, 'dhcp')).toBeUndefined();
  });
});

describe('full mode', () => {
  let dir: string;
  let clock: number;
  const now = (): number => clock;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ncdhcp-'));
    clock = Date.now();
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function setup(): { h: DhcpHandler; pool: LeasePool; store: LeaseStore } {
    const pool = new LeasePool(POOL, now);
    const store = new LeaseStore(join(dir, 'leases.json'), nullLogger());
    return { h: handler('full', { pool, store }), pool, store };
  }

  it('DISCOVER/OFFER/REQUEST/ACK with network options; persisted', async () => {
    const { h } = setup();
    const offer = reply(await h.handle(udhcpcDiscover(1, '02:00:00:00:00:01'), FROM68, 'dhcp'));
    expect(offer.yiaddr).toBe('10.9.0.100');
    expect(offer.options.get(53)).toEqual(Buffer.from([2]));
    expect(offer.options.get(1)).toEqual(Buffer.from([255, 255, 255, 0]));
    expect(offer.options.get(3)).toEqual(Buffer.from([10, 9, 0, 1]));
    expect(offer.options.get(6)).toEqual(Buffer.from([10, 9, 0, 53]));
    expect(offer.options.get(28)).toEqual(Buffer.from([10, 9, 0, 255]));
    expect(offer.options.get(51)?.readUInt32BE(0)).toBe(3600);
    expect(offer.options.get(58)?.readUInt32BE(0)).toBe(1800);
    expect(offer.options.get(59)?.readUInt32BE(0)).toBe(3150);
    expect(offer.options.has(67)).toBe(false);
    const ack = reply(await h.handle(request(2, '02:00:00:00:00:01', { requested: '10.9.0.100', server: SERVER }), FROM68, 'dhcp'));
    expect(ack.options.get(53)).toEqual(Buffer.from([5]));
    expect(ack.yiaddr).toBe('10.9.0.100');
    const file = JSON.parse(await readFile(join(dir, 'leases.json'), 'utf8')) as { leases: { ip: string; state: string }[] };
    expect(file.leases).toEqual([expect.objectContaining({ ip: '10.9.0.100', state: 'bound' })]);
    expect((await readdir(dir)).filter((f) => f.includes('tmp'))).toEqual([]);
  });

  it('PXE client in full mode gets a lease and the boot options', async () => {
    const { h } = setup();
    const offer = reply(await h.handle(ovmfDiscover(1, '02:00:00:00:00:09'), FROM68, 'dhcp'));
    expect(offer.yiaddr).toBe('10.9.0.100');
    expect(offer.file).toBe('snponly.efi');
    expect(offer.options.get(60)?.toString()).toBe('PXEClient');
    expect(offer.options.get(51)?.readUInt32BE(0)).toBe(3600);
  });

  it('no double allocation: an offer reserves, a bound address is refused to others', async () => {
    const { h } = setup();
    const a = reply(await h.handle(udhcpcDiscover(1, '02:00:00:00:00:01'), FROM68, 'dhcp'));
    const b = reply(await h.handle(udhcpcDiscover(2, '02:00:00:00:00:02'), FROM68, 'dhcp'));
    expect(a.yiaddr).not.toBe(b.yiaddr);
    // B tries to take A's offered address.
    const nak = await h.handle(request(3, '02:00:00:00:00:02', { requested: a.yiaddr, server: SERVER }), FROM68, 'dhcp');
    const n = reply(nak);
    expect(n.options.get(53)).toEqual(Buffer.from([6]));
    expect(nak?.to.address).toBe('255.255.255.255');
    expect(n.yiaddr).toBe('0.0.0.0');
    // A's offer expires, then B may have it.
    clock += 61_000;
    const ack = reply(await h.handle(request(4, '02:00:00:00:00:02', { requested: a.yiaddr, server: SERVER }), FROM68, 'dhcp'));
    expect(ack.options.get(53)).toEqual(Buffer.from([5]));
  });

  it('one machine keeps one address from PXE ROM (no option 61) to iPXE (61 = htype + MAC)', async () => {
    const { h } = setup();
    const mac = '52:54:00:00:00:77';
    const rom = reply(await h.handle(ovmfDiscover(1, mac), FROM68, 'dhcp'));
    await h.handle(request(2, mac, { requested: rom.yiaddr, server: SERVER, clientId: false }), FROM68, 'dhcp');
    const ipxe = reply(await h.handle(ipxeBiosDiscover(3, mac), FROM68, 'dhcp'));
    expect(ipxe.yiaddr).toBe(rom.yiaddr);
    expect(ipxe.options.get(67)?.toString()).toMatch(/\/boot\/ipxe\?mac=/);
  });

  it('pool exhaustion: no offer', async () => {
    const { h } = setup();
    for (let i = 1; i <= 3; i++) expect(await h.handle(udhcpcDiscover(i, `02:00:00:00:01:0${i}`), FROM68, 'dhcp')).toBeDefined();
    expect(await h.handle(udhcpcDiscover(9, '02:00:00:00:01:09'), FROM68, 'dhcp')).toBeUndefined();
  });

  it('client that chose another server releases our offer', async () => {
    const { h, pool } = setup();
    await h.handle(udhcpcDiscover(1, '02:00:00:00:00:01'), FROM68, 'dhcp');
    expect(await h.handle(request(2, '02:00:00:00:00:01', { requested: '10.9.0.200', server: '10.9.0.2' }), FROM68, 'dhcp')).toBeUndefined();
    expect(pool.recordFor('10.9.0.100')).toBeUndefined();
  });

  it('renew (ciaddr, unicast reply), init-reboot, NAK for wrong network, release, decline, inform', async () => {
    const { h, pool } = setup();
    const mac = '02:00:00:00:00:01';
    await h.handle(udhcpcDiscover(1, mac), FROM68, 'dhcp');
    await h.handle(request(2, mac, { requested: '10.9.0.100', server: SERVER }), FROM68, 'dhcp');
    clock += 1000_000;
    const renew = await h.handle(request(3, mac, { ciaddr: '10.9.0.100' }), { address: '10.9.0.100', port: 68 }, 'dhcp');
    expect(renew?.to).toEqual({ address: '10.9.0.100', port: 68 });
    const rp = reply(renew);
    expect(rp.options.get(53)).toEqual(Buffer.from([5]));
    expect(rp.ciaddr).toBe('10.9.0.100');
    expect(pool.leaseOf(`hw:1:${mac}`)?.expiresAt).toBe(clock + 3600_000);

    // Init-reboot of the same address: ACK; of another network: NAK.
    expect(reply(await h.handle(request(4, mac, { requested: '10.9.0.100' }), FROM68, 'dhcp')).options.get(53)).toEqual(Buffer.from([5]));
    const wrong = reply(await h.handle(request(5, mac, { requested: '192.168.1.5' }), FROM68, 'dhcp'));
    expect(wrong.options.get(53)).toEqual(Buffer.from([6]));
    expect(wrong.options.get(56)?.toString()).toMatch(/not on this network/);

    // Another client cannot renew someone else's address.
    const steal = reply(await h.handle(request(6, '02:00:00:00:00:02', { ciaddr: '10.9.0.100' }), { address: '10.9.0.100', port: 68 }, 'dhcp'));
    expect(steal.options.get(53)).toEqual(Buffer.from([6]));

    // Release frees it for others.
    await h.handle(request(7, mac, { type: 7, ciaddr: '10.9.0.100', server: SERVER }), FROM68, 'dhcp');
    expect(pool.recordFor('10.9.0.100')?.state).toBe('released');

    // Decline keeps it out of the pool.
    const other = '02:00:00:00:00:03';
    const off = reply(await h.handle(udhcpcDiscover(8, other), FROM68, 'dhcp'));
    await h.handle(request(9, other, { type: 4, requested: off.yiaddr, server: SERVER }), FROM68, 'dhcp');
    expect(pool.recordFor(off.yiaddr)?.state).toBe('declined');
    const next = reply(await h.handle(udhcpcDiscover(10, other), FROM68, 'dhcp'));
    expect(next.yiaddr).not.toBe(off.yiaddr);

    // INFORM: ACK without an address, unicast to ciaddr.
    const inf = await h.handle(request(11, '02:00:00:00:00:04', { type: 8, ciaddr: '10.9.0.30' }), { address: '10.9.0.30', port: 68 }, 'dhcp');
    const ip = reply(inf);
    expect(inf?.to).toEqual({ address: '10.9.0.30', port: 68 });
    expect(ip.options.get(53)).toEqual(Buffer.from([5]));
    expect(ip.yiaddr).toBe('0.0.0.0');
    expect(ip.options.has(51)).toBe(false);
    expect(ip.options.get(1)).toEqual(Buffer.from([255, 255, 255, 0]));
  });

  it('leases survive a restart: a new handler on the same file refuses a bound address to another client', async () => {
    const first = setup();
    await first.h.handle(udhcpcDiscover(1, '02:00:00:00:00:01'), FROM68, 'dhcp');
    await first.h.handle(request(2, '02:00:00:00:00:01', { requested: '10.9.0.100', server: SERVER }), FROM68, 'dhcp');
    const store = new LeaseStore(join(dir, 'leases.json'), nullLogger());
    const pool = new LeasePool(POOL, now, await store.load());
    const h2 = handler('full', { pool, store });
    const nak = reply(await h2.handle(request(3, '02:00:00:00:00:02', { requested: '10.9.0.100' }), FROM68, 'dhcp'));
    expect(nak.options.get(53)).toEqual(Buffer.from([6]));
    const offer = reply(await h2.handle(udhcpcDiscover(4, '02:00:00:00:00:01'), FROM68, 'dhcp'));
    expect(offer.yiaddr).toBe('10.9.0.100');
  });

  it('a corrupt lease file is moved aside, not overwritten', async () => {
    const path = join(dir, 'leases.json');
    await writeFile(path, '{"leases": [ {"ip": trunc');
    const store = new LeaseStore(path, nullLogger());
    expect(await store.load()).toEqual([]);
    const files = await readdir(dir);
    const aside = files.find((f) => f.startsWith('leases.json.corrupt-'));
    expect(aside).toBeDefined();
    expect(await readFile(join(dir, aside as string), 'utf8')).toBe('{"leases": [ {"ip": trunc');
  });

  it('concurrent saves coalesce and the file ends with the newest snapshot', async () => {
    const store = new LeaseStore(join(dir, 'leases.json'), nullLogger());
    const rec = (i: number) => ({ ip: `10.9.0.${i}`, clientKey: `k${i}`, mac: '', state: 'bound' as const, expiresAt: i });
    await Promise.all([store.save([rec(1)]), store.save([rec(1), rec(2)]), store.save([rec(1), rec(2), rec(3)])]);
    const file = JSON.parse(await readFile(join(dir, 'leases.json'), 'utf8')) as { leases: unknown[] };
    expect(file.leases).toHaveLength(3);
  });

  it('full mode without a pool is a configuration error', () => {
    expect(() => handler('full')).toThrow(/pool/);
  });
});
