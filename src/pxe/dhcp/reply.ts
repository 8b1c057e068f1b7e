/** Building reply messages and choosing where they go (RFC 2131 4.1, PXE spec 2.1). Pure. */
import type { BootChoice } from './bootfile.js';
import { type DhcpOption, encodeDhcpPacket } from './codec.js';
import {
  BOOTREPLY,
  DhcpMessageType,
  FILE_LENGTH,
  FLAG_BROADCAST,
  IpxeSub,
  Opt,
  PXE_DISCOVERY_SKIP,
  PxeSub,
} from './constants.js';
import { encodeEncapsulated, encodeIp, encodeIpList, encodeString, encodeU32, encodeU8 } from './options.js';
import type { ClientRequest } from './request.js';

/** Address parameters for a client that gets a lease from us (full mode). */
export interface LeaseParams {
  readonly yiaddr: string;
  readonly leaseSeconds: number;
  readonly netmask: string;
  readonly broadcast: string;
  readonly router?: string;
  readonly dns?: readonly string[];
  readonly domain?: string;
}

/** Network parameters for an INFORM: everything but the address and its lease. */
export type InformParams = Omit<LeaseParams, 'yiaddr' | 'leaseSeconds'>;

export interface ReplySpec {
  readonly messageType: DhcpMessageType;
  readonly serverIp: string;
  readonly lease?: LeaseParams;
  readonly inform?: InformParams;
  /** Present when the client is a network-boot client we answer with a boot file. */
  readonly boot?: Extract<BootChoice, { ok: true }>;
  /** Option 56, for NAKs. */
  readonly message?: string;
}

function networkOptions(p: InformParams): DhcpOption[] {
  const out: DhcpOption[] = [{ code: Opt.SUBNET_MASK, data: encodeIp(p.netmask) }];
  if (p.router) out.push({ code: Opt.ROUTER, data: encodeIp(p.router) });
  if (p.dns && p.dns.length > 0) out.push({ code: Opt.DNS, data: encodeIpList(p.dns) });
  if (p.domain) out.push({ code: Opt.DOMAIN_NAME, data: encodeString(p.domain) });
  out.push({ code: Opt.BROADCAST_ADDRESS, data: encodeIp(p.broadcast) });
  return out;
}

/** Option 43 for PXEClient offers: "the boot file is in this offer", so no boot server discovery. */
export const PXE_VENDOR_OPTIONS = encodeEncapsulated([[PxeSub.DISCOVERY_CONTROL, Buffer.from([PXE_DISCOVERY_SKIP])]]);

/** Option 175 for iPXE: no-pxedhcp = 1 stops iPXE waiting seconds for a ProxyDHCP offer. */
export const IPXE_ENCAP_OPTIONS = encodeEncapsulated([[IpxeSub.NO_PXEDHCP, Buffer.from([1])]], false);

export function buildReply(req: ClientRequest, spec: ReplySpec): Buffer {
  const p = req.packet;
  const options: DhcpOption[] = [
    { code: Opt.MESSAGE_TYPE, data: encodeU8(spec.messageType) },
    { code: Opt.SERVER_ID, data: encodeIp(spec.serverIp) },
  ];
  const isNak = spec.messageType === DhcpMessageType.NAK;
  if (isNak) {
    if (spec.message) options.push({ code: Opt.MESSAGE, data: encodeString(spec.message) });
  } else {
    if (spec.lease) {
      const l = spec.lease;
      options.push(
        { code: Opt.LEASE_TIME, data: encodeU32(l.leaseSeconds) },
        // RFC 2131 4.4.5 defaults: T1 = 0.5, T2 = 0.875 of the lease.
        { code: Opt.RENEWAL_TIME, data: encodeU32(Math.floor(l.leaseSeconds / 2)) },
        { code: Opt.REBINDING_TIME, data: encodeU32(Math.floor((l.leaseSeconds * 7) / 8)) },
        ...networkOptions(l),
      );
    } else if (spec.inform) {
      options.push(...networkOptions(spec.inform));
    }
    if (spec.boot) {
      const b = spec.boot;
      options.push({ code: Opt.VENDOR_CLASS, data: encodeString(b.vendorClass) });
      if (!b.filename.startsWith('http')) options.push({ code: Opt.TFTP_SERVER, data: encodeString(spec.serverIp) });
      options.push({ code: Opt.BOOTFILE, data: encodeString(b.filename) });
      if (b.vendorClass === 'PXEClient' && !req.isIpxe) options.push({ code: Opt.VENDOR_SPECIFIC, data: PXE_VENDOR_OPTIONS });
      if (req.uuidOption) options.push({ code: Opt.CLIENT_UUID, data: req.uuidOption });
      if (req.isIpxe) options.push({ code: Opt.IPXE_ENCAP, data: IPXE_ENCAP_OPTIONS });
    }
  }
  const bootFile = spec.boot && !isNak ? spec.boot.filename : '';
  return encodeDhcpPacket({
    op: BOOTREPLY,
    htype: p.htype,
    hlen: p.hlen,
    xid: p.xid,
    flags: p.flags,
    // RFC 2131 table 3: ciaddr echoed in ACKs to a client that has one, zero otherwise.
    ciaddr: spec.messageType === DhcpMessageType.ACK ? p.ciaddr : '0.0.0.0',
    yiaddr: spec.lease && !isNak ? spec.lease.yiaddr : '0.0.0.0',
    siaddr: spec.boot && !isNak ? spec.serverIp : '0.0.0.0',
    giaddr: p.giaddr,
    chaddr: p.chaddr,
    // Long URLs only travel in option 67; the fixed field would truncate them.
    file: Buffer.byteLength(bootFile, 'latin1') < FILE_LENGTH ? bootFile : '',
    options,
  });
}

export interface Destination {
  readonly address: string;
  readonly port: number;
}

export interface DestinationPorts {
  /** Where relays listen (67). */
  readonly server: number;
  /** Where clients listen (68). */
  readonly client: number;
  /** 255.255.255.255 normally; tests on loopback redirect it. */
  readonly broadcastAddress: string;
}

/**
 * RFC 2131 4.1. We cannot unicast to a client that has no address yet (that needs an ARP entry
 * written by hand, which Node's dgram cannot do), so those replies are broadcast, as dnsmasq does
 * when it cannot either.
 */
export function replyDestination(req: ClientRequest, messageType: DhcpMessageType, ports: DestinationPorts): Destination {
  const p = req.packet;
  if (p.giaddr !== '0.0.0.0') return { address: p.giaddr, port: ports.server };
  if (messageType === DhcpMessageType.NAK) return { address: ports.broadcastAddress, port: ports.client };
  if (p.ciaddr !== '0.0.0.0' && (p.flags & FLAG_BROADCAST) === 0) return { address: p.ciaddr, port: ports.client };
  return { address: ports.broadcastAddress, port: ports.client };
}
