/**
 * Proxy-DHCP throughput: a burst of PXE DISCOVERs on loopback, counting OFFERs back. And a
 * full-mode DISCOVER flood from made-up MACs: how long until a real client (retrying every
 * 500 ms) gets its ACK while the pool is full of offers nobody takes.
 * Run: npx tsx bench/dhcp.ts
 */
import { createSocket, type Socket } from 'node:dgram';
import { pathToFileURL } from 'node:url';
import { nullLogger } from '../src/lib/log.js';
import { DhcpServer, encodeDhcpPacket, encodeEncapsulated, parseDhcpPacket } from '../src/pxe/dhcp/index.js';
import type { DhcpServerOptions } from '../src/pxe/dhcp/server.js';
import { DEFAULT_ARM64_BOOT_FILE, policyBooter } from '../src/domain/boot-policy.js';

/** The boot policy for PCs the appliance does not know yet: no host record, no task. */
const booter = policyBooter(
  { host: () => undefined, activeTask: () => undefined, lastStartedDeploy: () => undefined },
  { defaultLocalBoot: 'exit', biosUndionlyHop: true, arm64BootFile: DEFAULT_ARM64_BOOT_FILE, defaultUefiBoot: 'ipxe' },
);

export interface DhcpBenchResult {
  offersPerSecond: number;
  sent: number;
  offers: number;
  seconds: number;
  /** Full mode: OFFERs the flood got (the pool's size at most). */
  floodOffers: number;
  /** Full mode: seconds from the end of the flood until the real client held a bound lease. */
  floodRealClientAckSeconds: number;
}

/** A realistic client DISCOVER: alternately iPXE BIOS and OVMF UEFI. */
function discover(i: number, type = 1, requested?: string, macOf = i): Buffer {
  const mac = Buffer.from([0x02, 0x00, 0x00, (macOf >> 16) & 0xff, (macOf >> 8) & 0xff, macOf & 0xff]);
  const ipxe = i % 2 === 0;
  return encodeDhcpPacket({
    op: 1,
    xid: 0x10000000 + i,
    flags: 0x8000,
    chaddr: mac,
    options: [
      { code: 53, data: Buffer.from([type]) },
      ...(requested ? [{ code: 50, data: Buffer.from(requested.split('.').map(Number)) }, { code: 54, data: Buffer.from([127, 0, 0, 1]) }] : []),
      { code: 57, data: Buffer.from([0x05, 0xc0]) },
      { code: 93, data: Buffer.from([0, ipxe ? 0 : 7]) },
      { code: 94, data: Buffer.from([1, 3, 0]) },
      { code: 60, data: Buffer.from(ipxe ? 'PXEClient:Arch:00000:UNDI:002001' : 'PXEClient:Arch:00007:UNDI:003000') },
      ...(ipxe ? [{ code: 77, data: Buffer.from('iPXE') }, { code: 175, data: encodeEncapsulated([[0x13, Buffer.from([1])]], false) }] : []),
      { code: 55, data: Buffer.from([1, 3, 6, 43, 60, 66, 67, 97, 175]) },
      { code: 97, data: Buffer.concat([Buffer.from([0]), Buffer.alloc(16, i & 0xff)]) },
    ],
  });
}

function bindClient(): Promise<Socket> {
  return new Promise((resolve) => {
    const s = createSocket('udp4');
    s.bind({ address: '127.0.0.1', port: 0 }, () => {
      s.setRecvBufferSize(2 * 1024 * 1024);
      resolve(s);
    });
  });
}

/** Our server on loopback: port 0 (any free high port), broadcasts redirected to the bench's client socket. */
function loopbackServer(client: Socket, mode: Pick<DhcpServerOptions, 'mode' | 'pool'>): DhcpServer {
  return new DhcpServer({
    ...mode,
    serverIp: '127.0.0.1',
    httpPort: 8080,
    booter,
    bindAddress: '127.0.0.1',
    ports: { dhcp: 0, proxy: 0, client: client.address().port },
    broadcastAddress: '127.0.0.1',
    logger: nullLogger(),
  });
}

export async function benchDhcp(count = 500): Promise<DhcpBenchResult> {
  const burst = await benchBurst(count);
  const flood = await benchFlood(2000, 50);
  return { ...burst, floodOffers: flood.floodOffers, floodRealClientAckSeconds: flood.realClientAckSeconds };
}

/** Full mode, a pool of `poolSize`: `count` DISCOVERs from made-up MACs, then one real client that keeps asking. */
async function benchFlood(count: number, poolSize: number): Promise<{ floodOffers: number; realClientAckSeconds: number }> {
  const client = await bindClient();
  const server = loopbackServer(client, { mode: 'full', pool: { start: '10.60.0.1', end: `10.60.0.${poolSize}`, netmask: '255.255.255.0', leaseSeconds: 600 } });
  await server.start();
  const port = server.boundPorts.dhcp;
  const real = 0xffff;
  let floodOffers = 0;
  let offered: string | null = null;
  let acked = false;
  client.on('message', (msg) => {
    const p = parseDhcpPacket(msg);
    if (!p.ok) return;
    const type = p.packet.options.get(53)?.[0];
    const mine = p.packet.xid >= 0x10000000 + real;
    if (type === 2 && !mine) floodOffers++;
    if (type === 2 && mine) offered = p.packet.yiaddr;
    if (type === 5 && mine) acked = true;
  });
  try {
    for (let i = 0; i < count; i++) client.send(discover(i), port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 200));
    const start = performance.now();
    // A PXE ROM retransmits; here every 500 ms: DISCOVER until offered, then REQUEST that address.
    for (let attempt = 0; !acked && attempt < 240; attempt++) {
      const ip: string | null = offered;
      client.send(discover(real + 1 + attempt, ip ? 3 : 1, ip ?? undefined, real), port, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 500));
    }
    return { floodOffers, realClientAckSeconds: acked ? (performance.now() - start) / 1000 : Infinity };
  } finally {
    client.close();
    await server.stop();
  }
}

async function benchBurst(count: number): Promise<Pick<DhcpBenchResult, 'offersPerSecond' | 'sent' | 'offers' | 'seconds'>> {
  const client = await bindClient();
  const server = loopbackServer(client, { mode: 'proxy' });
  await server.start();
  const packets = Array.from({ length: count }, (_, i) => discover(i));
  const answered = new Set<number>();
  let lastReply = 0;
  try {
    const done = new Promise<void>((resolve) => {
      let idle: NodeJS.Timeout | undefined;
      const arm = (): void => {
        if (idle) clearTimeout(idle);
        // Lost packets (socket buffer overflow) must not hang the bench: stop after 1 s of silence.
        idle = setTimeout(resolve, 1000);
      };
      arm();
      client.on('message', (msg) => {
        const p = parseDhcpPacket(msg);
        if (p.ok && p.packet.options.get(53)?.[0] === 2) answered.add(p.packet.xid);
        lastReply = performance.now();
        if (answered.size === count) {
          if (idle) clearTimeout(idle);
          resolve();
        } else arm();
      });
    });
    const port = server.boundPorts.dhcp;
    const start = performance.now();
    for (const p of packets) client.send(p, port, '127.0.0.1');
    await done;
    const seconds = Math.max(1e-6, (lastReply - start) / 1000);
    return { offersPerSecond: Math.round(answered.size / seconds), sent: count, offers: answered.size, seconds };
  } finally {
    client.close();
    await server.stop();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const r = await benchDhcp();
  console.log(JSON.stringify(r));
}
