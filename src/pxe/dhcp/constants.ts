/** Numbers from RFC 2131/2132, RFC 3004, RFC 4578 and iPXE's option space. */

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
export const HTYPE_ETHERNET = 1;

/** Fixed BOOTP header: op..file. */
export const BOOTP_HEADER_LENGTH = 236;
/** RFC 1542: relay agents and old clients drop BOOTP messages shorter than this. */
export const BOOTP_MIN_LENGTH = 300;
export const MAGIC_COOKIE = 0x63825363;
export const SNAME_OFFSET = 44;
export const SNAME_LENGTH = 64;
export const FILE_OFFSET = 108;
export const FILE_LENGTH = 128;
export const OPTIONS_OFFSET = BOOTP_HEADER_LENGTH + 4;
/** RFC 2131 4.1: client limits us to 576 bytes unless option 57 says more. */
export const DEFAULT_MAX_MESSAGE = 576;

export const FLAG_BROADCAST = 0x8000;

export const DhcpMessageType = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;
export type DhcpMessageType = (typeof DhcpMessageType)[keyof typeof DhcpMessageType];

const messageTypeNames: Record<number, string> = {
  1: 'DISCOVER',
  2: 'OFFER',
  3: 'REQUEST',
  4: 'DECLINE',
  5: 'ACK',
  6: 'NAK',
  7: 'RELEASE',
  8: 'INFORM',
};

export function messageTypeName(type: number | undefined): string {
  if (type === undefined) return 'BOOTP';
  return messageTypeNames[type] ?? `type-${type}`;
}

export const Opt = {
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  DNS: 6,
  HOSTNAME: 12,
  DOMAIN_NAME: 15,
  BROADCAST_ADDRESS: 28,
  VENDOR_SPECIFIC: 43,
  REQUESTED_IP: 50,
  LEASE_TIME: 51,
  OVERLOAD: 52,
  MESSAGE_TYPE: 53,
  SERVER_ID: 54,
  PARAMETER_LIST: 55,
  MESSAGE: 56,
  MAX_MESSAGE_SIZE: 57,
  RENEWAL_TIME: 58,
  REBINDING_TIME: 59,
  VENDOR_CLASS: 60,
  CLIENT_ID: 61,
  TFTP_SERVER: 66,
  BOOTFILE: 67,
  USER_CLASS: 77,
  CLIENT_ARCH: 93,
  CLIENT_NDI: 94,
  CLIENT_UUID: 97,
  IPXE_ENCAP: 175,
  END: 255,
} as const;

/** PXE (option 43) sub-options, PXE spec 2.1 table 2-1. */
export const PxeSub = {
  DISCOVERY_CONTROL: 6,
  END: 255,
} as const;

/**
 * PXE_DISCOVERY_CONTROL bit 3: "boot file name is in this offer, skip boot server discovery".
 * iPXE calls it PXEBS_SKIP; dnsmasq and Pixiecore send the same value.
 */
export const PXE_DISCOVERY_SKIP = 8;

/** iPXE encapsulated (option 175) sub-options we send or read. */
export const IpxeSub = {
  /** Skip waiting for a ProxyDHCP offer. */
  NO_PXEDHCP: 176,
} as const;
