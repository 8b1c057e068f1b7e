/**
 * Wake-on-LAN: a magic packet is 6 × 0xff followed by the MAC 16 times (102 bytes),
 * sent by UDP broadcast (port 9, "discard") so a sleeping NIC on the segment sees it.
 */
import { createSocket } from 'node:dgram';
import { networkInterfaces } from 'node:os';
import { isIPv4 } from 'node:net';
import { broadcastAddress, ipToNumber } from './ipv4.js';
import { macToBytes, normalizeMac } from './mac.js';

export const WOL_PORT = 9;
export const MAGIC_PACKET_LENGTH = 102;

export function magicPacket(macInput: string): Buffer {
  const mac = normalizeMac(macInput);
  if (!mac) throw new Error(`"${macInput}" is not a MAC address; Wake-on-LAN needs aa:bb:cc:dd:ee:ff`);
  const packet = Buffer.alloc(MAGIC_PACKET_LENGTH, 0xff);
  const bytes = macToBytes(mac);
  for (let i = 0; i < 16; i++) bytes.copy(packet, 6 + i * 6);
  return packet;
}

export interface WolTarget {
  readonly address: string;
  readonly port: number;
}

/** The broadcast address of an interface (from its IPv4 address and netmask), or the limited broadcast. */
export function broadcastFor(interfaceName: string | null): string {
  if (interfaceName) {
    const addr = networkInterfaces()[interfaceName]?.find((a) => a.family === 'IPv4' && !a.internal);
    if (addr) return broadcastAddress(addr.address, addr.netmask);
  }
  return '255.255.255.255';
}

/**
 * The broadcast address of the interface whose subnet holds `ip` (the PC's last known address):
 * a magic packet must go out on the PC's own segment. Falls back to `fallbackInterface` (the
 * configured one), then to the limited broadcast.
 */
export function broadcastForHost(ip: string | null, fallbackInterface: string | null): { address: string; interface: string | null } {
  if (ip !== null && isIPv4(ip)) {
    const n = ipToNumber(ip);
    for (const [name, addrs] of Object.entries(networkInterfaces())) {
      for (const a of addrs ?? []) {
        if (a.family !== 'IPv4' || a.internal) continue;
        const mask = ipToNumber(a.netmask);
        if (((ipToNumber(a.address) & mask) >>> 0) === ((n & mask) >>> 0)) return { address: broadcastAddress(a.address, a.netmask), interface: name };
      }
    }
  }
  return { address: broadcastFor(fallbackInterface), interface: fallbackInterface };
}

/** Sends one magic packet for `mac`; `ip` is the PC's last known address, when there is one (picks the interface). */
export type WakeSender = (mac: string, ip?: string | null) => Promise<WolTarget>;

/** How many magic packets a wake sends, and how far apart: one UDP packet can be lost, and a NIC may need a moment. */
export const WAKE_REPEAT = { count: 3, intervalMs: 1000 } as const;

/**
 * Send the magic packet `count` times, `intervalMs` apart (`sleep` lets a test's clock drive the
 * pauses). Resolves with where the packets went; rejects with the first send's error.
 */
export async function wakeRepeatedly(
  send: WakeSender,
  mac: string,
  ip: string | null,
  sleep: (ms: number) => Promise<void>,
  repeat: { readonly count: number; readonly intervalMs: number } = WAKE_REPEAT,
): Promise<WolTarget> {
  let target: WolTarget | null = null;
  for (let i = 0; i < repeat.count; i++) {
    if (i > 0) await sleep(repeat.intervalMs);
    target = await send(mac, ip);
  }
  if (target === null) throw new Error('Wake-on-LAN was asked to send no packet');
  return target;
}

/** Send one magic packet to `target` (a broadcast address in production, 127.0.0.1 in tests). */
export async function sendMagicPacket(mac: string, target: WolTarget): Promise<void> {
  const packet = magicPacket(mac);
  if (!isIPv4(target.address)) throw new Error(`Wake-on-LAN target "${target.address}" is not an IPv4 address`);
  const socket = createSocket('udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, () => {
        socket.setBroadcast(true);
        socket.send(packet, target.port, target.address, (err) => (err ? reject(err) : resolve()));
      });
    });
  } finally {
    socket.close();
  }
}

/** A sender bound to one target; the command layer takes one of these (CommandDeps.wake) so tests can point it at loopback. */
export function wakeSender(targetFor: (ip: string | null) => WolTarget): WakeSender {
  return async (mac, ip) => {
    const target = targetFor(ip ?? null);
    await sendMagicPacket(mac, target);
    return target;
  };
}
