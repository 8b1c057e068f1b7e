/**
 * IPv4 addresses in the three forms netclone needs: the dotted quad (configuration, leases, logs),
 * four bytes (DHCP fields and options) and a 32-bit number (range and netmask arithmetic).
 */

const dottedQuad = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** Dotted quad → 4 bytes; undefined when it is not one (callers use this as the validity check). */
export function tryIpToBytes(ip: string): Buffer | undefined {
  const m = dottedQuad.exec(ip);
  if (!m) return undefined;
  const parts = m.slice(1, 5).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return Buffer.from(parts);
}

/** Dotted quad → 4 bytes, for values that were validated already: anything else is a RangeError. */
export function ipToBytes(ip: string): Buffer {
  const b = tryIpToBytes(ip);
  if (!b) throw new RangeError(`"${ip}" is not a dotted-quad IPv4 address; fix the configuration value`);
  return b;
}

/** The 4 bytes at `offset` → dotted quad. */
export function bytesToIp(buf: Uint8Array, offset = 0): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

/** Dotted quad → unsigned 32-bit number (RangeError like ipToBytes). */
export function ipToNumber(ip: string): number {
  return ipToBytes(ip).readUInt32BE(0);
}

/** Any number → dotted quad of its low 32 bits, so results of bitwise arithmetic can be passed as they are. */
export function numberToIp(n: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return bytesToIp(b);
}

/** The directed broadcast address of the subnet that `ip` is in. */
export function broadcastAddress(ip: string, netmask: string): string {
  const mask = ipToNumber(netmask);
  return numberToIp((ipToNumber(ip) & mask) | ~mask);
}

/**
 * Node reports IPv4 peers on dual-stack sockets as IPv4-mapped IPv6 ("::ffff:10.0.0.5"). Hosts, leases
 * and logs keep the plain IPv4 form, so every address from a socket goes through here first.
 */
export function plainAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}
