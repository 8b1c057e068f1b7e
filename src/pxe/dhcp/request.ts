/** What a client asked for and who it is, read from a parsed packet. Pure. */
import type { DhcpPacket } from './codec.js';
import { formatMac } from './codec.js';
import { Opt } from './constants.js';
import {
  type ClientNdi,
  decodeClientArch,
  decodeClientNdi,
  decodeCodeList,
  decodeEncapsulated,
  decodeIp,
  decodeString,
  decodeU16,
  decodeU8,
  decodeUserClass,
} from './options.js';

export interface ClientRequest {
  readonly packet: DhcpPacket;
  /** Option 53; undefined for plain BOOTP. */
  readonly messageType?: number;
  /** chaddr as aa:bb:cc:dd:ee:ff. */
  readonly mac: string;
  /** Lease identity: option 61 when sent (RFC 2131 4.2), otherwise the hardware address. */
  readonly clientKey: string;
  readonly requestedIp?: string;
  readonly serverId?: string;
  readonly parameterList: readonly number[];
  readonly maxMessageSize?: number;
  readonly hostname?: string;
  readonly vendorClass?: string;
  readonly userClasses: readonly string[];
  /** First entry of option 93, else the Arch field of a PXEClient vendor class. */
  readonly arch?: number;
  readonly archList: readonly number[];
  readonly ndi?: ClientNdi;
  /** Raw option 97, echoed back verbatim as the PXE spec requires. */
  readonly uuidOption?: Buffer;
  /** Option 175 sub-options when the client is iPXE. */
  readonly ipxeOptions?: ReadonlyMap<number, Buffer>;
  /** PXEClient/HTTPClient vendor class or option 93 present: a network-boot client. */
  readonly isPxe: boolean;
  readonly isHttpClient: boolean;
  /** User class "iPXE" or option 175: iPXE is already running, do not hand out another loader. */
  readonly isIpxe: boolean;
}

/**
 * A PXE ROM often sends no option 61 while the iPXE it loads sends 61 = htype + MAC. Treating that
 * form as the bare hardware address keeps one machine on one lease across boot stages.
 */
function clientKeyOf(packet: DhcpPacket, clientId: Buffer | undefined): string {
  const hwKey = `hw:${packet.htype}:${formatMac(packet.chaddr)}`;
  if (!clientId || clientId.length === 0) return hwKey;
  if (clientId[0] === packet.htype && clientId.subarray(1).equals(packet.chaddr)) return hwKey;
  return `id:${clientId.toString('hex')}`;
}

const vendorArch = /^(?:PXEClient|HTTPClient):Arch:(\d{5})/;

export function describeRequest(packet: DhcpPacket): ClientRequest {
  const o = packet.options;
  const clientId = o.get(Opt.CLIENT_ID);
  const mac = formatMac(packet.chaddr);
  const vendorClass = decodeString(o.get(Opt.VENDOR_CLASS));
  const userClasses = decodeUserClass(o.get(Opt.USER_CLASS)) ?? [];
  const archList = decodeClientArch(o.get(Opt.CLIENT_ARCH)) ?? [];
  let arch: number | undefined = archList[0];
  if (arch === undefined && vendorClass) {
    const m = vendorArch.exec(vendorClass);
    if (m) arch = Number(m[1]);
  }
  const ipxeRaw = o.get(Opt.IPXE_ENCAP);
  const ipxeOptions = ipxeRaw ? (decodeEncapsulated(ipxeRaw) ?? new Map<number, Buffer>()) : undefined;
  const isHttpClient = vendorClass?.startsWith('HTTPClient') ?? false;
  const isPxe = (vendorClass?.startsWith('PXEClient') ?? false) || isHttpClient || o.has(Opt.CLIENT_ARCH);
  const isIpxe = userClasses.includes('iPXE') || ipxeRaw !== undefined;
  return {
    packet,
    messageType: decodeU8(o.get(Opt.MESSAGE_TYPE)),
    mac,
    clientKey: clientKeyOf(packet, clientId),
    requestedIp: decodeIp(o.get(Opt.REQUESTED_IP)),
    serverId: decodeIp(o.get(Opt.SERVER_ID)),
    parameterList: decodeCodeList(o.get(Opt.PARAMETER_LIST)) ?? [],
    maxMessageSize: decodeU16(o.get(Opt.MAX_MESSAGE_SIZE)),
    hostname: decodeString(o.get(Opt.HOSTNAME)),
    vendorClass,
    userClasses,
    arch,
    archList,
    ndi: decodeClientNdi(o.get(Opt.CLIENT_NDI)),
    uuidOption: o.get(Opt.CLIENT_UUID),
    ipxeOptions,
    isPxe,
    isHttpClient,
    isIpxe,
  };
}
