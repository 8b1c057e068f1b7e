/**
 * The server against real clients (busybox udhcpc, ISC dhclient) and raw PXE packets, on a bridge
 * inside network namespaces this file creates and always deletes.
 */
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeEncapsulated, type DhcpPacket, parseDhcpPacket } from '../../../src/pxe/dhcp/index.js';
import { fuzzPackets } from './fuzz.js';
import { createTestNet, resetClient, sh, type TestNet } from './netns.js';
import { ipxeBiosDiscover, ovmfDiscover, udhcpcDiscover } from './packets.js';
import { runIn, runSender, type RunningServer, startServer, waitFor } from './procs.js';
import { spawn } from 'node:child_process';

function parsed(data: Buffer): DhcpPacket {
  const r = parseDhcpPacket(data);
  if (!r.ok) throw new Error(r.error.message);
  return r.packet;
}

interface LeaseFileEntry {
  ip: string;
  mac: string;
  state: string;
}

describe.sequential('DHCP server in network namespaces', () => {
  let net: TestNet;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ncdhcp-'));
    net = await createTestNet('ns', 3);
  });

  afterAll(async () => {
    await net?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  describe.sequential('full mode with udhcpc and dhclient', () => {
    let server: RunningServer | undefined;
    const leaseFile = (): string => join(dir, 'leases.json');
    const config = (): Record<string, unknown> => ({
      mode: 'full',
      serverIp: net.serverIp,
      httpPort: 8080,
      leaseFile: leaseFile(),
      pool: { start: '10.99.7.100', end: '10.99.7.120', netmask: '255.255.255.0', router: '10.99.7.1', dns: ['10.99.7.53'], leaseSeconds: 600 },
    });
    let udhcpcIp = '';
    let dhclientIp = '';

    async function udhcpcScript(name: string): Promise<{ script: string; out: string }> {
      const out = join(dir, `${name}.events`);
      const script = join(dir, `${name}.sh`);
      await writeFile(
        script,
        `#!/bin/sh
echo "$1 ip=$ip mask=$mask router=$router dns=$dns serverid=$serverid lease=$lease" >> ${out}
case "$1" in
  bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/$mask" dev "$interface" ;;
  deconfig) ip addr flush dev "$interface" ;;
esac
exit 0
`,
      );
      await chmod(script, 0o755);
      return { script, out };
    }

    async function readLeases(): Promise<LeaseFileEntry[]> {
      return (JSON.parse(await readFile(leaseFile(), 'utf8')) as { leases: LeaseFileEntry[] }).leases;
    }

    beforeAll(async () => {
      server = await startServer(net.serverNs, config());
    });
    afterAll(async () => {
      await server?.stop();
    });

    it('udhcpc gets a lease with our options', async () => {
      const c = net.clients[0];
      const { script, out } = await udhcpcScript('u1');
      const r = await runIn(c.ns, 'busybox', ['udhcpc', '-f', '-q', '-n', '-t', '5', '-T', '2', '-i', c.ifname, '-s', script]);
      expect(r.code, r.stderr).toBe(0);
      const bound = (await readFile(out, 'utf8')).split('\n').find((l) => l.startsWith('bound'));
      expect(bound).toBeDefined();
      const m = /ip=(\S+) mask=24 router=10\.99\.7\.1 dns=10\.99\.7\.53 serverid=10\.99\.7\.1 lease=600/.exec(bound as string);
      expect(m, bound).not.toBeNull();
      udhcpcIp = (m as RegExpExecArray)[1];
      expect(udhcpcIp).toMatch(/^10\.99\.7\.(1[01]\d|120)$/);
      expect(await readLeases()).toContainEqual(expect.objectContaining({ ip: udhcpcIp, mac: c.mac, state: 'bound' }));
    });

    it('dhclient gets a lease of its own: two clients never share an address', async () => {
      const c = net.clients[1];
      const out = join(dir, 'dh.events');
      const script = join(dir, 'dh.sh');
      await writeFile(script, `#!/bin/sh\necho "$reason ip=$new_ip_address mask=$new_subnet_mask routers=$new_routers" >> ${out}\nexit 0\n`);
      await chmod(script, 0o755);
      const proc = spawn('ip', ['netns', 'exec', c.ns, 'dhclient', '-d', '-1', '-v', '-sf', script, '-lf', join(dir, 'dh.leases'), '-pf', join(dir, 'dh.pid'), c.ifname], {
        stdio: 'ignore',
      });
      try {
        const line = await waitFor('dhclient BOUND', async () =>
          (await readFile(out, 'utf8').catch(() => '')).split('\n').find((l) => l.startsWith('BOUND')),
        );
        const m = /ip=(\S+) mask=255\.255\.255\.0 routers=10\.99\.7\.1/.exec(line);
        expect(m, line).not.toBeNull();
        dhclientIp = (m as RegExpExecArray)[1];
        expect(dhclientIp).not.toBe(udhcpcIp);
        const leases = await readLeases();
        expect(leases).toContainEqual(expect.objectContaining({ ip: dhclientIp, mac: c.mac, state: 'bound' }));
        expect(leases).toContainEqual(expect.objectContaining({ ip: udhcpcIp, mac: net.clients[0].mac, state: 'bound' }));
      } finally {
        if (proc.pid && proc.exitCode === null) process.kill(proc.pid, 'SIGKILL');
      }
    });

    it('after a restart the persisted leases hold: a third client asking for a leased address gets another', async () => {
      expect(await server?.stop()).toBe(0);
      server = await startServer(net.serverNs, config());
      const c = net.clients[2];
      const { script, out } = await udhcpcScript('u3');
      const r = await runIn(c.ns, 'busybox', ['udhcpc', '-f', '-q', '-n', '-t', '5', '-T', '2', '-i', c.ifname, '-s', script, '-r', dhclientIp]);
      expect(r.code, r.stderr).toBe(0);
      const bound = (await readFile(out, 'utf8')).split('\n').find((l) => l.startsWith('bound')) ?? '';
      const ip = /ip=(\S+)/.exec(bound)?.[1];
      expect(ip).toBeDefined();
      expect(ip).not.toBe(dhclientIp);
      expect(ip).not.toBe(udhcpcIp);
    });

    it('udhcpc renews (unicast REQUEST, unicast ACK) and releases on exit', async () => {
      const c = net.clients[0];
      const { script, out } = await udhcpcScript('u1renew');
      const proc = spawn('ip', ['netns', 'exec', c.ns, 'busybox', 'udhcpc', '-f', '-n', '-R', '-t', '5', '-T', '2', '-i', c.ifname, '-s', script], { stdio: 'ignore' });
      const exited = new Promise<number | null>((resolve) => proc.once('exit', resolve));
      try {
        const events = async (): Promise<string[]> => (await readFile(out, 'utf8').catch(() => '')).split('\n').filter(Boolean);
        const bound = await waitFor('udhcpc bound', async () => (await events()).find((l) => l.startsWith('bound')));
        // The same client gets its own address back.
        expect(bound).toContain(`ip=${udhcpcIp} `);
        process.kill(proc.pid as number, 'SIGUSR1');
        const renew = await waitFor('udhcpc renew', async () => (await events()).find((l) => l.startsWith('renew')));
        expect(renew).toContain(`ip=${udhcpcIp} `);
        expect(server?.logs()).toContain('renewing/rebinding');
        process.kill(proc.pid as number, 'SIGTERM');
        await exited;
        const released = await waitFor('release in lease file', async () =>
          (await readLeases()).find((l) => l.ip === udhcpcIp && l.state === 'released'),
        );
        expect(released.mac).toBe(c.mac);
      } finally {
        if (proc.exitCode === null && proc.pid) process.kill(proc.pid, 'SIGKILL');
      }
    });
  });

  describe.sequential('proxy mode with raw PXE clients', () => {
    let server: RunningServer | undefined;
    const EFI_OVERRIDE_MAC = '02:00:00:00:00:33';

    beforeAll(async () => {
      // The full-mode clients left addresses behind; PXE firmware starts with none.
      for (const c of net.clients) await resetClient(c);
      await sh('ip', ['-n', net.clients[1].ns, 'addr', 'add', '10.99.7.50/24', 'dev', net.clients[1].ifname]);
      server = await startServer(net.serverNs, { mode: 'proxy', serverIp: net.serverIp, httpPort: 8080, ipxeEfiMacs: [EFI_OVERRIDE_MAC] });
    });
    afterAll(async () => {
      await server?.stop();
    });

    it('answers BIOS iPXE and UEFI DISCOVERs with proxy offers and stays silent to a plain client', async () => {
      const r = await runSender(net.clients[0].ns, {
        bindAddress: '0.0.0.0',
        bindPort: 68,
        target: { address: '255.255.255.255', port: 67 },
        // The plain client goes first: replies come back in order, so its answer would arrive before the others.
        packets: [udhcpcDiscover(0x100, '02:00:00:00:00:10'), ipxeBiosDiscover(0x101, '02:00:00:00:00:11'), ovmfDiscover(0x102, '02:00:00:00:00:12')],
        waitForXids: [0x101, 0x102],
        maxWaitMs: 20_000,
      });
      expect(r.unanswered).toEqual([]);
      const byXid = new Map(r.replies.map((x) => [parsed(x.data).xid, x]));
      expect(byXid.has(0x100)).toBe(false);
      expect(r.replies).toHaveLength(2);

      for (const x of r.replies) {
        expect(x.address).toBe(net.serverIp);
        expect(x.port).toBe(67);
        expect(x.data.length).toBeGreaterThanOrEqual(300);
        const p = parsed(x.data);
        expect(p.op).toBe(2);
        expect(p.yiaddr).toBe('0.0.0.0');
        expect(p.siaddr).toBe(net.serverIp);
        expect(p.options.get(53)).toEqual(Buffer.from([2]));
        expect(p.options.get(54)).toEqual(Buffer.from([10, 99, 7, 1]));
        expect(p.options.get(60)?.toString()).toBe('PXEClient');
        expect(p.options.get(97)?.length).toBe(17);
        expect(p.options.has(51)).toBe(false);
      }
      const ipxe = parsed((byXid.get(0x101) as { data: Buffer }).data);
      expect(ipxe.chaddr.toString('hex')).toBe('020000000011');
      expect(ipxe.options.get(67)?.toString()).toBe('http://10.99.7.1:8080/boot/ipxe?mac=${net0/mac}&platform=${platform}&arch=${buildarch}&chip=${net0/chip}');
      expect(decodeEncapsulated(ipxe.options.get(175))?.get(176)).toEqual(Buffer.from([1]));

      const uefi = parsed((byXid.get(0x102) as { data: Buffer }).data);
      expect(uefi.file).toBe('snponly.efi');
      expect(uefi.options.get(67)?.toString()).toBe('snponly.efi');
      expect(uefi.options.get(66)?.toString()).toBe(net.serverIp);
      expect(decodeEncapsulated(uefi.options.get(43))?.get(6)).toEqual(Buffer.from([8]));
      expect(uefi.options.has(175)).toBe(false);

      expect(server?.hooks).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ mac: '02:00:00:00:00:11', arch: 0, userClass: 'iPXE', isIpxe: true }),
          expect.objectContaining({ mac: '02:00:00:00:00:12', arch: 7, isIpxe: false }),
        ]),
      );
      expect(server?.hooks.some((h) => h.mac === '02:00:00:00:00:10')).toBe(false);
      expect(server?.logs()).toMatch(/PXE proxy OFFER for 02:00:00:00:00:12: efi-loader snponly.efi/);
    });

    it('port 4011 REQUEST gets a unicast ACK with the boot file, per-host ipxe.efi override applied', async () => {
      const r = await runSender(net.clients[1].ns, {
        bindAddress: '10.99.7.50',
        bindPort: 0,
        target: { address: net.serverIp, port: 4011 },
        packets: [ovmfDiscover(0x200, '02:00:00:00:00:20', 3, '10.99.7.50'), ovmfDiscover(0x201, EFI_OVERRIDE_MAC, 3, '10.99.7.50')],
        waitForXids: [0x200, 0x201],
        maxWaitMs: 20_000,
      });
      expect(r.unanswered).toEqual([]);
      const files = new Map<number, string>();
      for (const x of r.replies) {
        expect(x.address).toBe(net.serverIp);
        expect(x.port).toBe(4011);
        const p = parsed(x.data);
        expect(p.options.get(53)).toEqual(Buffer.from([5]));
        expect(p.ciaddr).toBe('10.99.7.50');
        expect(p.yiaddr).toBe('0.0.0.0');
        files.set(p.xid, p.file);
      }
      expect(files.get(0x200)).toBe('snponly.efi');
      expect(files.get(0x201)).toBe('ipxe.efi');
    });

    it('live fuzz: thousands of hostile packets on both ports, then a good DISCOVER is still answered', async () => {
      const packets = fuzzPackets(4242, 4000);
      const send = (port: number, slice: Buffer[]) =>
        runSender(net.clients[1].ns, {
          bindAddress: '10.99.7.50',
          bindPort: 0,
          target: { address: net.serverIp, port },
          packets: slice,
          waitForXids: [],
          maxWaitMs: 0,
          gapEvery: 50,
          gapMs: 2,
        });
      await send(67, packets.slice(0, 3000));
      await send(4011, packets.slice(3000));
      const r = await runSender(net.clients[0].ns, {
        bindAddress: '0.0.0.0',
        bindPort: 68,
        target: { address: '255.255.255.255', port: 67 },
        packets: [ovmfDiscover(0x300, '02:00:00:00:00:30')],
        waitForXids: [0x300],
        maxWaitMs: 20_000,
      });
      expect(r.unanswered).toEqual([]);
      expect(server?.alive()).toBe(true);
      expect(server?.logs()).toContain('ignoring malformed DHCP packet');
      expect(server?.logs()).not.toContain('internal error handling a DHCP packet');
    });
  });
});
