/**
 * Decides what to answer to one received message: mode rules (proxy / full) and the lease pool;
 * the boot file is the booter's answer, rendered by bootfile.ts. No sockets here, so every
 * decision is testable without a network; server.ts does the I/O.
 */
import type { Booter, FirstStage } from '../../domain/boot-policy.js';
import type { Logger } from '../../lib/log.js';
import { type BootChoice, renderBootChoice } from './bootfile.js';
import { parseDhcpPacket } from './codec.js';
import { BOOTREQUEST, DhcpMessageType, messageTypeName } from './constants.js';
import type { LeasePool, PoolClient } from './leases.js';
import type { LeaseStore } from './lease-store.js';
import { buildReply, type Destination, type LeaseParams, type DestinationPorts, replyDestination, type ReplySpec } from './reply.js';
import { type ClientRequest, describeRequest } from './request.js';

export type DhcpMode = 'proxy' | 'full' | 'off';

/** Which socket a message arrived on: the DHCP port (67) or the PXE boot server port (4011). */
export type Via = 'dhcp' | 'proxy';

export interface PxeRequestInfo {
  readonly mac: string;
  readonly arch?: number;
  readonly vendorClass?: string;
  readonly userClass?: string;
  /** Address the client has or is being given, when known. */
  readonly ip?: string;
  readonly isIpxe: boolean;
}

export interface DhcpHooks {
  /** Told about every PXE request we answer, e.g. to record the PC in the host table and note its address. Must not throw (errors are logged). */
  onPxeRequest?(info: PxeRequestInfo): void;
}

/** The one question DHCP asks the boot policy. */
export type FirstStageBooter = Pick<Booter, 'firstStage'>;

export interface HandlerOptions {
  readonly mode: DhcpMode;
  readonly serverIp: string;
  readonly httpPort: number;
  readonly booter: FirstStageBooter;
  readonly pool?: LeasePool;
  readonly store?: LeaseStore;
  readonly hooks?: DhcpHooks;
  readonly logger: Logger;
  readonly ports: DestinationPorts;
}

export interface Outgoing {
  readonly data: Buffer;
  readonly to: Destination;
  readonly messageType: DhcpMessageType;
  readonly mac: string;
}

/** Hostile or broken senders can flood us; log the first few malformed packets per window, count the rest. */
class LogLimiter {
  private windowStart = 0;
  private count = 0;
  private suppressed = 0;
  constructor(
    private readonly perWindow: number,
    private readonly windowMs: number,
  ) {}
  allow(now: number): { ok: boolean; suppressed: number } {
    if (now - this.windowStart >= this.windowMs) {
      const suppressed = this.suppressed;
      this.windowStart = now;
      this.count = 0;
      this.suppressed = 0;
      this.count += 1;
      return { ok: true, suppressed };
    }
    if (this.count < this.perWindow) {
      this.count += 1;
      return { ok: true, suppressed: 0 };
    }
    this.suppressed += 1;
    return { ok: false, suppressed: 0 };
  }
}

export class DhcpHandler {
  private readonly log: Logger;
  private readonly badPackets = new LogLimiter(10, 10_000);
  /** Malformed messages seen since start, for status pages and tests. */
  parseErrors = 0;

  constructor(private readonly opts: HandlerOptions) {
    this.log = opts.logger;
    if (opts.mode === 'full' && !opts.pool) throw new Error('DHCP full mode needs a pool (range, netmask, lease time) in the configuration');
  }

  async handle(msg: Buffer, from: Destination, via: Via): Promise<Outgoing | undefined> {
    if (this.opts.mode === 'off') return undefined;
    const parsed = parseDhcpPacket(msg);
    if (!parsed.ok) {
      this.parseErrors += 1;
      const gate = this.badPackets.allow(Date.now());
      if (gate.ok) {
        this.log.warn(
          { from: `${from.address}:${from.port}`, code: parsed.error.code, offset: parsed.error.offset, suppressedBefore: gate.suppressed || undefined },
          `ignoring malformed DHCP packet: ${parsed.error.message}`,
        );
      }
      return undefined;
    }
    if (parsed.packet.op !== BOOTREQUEST) return undefined;
    const req = describeRequest(parsed.packet);
    if (req.messageType === undefined) {
      this.log.debug({ mac: req.mac }, 'ignoring BOOTP request without option 53; only DHCP is served');
      return undefined;
    }
    if (req.packet.hlen === 0 && req.clientKey.startsWith('hw:')) {
      // No hardware address and no client id: nothing to tell this client from any other.
      this.log.debug({ from: `${from.address}:${from.port}` }, 'ignoring request with hlen 0 and no client identifier');
      return undefined;
    }
    if (via === 'proxy') return this.handleBootServer(req, from);
    return this.opts.mode === 'proxy' ? this.handleProxy(req) : this.handleFull(req, from);
  }

  private choose(req: ClientRequest): BootChoice {
    let stage: FirstStage;
    try {
      stage = this.opts.booter.firstStage({ mac: req.mac, arch: req.arch, isIpxe: req.isIpxe });
    } catch (err) {
      // A bug in the policy must not drop the message: in full mode the client still gets its address.
      this.log.error({ mac: req.mac, err: (err as Error).message }, 'the boot policy failed for this client; answering without a boot file');
      return { ok: false, reason: `the boot policy failed: ${(err as Error).message}` };
    }
    return renderBootChoice(stage, { serverIp: this.opts.serverIp, httpPort: this.opts.httpPort });
  }

  private notify(req: ClientRequest, ip: string | undefined): void {
    const hook = this.opts.hooks?.onPxeRequest;
    if (!hook) return;
    // Hosts are known by Ethernet MAC: any other hardware address (hlen 16, InfiniBand, junk) is
    // answered but not reported, or the host table would be asked to take what is not a MAC.
    if (req.packet.htype !== 1 || req.packet.hlen !== 6) {
      this.log.debug({ htype: req.packet.htype, hlen: req.packet.hlen }, 'PXE request without an Ethernet MAC; not recorded as a host');
      return;
    }
    try {
      hook({
        mac: req.mac,
        arch: req.arch,
        vendorClass: req.vendorClass,
        userClass: req.userClasses.length > 0 ? req.userClasses.join(',') : undefined,
        ip,
        isIpxe: req.isIpxe,
      });
    } catch (err) {
      this.log.error({ mac: req.mac, err: (err as Error).message }, 'onPxeRequest hook failed; answering anyway');
    }
  }

  /** Boot choice for a PXE client, logging why when there is none. */
  private bootFor(req: ClientRequest): Extract<BootChoice, { ok: true }> | undefined {
    if (!req.isPxe) return undefined;
    const choice = this.choose(req);
    if (!choice.ok) {
      this.log.warn({ mac: req.mac, arch: req.arch, vendorClass: req.vendorClass }, `no boot file for this client: ${choice.reason}`);
      return undefined;
    }
    return choice;
  }

  private out(req: ClientRequest, spec: ReplySpec, to?: Destination): Outgoing {
    return {
      data: buildReply(req, spec),
      to: to ?? replyDestination(req, spec.messageType, this.opts.ports),
      messageType: spec.messageType,
      mac: req.mac,
    };
  }

  private logBoot(req: ClientRequest, step: string, boot: Extract<BootChoice, { ok: true }>, ip?: string): void {
    this.log.info(
      { mac: req.mac, step, arch: req.arch, vendorClass: req.vendorClass, ipxe: req.isIpxe, bootFile: boot.filename, ip },
      `PXE ${step} for ${req.mac}: ${boot.kind} ${boot.filename}`,
    );
  }

  /** Port 4011: firmware that got a proxy offer asks the boot server for the file (PXE spec 2.2.6). */
  private handleBootServer(req: ClientRequest, from: Destination): Outgoing | undefined {
    if (req.messageType !== DhcpMessageType.REQUEST && req.messageType !== DhcpMessageType.INFORM) return undefined;
    const boot = this.bootFor(req);
    if (!boot) return undefined;
    const clientIp = req.packet.ciaddr !== '0.0.0.0' ? req.packet.ciaddr : from.address;
    this.notify(req, clientIp);
    this.logBoot(req, 'boot-server ACK (port 4011)', boot, clientIp);
    // Answer the exact source address and port: the firmware listens there, not on 68.
    return this.out(req, { messageType: DhcpMessageType.ACK, serverIp: this.opts.serverIp, boot }, from);
  }

  private handleProxy(req: ClientRequest): Outgoing | undefined {
    if (!req.isPxe) {
      this.log.debug({ mac: req.mac, type: messageTypeName(req.messageType) }, 'proxy mode: not a PXE client, staying silent');
      return undefined;
    }
    let type: DhcpMessageType;
    if (req.messageType === DhcpMessageType.DISCOVER) type = DhcpMessageType.OFFER;
    else if (req.messageType === DhcpMessageType.REQUEST && req.serverId === this.opts.serverIp) type = DhcpMessageType.ACK;
    else {
      // A REQUEST for the office server's offer is that server's business, but it names the address
      // the PC is taking: noting it lets the TFTP and HTTP logs name the PC by its MAC.
      if (req.messageType === DhcpMessageType.REQUEST && req.requestedIp !== undefined) this.notify(req, req.requestedIp);
      return undefined;
    }
    const boot = this.bootFor(req);
    if (!boot) return undefined;
    this.notify(req, undefined);
    this.logBoot(req, `proxy ${messageTypeName(type)}`, boot);
    return this.out(req, { messageType: type, serverIp: this.opts.serverIp, boot });
  }

  private async persist(): Promise<boolean> {
    const { store, pool } = this.opts;
    if (!store || !pool) return true;
    try {
      await store.save(pool.snapshot());
      return true;
    } catch (err) {
      this.log.error(
        { path: store.path, err: (err as Error).message },
        'cannot write the lease file; not acknowledging so no address is promised that a restart would forget — check disk space and permissions',
      );
      return false;
    }
  }

  /** `expiresAt` for an existing lease (its remaining time is offered); omitted for a fresh grant. */
  private leaseParams(ip: string, expiresAt?: number): LeaseParams {
    const pool = this.opts.pool as LeasePool;
    const c = pool.config;
    const remaining = expiresAt === undefined ? c.leaseSeconds : Math.max(60, Math.round((expiresAt - pool.now()) / 1000));
    return {
      yiaddr: ip,
      leaseSeconds: Math.min(c.leaseSeconds, remaining),
      netmask: c.netmask,
      broadcast: pool.broadcast,
      router: c.router,
      dns: c.dns,
      domain: c.domain,
    };
  }

  private async handleFull(req: ClientRequest, from: Destination): Promise<Outgoing | undefined> {
    const pool = this.opts.pool as LeasePool;
    const serverIp = this.opts.serverIp;
    const client: PoolClient = { key: req.clientKey, mac: req.mac, hostname: req.hostname };
    const p = req.packet;
    const forUs = req.serverId === undefined || req.serverId === serverIp;
    switch (req.messageType) {
      case DhcpMessageType.DISCOVER: {
        const rec = pool.offer(client, req.requestedIp);
        if (!rec) {
          this.log.warn({ mac: req.mac, pool: `${pool.config.start}-${pool.config.end}` }, 'address pool exhausted; no offer — enlarge the range or shorten the lease time');
          return undefined;
        }
        const boot = this.bootFor(req);
        if (boot) {
          this.notify(req, rec.ip);
          this.logBoot(req, 'OFFER', boot, rec.ip);
        } else {
          this.log.info({ mac: req.mac, ip: rec.ip }, `DHCP OFFER ${rec.ip} to ${req.mac}`);
        }
        return this.out(req, {
          messageType: DhcpMessageType.OFFER,
          serverIp,
          lease: this.leaseParams(rec.ip, rec.state === 'bound' ? rec.expiresAt : undefined),
          boot,
        });
      }
      case DhcpMessageType.REQUEST: {
        let ip: string | undefined;
        let state: string;
        if (req.serverId !== undefined) {
          state = 'selecting';
          if (req.serverId !== serverIp) {
            pool.withdrawOffer(client.key);
            this.log.debug({ mac: req.mac, chose: req.serverId }, 'client chose another DHCP server; offer withdrawn');
            return undefined;
          }
          ip = req.requestedIp ?? (p.ciaddr !== '0.0.0.0' ? p.ciaddr : undefined);
        } else if (p.ciaddr === '0.0.0.0') {
          state = 'init-reboot';
          ip = req.requestedIp;
          if (ip && !pool.inSubnet(ip)) return this.nak(req, `${ip} is not on this network`);
        } else {
          state = 'renewing/rebinding';
          ip = p.ciaddr;
          // A rebinding client from another network is not ours to refuse.
          if (!pool.inSubnet(ip)) return undefined;
        }
        if (!ip) return this.nak(req, 'REQUEST names no address (option 50 or ciaddr)');
        const result = pool.bind(client, ip);
        if (!result.ok) return this.nak(req, result.reason, state);
        if (!(await this.persist())) return undefined;
        const boot = this.bootFor(req);
        if (boot) {
          this.notify(req, ip);
          this.logBoot(req, `ACK (${state})`, boot, ip);
        } else {
          this.log.info({ mac: req.mac, ip, state }, `DHCP ACK ${ip} to ${req.mac} (${state})`);
        }
        return this.out(req, { messageType: DhcpMessageType.ACK, serverIp, lease: this.leaseParams(ip), boot });
      }
      case DhcpMessageType.RELEASE: {
        if (!forUs) return undefined;
        if (pool.release(client.key, p.ciaddr)) {
          this.log.info({ mac: req.mac, ip: p.ciaddr }, `DHCP RELEASE ${p.ciaddr} from ${req.mac}`);
          await this.persist();
        } else {
          this.log.debug({ mac: req.mac, ip: p.ciaddr }, 'RELEASE for an address this client does not hold; ignored');
        }
        return undefined;
      }
      case DhcpMessageType.DECLINE: {
        if (!forUs || !req.requestedIp) return undefined;
        if (pool.decline(client.key, req.requestedIp)) {
          this.log.warn({ mac: req.mac, ip: req.requestedIp }, `DHCP DECLINE: ${req.requestedIp} is in use by another host; kept out of the pool for a while — find the host with a static address`);
          await this.persist();
        }
        return undefined;
      }
      case DhcpMessageType.INFORM: {
        const c = pool.config;
        const boot = this.bootFor(req);
        if (boot) {
          this.notify(req, p.ciaddr);
          this.logBoot(req, 'INFORM ACK', boot, p.ciaddr);
        }
        const to: Destination | undefined = p.ciaddr !== '0.0.0.0' && p.giaddr === '0.0.0.0' ? { address: p.ciaddr, port: from.port } : undefined;
        return this.out(
          req,
          {
            messageType: DhcpMessageType.ACK,
            serverIp,
            inform: { netmask: c.netmask, broadcast: pool.broadcast, router: c.router, dns: c.dns, domain: c.domain },
            boot,
          },
          to,
        );
      }
      default:
        return undefined;
    }
  }

  private nak(req: ClientRequest, reason: string, state?: string): Outgoing {
    this.log.info({ mac: req.mac, reason, state }, `DHCP NAK to ${req.mac}: ${reason}`);
    return this.out(req, { messageType: DhcpMessageType.NAK, serverIp: this.opts.serverIp, message: reason });
  }
}
