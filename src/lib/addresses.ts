/**
 * Node reports IPv4 peers on dual-stack sockets as IPv4-mapped IPv6 ("::ffff:10.0.0.5"). Hosts, leases
 * and logs keep the plain IPv4 form, so every address from a socket goes through here first.
 */
export function plainAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}
