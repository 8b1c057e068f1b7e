/**
 * Which address the network tied to a MAC during its last PXE/DHCP exchange, so the boot script
 * can tell the PC itself from anyone else on the LAN who asks for "its" script.
 *
 * Fed by our DHCP service: in full mode the address we offer or bind, in proxy mode the address
 * the PC requests from the office DHCP server or reports to our boot server on port 4011. A MAC
 * and an address that both come from one sender are the best a server on the LAN can know without
 * secrets on the PC; an attacker who can spoof both at layer 2 is not stopped by this.
 *
 * Kept in memory only: an exchange older than the window proves nothing, and after a restart the
 * PC's next network boot notes it again.
 */
import { plainAddress } from '../lib/ipv4.js';
import { normalizeMac } from '../lib/mac.js';

/** A network boot goes from DHCP to the boot script in seconds; minutes cover a slow firmware and a menu. */
export const BOOT_ADDRESS_WINDOW_MS = 5 * 60_000;
/** Random-MAC DHCP floods must not grow this without bound: the oldest sighting goes first. */
const MAX_ENTRIES = 4096;

export type AddressCheck = { readonly confirmed: true } | { readonly confirmed: false; readonly why: string };

export interface BootSighting {
  readonly ip: string;
  readonly at: number;
}

export class BootAddresses {
  private readonly byMac = new Map<string, BootSighting>();

  constructor(private readonly windowMs: number = BOOT_ADDRESS_WINDOW_MS) {}

  /** The DHCP service saw `mac` take or ask for `ip` (at `at`, ms since the epoch). */
  note(macInput: string, ipInput: string, at: number = Date.now()): void {
    const mac = normalizeMac(macInput);
    const ip = plainAddress(ipInput);
    if (!mac || !ip || ip === '0.0.0.0') return;
    this.byMac.delete(mac);
    this.byMac.set(mac, { ip, at });
    if (this.byMac.size > MAX_ENTRIES) {
      const oldest = this.byMac.keys().next();
      if (!oldest.done) this.byMac.delete(oldest.value);
    }
  }

  seen(macInput: string): BootSighting | undefined {
    const mac = normalizeMac(macInput);
    return mac ? this.byMac.get(mac) : undefined;
  }

  /** Is a request from `ipInput` the PC that DHCP tied to `macInput` within the window? */
  check(macInput: string, ipInput: string, now: number = Date.now()): AddressCheck {
    const seen = this.seen(macInput);
    const ip = plainAddress(ipInput);
    if (!seen) {
      return { confirmed: false, why: 'no DHCP/PXE exchange of this MAC was seen by this server (DHCP off, another DHCP server answered alone, or the server restarted since)' };
    }
    if (seen.ip !== ip) return { confirmed: false, why: `DHCP tied this MAC to ${seen.ip}, but the request came from ${ip}` };
    const age = now - seen.at;
    if (age > this.windowMs) {
      return { confirmed: false, why: `the last DHCP exchange of this MAC was ${Math.round(age / 1000)} s ago (more than ${Math.round(this.windowMs / 1000)} s)` };
    }
    return { confirmed: true };
  }
}
