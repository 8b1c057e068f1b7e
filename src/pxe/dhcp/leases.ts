/**
 * Address pool for full mode. Holds at most one record per address and one address per client,
 * which is what makes double allocation impossible. No I/O: persistence is lease-store.ts, the
 * clock is injected so tests can move time.
 */
import { ipToNumber, numberToIp, tryIpToBytes } from '../../lib/ipv4.js';

export interface PoolConfig {
  /** First and last address handed out, inclusive. */
  readonly start: string;
  readonly end: string;
  readonly netmask: string;
  readonly router?: string;
  readonly dns?: readonly string[];
  readonly domain?: string;
  readonly leaseSeconds: number;
  /**
   * How long an OFFER keeps its address reserved; default 10 s. A client usually REQUESTs within
   * a few seconds of the offer; a long hold lets a flood of DISCOVERs from made-up MACs keep the
   * whole pool reserved long after the flood stops.
   */
  readonly offerHoldSeconds?: number;
  /**
   * With no free address left, an offer at least this old (default 2 s) that its client has not
   * taken goes to the next client instead, so a flood cannot shut new clients out while it lasts.
   */
  readonly offerReclaimAfterSeconds?: number;
  /** How long a DECLINEd (conflicting) address stays out of use; default 10 min. */
  readonly declineHoldSeconds?: number;
  /** Addresses inside the range that must never be handed out (our own, the router's). */
  readonly exclude?: readonly string[];
}

export type LeaseState = 'offered' | 'bound' | 'released' | 'declined';

export interface LeaseRecord {
  readonly ip: string;
  /** Empty for declined addresses: nobody owns them. */
  readonly clientKey: string;
  readonly mac: string;
  readonly state: LeaseState;
  /** Milliseconds since the epoch. */
  readonly expiresAt: number;
  readonly hostname?: string;
}

export interface PoolClient {
  readonly key: string;
  readonly mac: string;
  readonly hostname?: string;
}

export type BindResult =
  | { readonly ok: true; readonly lease: LeaseRecord }
  | { readonly ok: false; readonly reason: string };

export function validatePoolConfig(c: PoolConfig): string | undefined {
  for (const [name, v] of [['start', c.start], ['end', c.end], ['netmask', c.netmask]] as const) {
    if (!tryIpToBytes(v)) return `pool.${name} "${v}" is not an IPv4 address`;
  }
  if (c.router && !tryIpToBytes(c.router)) return `pool.router "${c.router}" is not an IPv4 address`;
  for (const d of c.dns ?? []) if (!tryIpToBytes(d)) return `pool.dns entry "${d}" is not an IPv4 address`;
  const mask = ipToNumber(c.netmask);
  if (mask !== 0 && ((~mask >>> 0) & ((~mask >>> 0) + 1)) !== 0) return `pool.netmask ${c.netmask} is not a contiguous mask`;
  const s = ipToNumber(c.start);
  const e = ipToNumber(c.end);
  if (s > e) return `pool.start ${c.start} is after pool.end ${c.end}`;
  if ((s & mask) >>> 0 !== (e & mask) >>> 0) return `pool ${c.start}-${c.end} does not fit in one ${c.netmask} subnet`;
  if (!Number.isInteger(c.leaseSeconds) || c.leaseSeconds < 60) return `pool.leaseSeconds must be an integer ≥ 60`;
  return undefined;
}

export class LeasePool {
  private readonly byIp = new Map<number, LeaseRecord>();
  private readonly byClient = new Map<string, number>();
  private readonly startN: number;
  private readonly endN: number;
  private readonly maskN: number;
  private readonly excluded: Set<number>;

  constructor(
    readonly config: PoolConfig,
    readonly now: () => number = Date.now,
    initial: readonly LeaseRecord[] = [],
  ) {
    const problem = validatePoolConfig(config);
    if (problem) throw new RangeError(`${problem}; fix the DHCP pool configuration`);
    this.startN = ipToNumber(config.start);
    this.endN = ipToNumber(config.end);
    this.maskN = ipToNumber(config.netmask);
    this.excluded = new Set((config.exclude ?? []).filter((ip) => tryIpToBytes(ip)).map(ipToNumber));
    for (const r of initial) {
      if (r.state === 'offered' || !tryIpToBytes(r.ip) || !this.inRange(r.ip)) continue;
      this.put(r);
    }
  }

  get broadcast(): string {
    return numberToIp(((this.startN & this.maskN) | (~this.maskN >>> 0)) >>> 0);
  }

  inRange(ip: string): boolean {
    const b = tryIpToBytes(ip);
    if (!b) return false;
    const n = b.readUInt32BE(0);
    return n >= this.startN && n <= this.endN && !this.excluded.has(n);
  }

  inSubnet(ip: string): boolean {
    const b = tryIpToBytes(ip);
    return b !== undefined && ((b.readUInt32BE(0) & this.maskN) >>> 0) === ((this.startN & this.maskN) >>> 0);
  }

  leaseOf(clientKey: string): LeaseRecord | undefined {
    const n = this.byClient.get(clientKey);
    return n === undefined ? undefined : this.byIp.get(n);
  }

  recordFor(ip: string): LeaseRecord | undefined {
    const b = tryIpToBytes(ip);
    return b ? this.byIp.get(b.readUInt32BE(0)) : undefined;
  }

  /** Records worth keeping across a restart; offers are short-lived and are not. */
  snapshot(): LeaseRecord[] {
    return [...this.byIp.values()].filter((r) => r.state !== 'offered');
  }

  private put(r: LeaseRecord): void {
    const n = ipToNumber(r.ip);
    const old = this.byIp.get(n);
    if (old && old.clientKey && this.byClient.get(old.clientKey) === n) this.byClient.delete(old.clientKey);
    if (r.clientKey) {
      const prev = this.byClient.get(r.clientKey);
      if (prev !== undefined && prev !== n) {
        const prevRec = this.byIp.get(prev);
        // A client holds one address: moving it frees the previous one for others.
        if (prevRec) this.byIp.set(prev, { ...prevRec, clientKey: '', state: 'released', expiresAt: Math.min(prevRec.expiresAt, this.now()) });
      }
      this.byClient.set(r.clientKey, n);
    }
    this.byIp.set(n, r);
  }

  /** Whether `client` may take `ip` now. */
  private available(n: number, clientKey: string): boolean {
    if (n < this.startN || n > this.endN || this.excluded.has(n)) return false;
    const r = this.byIp.get(n);
    if (!r) return true;
    if (r.state === 'declined') return r.expiresAt <= this.now();
    if (r.clientKey === clientKey) return true;
    return r.state === 'released' || r.expiresAt <= this.now();
  }

  /** Reserve an address for a DISCOVER; undefined when the pool is exhausted. */
  offer(client: PoolClient, requestedIp?: string): LeaseRecord | undefined {
    const chosen = this.pick(client, requestedIp);
    if (chosen === undefined) return undefined;
    const existing = this.byIp.get(chosen);
    const holdMs = this.offerHoldMs();
    // Offering the address a client already holds must not shorten its lease.
    if (existing && existing.clientKey === client.key && existing.state === 'bound' && existing.expiresAt > this.now()) {
      return existing;
    }
    const rec: LeaseRecord = { ip: numberToIp(chosen), clientKey: client.key, mac: client.mac, state: 'offered', expiresAt: this.now() + holdMs, hostname: client.hostname };
    this.put(rec);
    return rec;
  }

  private offerHoldMs(): number {
    return (this.config.offerHoldSeconds ?? 10) * 1000;
  }

  private pick(client: PoolClient, requestedIp?: string): number | undefined {
    const own = this.byClient.get(client.key);
    if (own !== undefined && this.available(own, client.key)) return own;
    if (requestedIp) {
      const b = tryIpToBytes(requestedIp);
      if (b && this.available(b.readUInt32BE(0), client.key)) return b.readUInt32BE(0);
    }
    let oldest: number | undefined;
    let oldestAt = Infinity;
    for (let n = this.startN; n <= this.endN; n++) {
      if (this.excluded.has(n)) continue;
      const r = this.byIp.get(n);
      if (!r) return n;
      // Reuse the longest-free address last so a returning client likely finds its old one.
      if (this.available(n, client.key) && r.expiresAt < oldestAt) {
        oldest = n;
        oldestAt = r.expiresAt;
      }
    }
    return oldest ?? this.oldestUntakenOffer();
  }

  /** The address of the oldest offer still not taken after offerReclaimAfterSeconds, if any. */
  private oldestUntakenOffer(): number | undefined {
    const offeredBefore = this.now() - (this.config.offerReclaimAfterSeconds ?? 2) * 1000;
    let oldest: number | undefined;
    let oldestAt = Infinity;
    for (const [n, r] of this.byIp) {
      if (r.state !== 'offered') continue;
      const offeredAt = r.expiresAt - this.offerHoldMs();
      if (offeredAt <= offeredBefore && offeredAt < oldestAt) {
        oldest = n;
        oldestAt = offeredAt;
      }
    }
    return oldest;
  }

  /** Commit `ip` to `client` for a REQUEST; refuses addresses out of range or held by someone else. */
  bind(client: PoolClient, ip: string): BindResult {
    const b = tryIpToBytes(ip);
    if (!b || !this.inRange(ip)) return { ok: false, reason: `${ip} is not in our pool ${this.config.start}-${this.config.end}` };
    const n = b.readUInt32BE(0);
    if (!this.available(n, client.key)) {
      const r = this.byIp.get(n);
      return { ok: false, reason: r?.state === 'declined' ? `${ip} was declined as in use by another host` : `${ip} is leased to another client` };
    }
    const lease: LeaseRecord = {
      ip,
      clientKey: client.key,
      mac: client.mac,
      state: 'bound',
      expiresAt: this.now() + this.config.leaseSeconds * 1000,
      hostname: client.hostname ?? this.byIp.get(n)?.hostname,
    };
    this.put(lease);
    return { ok: true, lease };
  }

  /** Client chose another server's offer: give the reserved address back. */
  withdrawOffer(clientKey: string): void {
    const n = this.byClient.get(clientKey);
    const r = n === undefined ? undefined : this.byIp.get(n);
    if (n !== undefined && r && r.state === 'offered') {
      this.byIp.delete(n);
      this.byClient.delete(clientKey);
    }
  }

  /** DHCPRELEASE. Returns false when the client did not hold that address. */
  release(clientKey: string, ip: string): boolean {
    const r = this.recordFor(ip);
    if (!r || r.clientKey !== clientKey || r.state !== 'bound') return false;
    // Keep the owner so the same client gets the same address back if it is still free.
    this.put({ ...r, state: 'released', expiresAt: this.now() });
    return true;
  }

  /** DHCPDECLINE: another host answers ARP for the address; keep it out of use for a while. */
  decline(clientKey: string, ip: string): boolean {
    const r = this.recordFor(ip);
    if (!this.inRange(ip) || (r && r.clientKey !== clientKey)) return false;
    const holdMs = (this.config.declineHoldSeconds ?? 600) * 1000;
    this.put({ ip, clientKey: '', mac: r?.mac ?? '', state: 'declined', expiresAt: this.now() + holdMs });
    this.byClient.delete(clientKey);
    return true;
  }
}
