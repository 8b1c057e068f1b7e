/** Seeded packet mutator shared by the parser fuzz test and the live-socket fuzz tests. */
import { httpBootDiscover, ipxeBiosDiscover, ovmfDiscover, paddedPxeDiscover, udhcpcDiscover } from './packets.js';

import { prng as rng } from '../../lib/prng.js';

export { rng };

const seeds = (): Buffer[] => [
  ipxeBiosDiscover(1, '52:54:00:aa:bb:01'),
  ovmfDiscover(2, '52:54:00:aa:bb:02'),
  ovmfDiscover(3, '52:54:00:aa:bb:03', 3, '10.0.0.9'),
  udhcpcDiscover(4, '52:54:00:aa:bb:04'),
  paddedPxeDiscover(5, '52:54:00:aa:bb:05'),
  httpBootDiscover(6, '52:54:00:aa:bb:06'),
];

const interesting = [0, 1, 2, 3, 4, 6, 7, 8, 16, 43, 50, 52, 53, 54, 55, 60, 61, 77, 93, 97, 127, 128, 175, 200, 254, 255];

export function fuzzPackets(seed: number, count: number): Buffer[] {
  const r = rng(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)];
  const base = seeds();
  const out: Buffer[] = [];
  for (let n = 0; n < count; n++) {
    const kind = r();
    let b: Buffer;
    if (kind < 0.08) {
      // Pure noise, sometimes with a valid cookie so the option walker gets exercised.
      b = Buffer.alloc(Math.floor(r() * 700));
      for (let i = 0; i < b.length; i++) b[i] = Math.floor(r() * 256);
      if (b.length >= 240 && r() < 0.7) {
        b[0] = 1;
        b.writeUInt32BE(0x63825363, 236);
      }
    } else {
      b = Buffer.from(pick(base));
      const mutations = 1 + Math.floor(r() * 6);
      for (let m = 0; m < mutations; m++) {
        const op = r();
        const pos = Math.floor(r() * Math.max(1, b.length));
        if (op < 0.3) b[pos] = Math.floor(r() * 256);
        else if (op < 0.45) b[pos] = pick(interesting);
        else if (op < 0.55) b[pos] ^= 1 << Math.floor(r() * 8);
        else if (op < 0.65) b = b.subarray(0, pos);
        else if (op < 0.72) b = Buffer.concat([b, Buffer.from(Array.from({ length: Math.floor(r() * 64) }, () => Math.floor(r() * 256)))]);
        else if (op < 0.8 && b.length > 242) {
          // Corrupt an option length byte inside the option area.
          const p = 240 + Math.floor(r() * (b.length - 240));
          b[p] = pick([0, 1, 2, 4, 16, 127, 200, 255]);
        } else if (op < 0.86) b[2] = Math.floor(r() * 256); // hlen
        else if (op < 0.9 && b.length > 240) b.writeUInt32BE(Math.floor(r() * 2 ** 32), 236);
        else if (op < 0.95 && b.length > 240) {
          // Insert an option with a random claimed length.
          const p = 240 + Math.floor(r() * (b.length - 240));
          const ins = Buffer.from([pick(interesting), Math.floor(r() * 256), ...Array.from({ length: Math.floor(r() * 20) }, () => Math.floor(r() * 256))]);
          b = Buffer.concat([b.subarray(0, p), ins, b.subarray(p)]);
        } else if (b.length > 240) {
          // Overload into file/sname with junk inside them.
          b = Buffer.concat([b.subarray(0, 240), Buffer.from([52, 1, 1 + Math.floor(r() * 3)]), b.subarray(240)]);
          for (let i = 44; i < 236; i++) if (r() < 0.2) b[i] = Math.floor(r() * 256);
        }
      }
    }
    out.push(b);
  }
  return out;
}
