/**
 * The DHCP service: UDP sockets around {@link DhcpHandler}.
 *
 * Node's dgram cannot tell which interface a packet arrived on, and a socket bound to an interface
 * address does not receive broadcasts. So we bind 0.0.0.0:67 (and :4011) with SO_BROADCAST and take
 * our own address (option 54, siaddr, URLs) from configuration (`serverIp`).
 *
 * Broadcast replies go to 255.255.255.255, which the kernel routes like any address: on a host or
 * namespace without a default route that fails with ENETUNREACH, and on a multi-homed host it leaves
 * through the default route's interface. Add a host route on the boot network's interface:
 *   ip route add 255.255.255.255/32 dev IF
 */
import { createSocket, type Socket } from 'node:dgram';
import type { Logger } from '../../lib/log.js';
import { tryIpToBytes } from '../../lib/ipv4.js';
import { messageTypeName } from './constants.js';
import { type DhcpHooks, DhcpHandler, type DhcpMode, type FirstStageBooter, type Via } from './handler.js';
import { LeasePool, type PoolConfig } from './leases.js';
import { LeaseStore } from './lease-store.js';

/** The kernel caps this at net.core.rmem_max. */
const RECV_BUFFER_BYTES = 2 * 1024 * 1024;

export interface DhcpServerPorts {
  /** Where we listen for DHCP and where relays listen; 67. */
  readonly dhcp: number;
  /** PXE boot server port; 4011. */
  readonly proxy: number;
  /** Where clients listen for broadcast and ciaddr replies; 68. Tests move it off privileged ports. */
  readonly client?: number;
}

export interface DhcpServerOptions {
  readonly mode: DhcpMode;
  /** Our address on the boot network, as clients must see it. */
  readonly serverIp: string;
  readonly httpPort: number;
  readonly ports?: DhcpServerPorts;
  readonly bindAddress?: string;
  /** Where broadcast replies go; 255.255.255.255 unless a test redirects them. */
  readonly broadcastAddress?: string;
  readonly pool?: PoolConfig;
  /** Lease file for full mode; without it leases live in memory only. */
  readonly leaseFile?: string;
  /** The boot policy's answer to "which file does this client boot first". */
  readonly booter: FirstStageBooter;
  readonly logger: Logger;
  readonly hooks?: DhcpHooks;
}

export class DhcpServer {
  private sockets: Socket[] = [];
  private handler: DhcpHandler | undefined;
  private running = false;
  private readonly log: Logger;
  private readonly inflight = new Set<Promise<void>>();
  /** Replies sent, by message type name; a cheap health signal. */
  readonly sent = new Map<string, number>();

  constructor(private readonly opts: DhcpServerOptions) {
    this.log = opts.logger.child({ component: 'dhcp' });
    if (!tryIpToBytes(opts.serverIp)) throw new RangeError(`serverIp "${opts.serverIp}" is not an IPv4 address; set it to this server's address on the boot network`);
    if (opts.mode === 'full' && !opts.pool) throw new RangeError('DHCP mode "full" needs a pool (start, end, netmask, leaseSeconds); use mode "proxy" next to an existing DHCP server');
  }

  /** Ports actually bound (differs from the configured ones when 0 was asked for). */
  get boundPorts(): { dhcp: number; proxy: number } {
    const [d, p] = this.sockets;
    return { dhcp: d ? d.address().port : 0, proxy: p ? p.address().port : 0 };
  }

  /** Number of malformed packets ignored so far. */
  get parseErrors(): number {
    return this.handler?.parseErrors ?? 0;
  }

  async start(): Promise<void> {
    if (this.running) return;
    const o = this.opts;
    if (o.mode === 'off') {
      this.log.info('DHCP disabled (mode off)');
      return;
    }
    let pool: LeasePool | undefined;
    let store: LeaseStore | undefined;
    if (o.mode === 'full' && o.pool) {
      store = o.leaseFile ? new LeaseStore(o.leaseFile, this.log) : undefined;
      const records = store ? await store.load() : [];
      pool = new LeasePool({ ...o.pool, exclude: [...(o.pool.exclude ?? []), o.serverIp, ...(o.pool.router ? [o.pool.router] : [])] }, Date.now, records);
      this.log.info({ range: `${o.pool.start}-${o.pool.end}`, restored: records.length, leaseFile: o.leaseFile }, 'DHCP lease pool ready');
    }
    const ports = o.ports ?? { dhcp: 67, proxy: 4011 };
    this.handler = new DhcpHandler({
      mode: o.mode,
      serverIp: o.serverIp,
      httpPort: o.httpPort,
      booter: o.booter,
      pool,
      store,
      hooks: o.hooks,
      logger: this.log,
      ports: { server: ports.dhcp, client: ports.client ?? 68, broadcastAddress: o.broadcastAddress ?? '255.255.255.255' },
    });
    const address = o.bindAddress ?? '0.0.0.0';
    try {
      this.sockets.push(await this.bind(address, ports.dhcp, 'dhcp'));
      this.sockets.push(await this.bind(address, ports.proxy, 'proxy'));
    } catch (err) {
      await this.closeSockets();
      throw err;
    }
    this.running = true;
    this.log.info({ mode: o.mode, serverIp: o.serverIp, ...this.boundPorts, bindAddress: address }, `DHCP ${o.mode} server listening`);
  }

  private bind(address: string, port: number, via: Via): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const sock = createSocket({ type: 'udp4' });
      const onStartError = (err: Error): void => {
        sock.close();
        const hint = (err as NodeJS.ErrnoException).code === 'EACCES' ? ' (ports below 1024 need root or CAP_NET_BIND_SERVICE)' : '';
        reject(new Error(`cannot bind DHCP ${via} socket ${address}:${port}: ${err.message}${hint}`));
      };
      sock.once('error', onStartError);
      sock.bind({ address, port, exclusive: true }, () => {
        sock.off('error', onStartError);
        sock.setBroadcast(true);
        // A classroom powering on at once sends a burst; the 208 KiB default holds ~160 DISCOVERs.
        try {
          sock.setRecvBufferSize(RECV_BUFFER_BYTES);
        } catch (err) {
          this.log.debug({ err: (err as Error).message }, 'could not enlarge the DHCP receive buffer; bursts may be dropped and retried by clients');
        }
        sock.on('error', (err) => this.log.error({ via, err: err.message }, 'DHCP socket error'));
        sock.on('message', (msg, rinfo) => this.track(this.receive(sock, msg, { address: rinfo.address, port: rinfo.port }, via)));
        resolve(sock);
      });
    });
  }

  private track(p: Promise<void>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  private async receive(sock: Socket, msg: Buffer, from: { address: string; port: number }, via: Via): Promise<void> {
    const handler = this.handler;
    if (!handler) return;
    try {
      const out = await handler.handle(msg, from, via);
      if (!out || !this.running) return;
      await new Promise<void>((resolve) => {
        sock.send(out.data, out.to.port, out.to.address, (err) => {
          const name = messageTypeName(out.messageType);
          if (err) {
            this.log.error(
              { mac: out.mac, to: `${out.to.address}:${out.to.port}`, err: err.message },
              `cannot send DHCP ${name}` + ((err as NodeJS.ErrnoException).code === 'ENETUNREACH' ? ': no route for broadcast — run `ip route add 255.255.255.255/32 dev IF`' : ''),
            );
          } else {
            this.sent.set(name, (this.sent.get(name) ?? 0) + 1);
            this.log.debug({ mac: out.mac, to: `${out.to.address}:${out.to.port}` }, `sent DHCP ${name}`);
          }
          resolve();
        });
      });
    } catch (err) {
      // A bug in handling one packet must not take the boot service down for everyone.
      this.log.error({ from: `${from.address}:${from.port}`, err: (err as Error).stack }, 'internal error handling a DHCP packet; packet dropped');
    }
  }

  private async closeSockets(): Promise<void> {
    const socks = this.sockets;
    this.sockets = [];
    await Promise.all(socks.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    await this.closeSockets();
    // Let lease writes already under way finish so a stop never leaves the file behind the last ACK.
    await Promise.allSettled([...this.inflight]);
    this.log.info('DHCP server stopped');
  }
}
