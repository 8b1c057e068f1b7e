/**
 * Client packets built byte by byte, the way the named clients put them on the wire, without
 * using our encoder (so codec tests do not just check the encoder against itself).
 */

export function macBytes(mac: string): number[] {
  return mac.split(':').map((h) => parseInt(h, 16));
}

function ipBytes(ip: string): number[] {
  return ip.split('.').map(Number);
}

export function opt(code: number, data: number[] | string): number[] {
  const bytes = typeof data === 'string' ? Array.from(Buffer.from(data, 'latin1')) : data;
  return [code, bytes.length, ...bytes];
}

export interface RawInit {
  op?: number;
  xid: number;
  mac: string;
  flags?: number;
  secs?: number;
  ciaddr?: string;
  giaddr?: string;
  /** Option bytes after the magic cookie, END included by the caller. */
  options: number[];
  /** Trailing zero bytes some clients add. */
  trailer?: number;
}

export function rawPacket(r: RawInit): Buffer {
  const head = Buffer.alloc(236);
  head[0] = r.op ?? 1;
  head[1] = 1;
  head[2] = 6;
  head.writeUInt32BE(r.xid >>> 0, 4);
  head.writeUInt16BE(r.secs ?? 0, 8);
  head.writeUInt16BE(r.flags ?? 0, 10);
  Buffer.from(ipBytes(r.ciaddr ?? '0.0.0.0')).copy(head, 12);
  Buffer.from(ipBytes(r.giaddr ?? '0.0.0.0')).copy(head, 24);
  Buffer.from(macBytes(r.mac)).copy(head, 28);
  return Buffer.concat([head, Buffer.from([99, 130, 83, 99]), Buffer.from(r.options), Buffer.alloc(r.trailer ?? 0)]);
}

export const UUID_BYTES = [0x4c, 0x4c, 0x45, 0x44, 0x00, 0x4a, 0x10, 0x80, 0x80, 0x35, 0xb2, 0xc0, 0x4f, 0x4e, 0x35, 0x31];

/** QEMU SeaBIOS NIC ROM / undionly.kpxe: iPXE with BIOS arch 0. */
export function ipxeBiosDiscover(xid: number, mac: string, type = 1): Buffer {
  return rawPacket({
    xid,
    mac,
    flags: 0x8000,
    options: [
      ...opt(53, [type]),
      ...opt(57, [0x05, 0xc0]),
      ...opt(93, [0x00, 0x00]),
      ...opt(94, [0x01, 0x02, 0x01]),
      ...opt(60, 'PXEClient:Arch:00000:UNDI:002001'),
      ...opt(77, 'iPXE'),
      ...opt(55, [1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135, 175, 203]),
      ...opt(175, [0xb1, 0x05, 0x01, 0x80, 0x86, 0x10, 0x0e, 0x13, 0x01, 0x01, 0x11, 0x01, 0x01, 0x15, 0x01, 0x01, 0x18, 0x01, 0x01, 0xeb, 0x03, 0x01, 0x00, 0x00]),
      ...opt(61, [0x01, ...macBytes(mac)]),
      ...opt(97, [0x00, ...UUID_BYTES]),
      255,
    ],
  });
}

/** OVMF's own PXE client (edk2 PxeBcDxe): UEFI x64 arch 7, no user class. */
export function ovmfDiscover(xid: number, mac: string, type = 1, ciaddr?: string): Buffer {
  return rawPacket({
    xid,
    mac,
    flags: 0x8000,
    secs: 4,
    ciaddr,
    options: [
      ...opt(53, [type]),
      ...opt(57, [0x05, 0xc0]),
      ...opt(55, [1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135]),
      ...opt(97, [0x00, ...UUID_BYTES]),
      ...opt(94, [0x01, 0x03, 0x00]),
      ...opt(93, [0x00, 0x07]),
      ...opt(60, 'PXEClient:Arch:00007:UNDI:003000'),
      255,
    ],
    trailer: 20,
  });
}

/** busybox udhcpc DISCOVER: not a network-boot client. */
export function udhcpcDiscover(xid: number, mac: string): Buffer {
  return rawPacket({
    xid,
    mac,
    options: [
      ...opt(53, [1]),
      ...opt(61, [0x01, ...macBytes(mac)]),
      ...opt(57, [0x02, 0x40]),
      ...opt(55, [1, 3, 6, 12, 15, 28, 42]),
      ...opt(60, 'udhcp 1.35.0'),
      255,
    ],
    trailer: 300 - 240 - 41,
  });
}

/** Pad bytes between options, and option 60 asked for in option 55 (the packet that crashed the npm `dhcp` package). */
export function paddedPxeDiscover(xid: number, mac: string): Buffer {
  return rawPacket({
    xid,
    mac,
    options: [
      ...opt(53, [1]),
      0,
      0,
      ...opt(55, [1, 3, 43, 60, 66, 67]),
      0,
      ...opt(60, 'PXEClient:Arch:00000:UNDI:002001'),
      0,
      0,
      0,
      ...opt(93, [0x00, 0x00]),
      255,
      0,
      0,
    ],
  });
}

/** HTTP boot firmware (UEFI 2.5+), arch 16. */
export function httpBootDiscover(xid: number, mac: string): Buffer {
  return rawPacket({
    xid,
    mac,
    options: [...opt(53, [1]), ...opt(93, [0x00, 0x10]), ...opt(60, 'HTTPClient:Arch:00016:UNDI:003001'), ...opt(97, [0x00, ...UUID_BYTES]), 255],
  });
}
