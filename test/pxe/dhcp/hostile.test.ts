/**
 * What a hostile or broken sender on the boot network can do to the DHCP service: packets whose
 * hardware address is not an Ethernet MAC, and DISCOVER floods from made-up MACs in full mode.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nullLogger } from '../../../src/lib/log.js';
import { DhcpHandler, LeasePool, parseDhcpPacket, type PoolConfig, type PxeRequestInfo } from '../../../src/pxe/dhcp/index.js';
import { forgetDatabase, openDatabase } from '../../../src/domain/database.js';
import { EventLog } from '../../../src/domain/events.js';
import { HostService } from '../../../src/domain/hosts.js';
import { testBooter } from './booter.js';
import { ovmfDiscover } from './packets.js';

const SERVER = '10.9.0.1';
const PORTS = { server: 67, client: 68, broadcastAddress: '255.255.255.255' };
const FROM68 = { address: '0.0.0.0', port: 68 };

describe('a PXE request whose hardware address is 16 bytes', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nc-dhcp-hlen-'));
  });
  afterEach(async () => {
    forgetDatabase(dir);
    await rm(dir, { recursive: true, force: true });
  });

  it('is answered, but never handed to the host table as a MAC', async () => {
    const db = await openDatabase(dir);
    const hosts = new HostService(db, new EventLog(db, nullLogger()));
    const seen: PxeRequestInfo[] = [];
    const failures: unknown[] = [];
    const pending: Array<Promise<unknown>> = [];
    // The hook as the appliance wires it: every PXE request becomes a host sighting.
    const h = new DhcpHandler({
      mode: 'proxy', serverIp: SERVER, httpPort: 8080, booter: testBooter(), logger: nullLogger(), ports: PORTS,
      hooks: { onPxeRequest: (info) => {
        seen.push(info);
        pending.push(hosts.sighted({ mac: info.mac, ip: info.ip ?? null }).catch((err: unknown) => failures.push(err)));
      } },
    });
    const packet = ovmfDiscover(0x99, '52:54:00:00:00:01');
    packet[2] = 16;
    for (let i = 0; i < 16; i++) packet[28 + i] = 0xa0 + i;
    const out = await h.handle(packet, FROM68, 'dhcp');
    expect(out).toBeDefined();
    const parsed = parseDhcpPacket(out!.data);
    expect(parsed.ok && parsed.packet.chaddr.length).toBe(16);
    await Promise.all(pending);
    expect(seen).toEqual([]);
    expect(failures).toEqual([]);
    expect(hosts.list()).toEqual([]);

    // The same client with a 6-byte MAC is recorded.
    await h.handle(ovmfDiscover(0x9a, '52:54:00:00:00:01'), FROM68, 'dhcp');
    await Promise.all(pending);
    expect(seen.map((s) => s.mac)).toEqual(['52:54:00:00:00:01']);
    expect(hosts.list().map((x) => x.mac)).toEqual(['52:54:00:00:00:01']);
  });
});

describe('a DISCOVER flood from made-up MACs in full mode', () => {
  const POOL: PoolConfig = { start: '10.9.0.100', end: '10.9.0.109', netmask: '255.255.255.0', leaseSeconds: 3600 };
  let clock: number;
  let n = 0;
  const client = (): { key: string; mac: string } => {
    n++;
    const mac = `02:00:00:00:${((n >> 8) & 0xff).toString(16).padStart(2, '0')}:${(n & 0xff).toString(16).padStart(2, '0')}`;
    return { key: `hw:1:${mac}`, mac };
  };
  beforeEach(() => {
    clock = 1_000_000;
  });

  it('cannot shut a new client out for longer than the short offer hold', () => {
    const pool = new LeasePool(POOL, () => clock);
    const offers = Array.from({ length: 50 }, () => pool.offer(client()));
    expect(offers.filter(Boolean)).toHaveLength(10);
    clock += 1000;
    expect(pool.offer(client())).toBeUndefined();
    clock += 10_000;
    const late = client();
    const offer = pool.offer(late);
    expect(offer).toBeDefined();
    expect(pool.bind(late, offer!.ip).ok).toBe(true);
  });

  it('hands an offer nobody took after 2 s to the next client while the flood goes on', () => {
    const pool = new LeasePool(POOL, () => clock);
    for (let i = 0; i < 10; i++) pool.offer(client());
    clock += 2000;
    const real = client();
    const offer = pool.offer(real);
    expect(offer?.ip).toBe('10.9.0.100');
    // The flood goes on; the real client REQUESTs right away and keeps its address.
    for (let i = 0; i < 30; i++) pool.offer(client());
    expect(pool.bind(real, offer!.ip)).toMatchObject({ ok: true, lease: { state: 'bound' } });
    clock += 2000;
    for (let i = 0; i < 30; i++) pool.offer(client());
    expect(pool.leaseOf(real.key)).toMatchObject({ ip: '10.9.0.100', state: 'bound' });
  });

  it('never takes a fresh offer away: a client gets 2 s to REQUEST it', () => {
    const pool = new LeasePool(POOL, () => clock);
    const first = client();
    const offer = pool.offer(first);
    for (let i = 0; i < 9; i++) pool.offer(client());
    clock += 1999;
    expect(pool.offer(client())).toBeUndefined();
    expect(pool.bind(first, offer!.ip).ok).toBe(true);
  });
});
