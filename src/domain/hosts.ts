/**
 * Hosts are PCs known by MAC: added by a technician (registered), or recorded when they first
 * network-boot (not registered until a technician registers them or gives them a task).
 */
import type { Database, Firmware, HardwareReport, HostRecord, LocalBoot } from './database.js';
import type { EventLog } from './events.js';
import { normalizeMac } from '../lib/mac.js';
import type { Logger } from '../lib/log.js';
import { BootAddresses } from './boot-addresses.js';
import { DeferredSave } from './deferred-save.js';

export class HostError extends Error {
  constructor(readonly status: 400 | 404 | 409, message: string) {
    super(message);
    this.name = 'HostError';
  }
}

export interface SightingInfo {
  readonly mac: string;
  readonly ip?: string | null;
  readonly firmware?: Firmware;
  readonly arch?: string | null;
  readonly vendorClass?: string | null;
}

const NAME_RE = /^[\p{L}\p{N} ._()-]{1,64}$/u;

export function validHostName(name: string): boolean {
  return NAME_RE.test(name);
}

/**
 * Bounds on hosts created by sightings: anyone on the LAN can send PXE DISCOVERs or ask for
 * /boot/ipxe with made-up MACs, and each unbounded new host would grow the database for ever.
 */
export interface AutoRegistrationLimits {
  /** Hosts that only ever booted (never registered by a technician) kept at most. */
  readonly maxUnregistered: number;
  /**
   * New hosts per minute from one address: the address a boot script is asked from, or the one a
   * DHCP packet names. Packets that name none (proxy-mode DISCOVERs) share one budget; full mode
   * names a fresh address per made-up MAC, which `perMinute` and `maxUnregistered` bound.
   */
  readonly perAddressPerMinute: number;
  /** New hosts per minute from all addresses together. */
  readonly perMinute: number;
}

export const DEFAULT_AUTO_REGISTRATION: AutoRegistrationLimits = { maxUnregistered: 1000, perAddressPerMinute: 10, perMinute: 60 };

export interface HostServiceOptions {
  readonly logger?: Logger;
  readonly autoRegistration?: AutoRegistrationLimits;
  /** Milliseconds since the epoch; tests move it by hand. */
  readonly now?: () => number;
}

/** A sighting of a PC; `recorded` is false when the limits kept a new PC out of the database. */
export interface Sighting {
  readonly host: HostRecord;
  readonly isNew: boolean;
  readonly recorded: boolean;
}

/** Token bucket: `perMinute` starts per minute, bursts up to `perMinute`. */
class Bucket {
  private tokens: number;
  private at: number;
  constructor(private readonly perMinute: number, now: number) {
    this.tokens = perMinute;
    this.at = now;
  }
  take(now: number): boolean {
    this.tokens = Math.min(this.perMinute, this.tokens + ((now - this.at) / 60_000) * this.perMinute);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
  full(now: number): boolean {
    return this.tokens + ((now - this.at) / 60_000) * this.perMinute >= this.perMinute;
  }
}

/** Addresses tracked for the per-address rate at most; idle (full) buckets are dropped first. */
const MAX_TRACKED_ADDRESSES = 4096;
/** How long a sighting that changed nothing but "last seen" may wait to be saved. */
const LAST_SEEN_SAVE_MS = 10_000;

export class HostService {
  /** Addresses DHCP tied to each MAC lately: the boot script hands a task token only there. */
  readonly bootAddresses = new BootAddresses();

  private readonly logger: Logger | undefined;
  private readonly limits: AutoRegistrationLimits;
  private readonly now: () => number;
  private readonly byAddress = new Map<string, Bucket>();
  private readonly overall: Bucket;
  private readonly sightingsSave: DeferredSave;
  /** When the last "a new PC was kept out" event was recorded: one per minute is enough. */
  private lastRefusalEvent = 0;

  constructor(private readonly db: Database, private readonly events: EventLog, options: HostServiceOptions = {}) {
    this.logger = options.logger;
    this.limits = options.autoRegistration ?? DEFAULT_AUTO_REGISTRATION;
    this.now = options.now ?? (() => Date.now());
    this.overall = new Bucket(this.limits.perMinute, this.now());
    this.sightingsSave = new DeferredSave(() => this.db.write(), LAST_SEEN_SAVE_MS, (err: unknown) => {
      // Kept in memory; the next write carries it.
      this.logger?.error({ err }, 'could not save host sightings to the database');
    });
  }

  list(): HostRecord[] {
    return [...this.db.data.hosts].sort((a, b) => b.lastSeen.localeCompare(a.lastSeen));
  }

  get(macInput: string): HostRecord | undefined {
    const mac = normalizeMac(macInput);
    return mac ? this.db.data.hosts.find((h) => h.mac === mac) : undefined;
  }

  /** The PC last seen at `ip` (DHCP and boot-script sightings record it), so logs can name it. */
  byIp(ip: string): HostRecord | undefined {
    let best: HostRecord | undefined;
    for (const h of this.db.data.hosts) if (h.ip === ip && (best === undefined || h.lastSeen > best.lastSeen)) best = h;
    return best;
  }

  require(macInput: string): HostRecord {
    const mac = normalizeMac(macInput);
    if (!mac) throw new HostError(400, `"${macInput}" is not a MAC address (expected aa:bb:cc:dd:ee:ff)`);
    const host = this.db.data.hosts.find((h) => h.mac === mac);
    if (!host) throw new HostError(404, `no host with MAC ${mac}; add it with "netclone host add ${mac}"`);
    return host;
  }

  private blank(mac: string, now: string): HostRecord {
    return {
      mac, name: '', ip: null, firmware: 'unknown', arch: null, vendorClass: null, firstSeen: now, lastSeen: now,
      registered: false, hardware: null, assignedImage: null, localBoot: null, efiLoader: 'snponly.efi',
    };
  }

  /**
   * A technician adds a PC. A PC that only booted so far (not registered) is registered and
   * named; one already registered is refused with 409, unless `rename` says the request is
   * meant to rename it: adding must never silently rename.
   */
  async add(macInput: string, name?: string, options: { rename?: boolean } = {}): Promise<HostRecord> {
    const mac = normalizeMac(macInput);
    if (!mac) throw new HostError(400, `"${macInput}" is not a MAC address (expected aa:bb:cc:dd:ee:ff)`);
    if (name !== undefined && !validHostName(name)) throw new HostError(400, `host name "${name}" must be 1-64 letters, digits, spaces or ._()-`);
    const existing = this.db.data.hosts.find((h) => h.mac === mac);
    if (existing?.registered && !options.rename) {
      const known = existing.name ? ` as "${existing.name}"` : '';
      throw new HostError(
        409,
        `host ${mac} is already registered${known}; nothing was changed. To rename it: "netclone host add ${mac} --name NAME --rename", PATCH /api/v1/hosts/${mac}, or its page`,
      );
    }
    if (options.rename && !existing) throw new HostError(404, `no host with MAC ${mac} to rename; add it first with "netclone host add ${mac}"`);
    if (options.rename && name === undefined) throw new HostError(400, 'a rename needs the new name (--name NAME)');
    const host = existing ?? this.blank(mac, new Date(this.now()).toISOString());
    if (!existing) this.db.data.hosts.push(host);
    const renamedFrom = existing?.registered ? existing.name : null;
    host.registered = true;
    if (name !== undefined) host.name = name;
    await this.db.write();
    const what = renamedFrom !== null ? `renamed from "${renamedFrom}" to "${host.name}"` : `registered${host.name ? ` (${host.name})` : ''}`;
    await this.events.record('info', `host ${mac} ${what}`, mac);
    return host;
  }

  /**
   * Make sure a PC is registered, keeping its name (the boot menu's register, capture and
   * deploy, and queuing a task for a MAC): no error when it already is.
   */
  async register(macInput: string): Promise<HostRecord> {
    const existing = this.get(macInput);
    if (existing?.registered) return existing;
    return this.add(macInput);
  }

  /**
   * A PC showed up (DHCP or the boot script): create it on first sight, refresh what we learned.
   * A new PC beyond the auto-registration limits is not stored: the answer carries a host record
   * that lives for this request only, so the PC still gets its menu.
   */
  async sighted(info: SightingInfo): Promise<Sighting> {
    const mac = normalizeMac(info.mac);
    if (!mac) throw new HostError(400, `"${info.mac}" is not a MAC address`);
    const nowMs = this.now();
    const now = new Date(nowMs).toISOString();
    let host = this.db.data.hosts.find((h) => h.mac === mac);
    const isNew = !host;
    if (!host) {
      const refusal = this.admit(info.ip ?? null, nowMs);
      if (refusal) {
        this.refused(mac, refusal, nowMs);
        return { host: { ...this.blank(mac, now), ip: info.ip ?? null }, isNew: false, recorded: false };
      }
      host = this.blank(mac, now);
      this.db.data.hosts.push(host);
    }
    const learned =
      (info.ip && host.ip !== info.ip) ||
      (info.firmware && info.firmware !== 'unknown' && host.firmware !== info.firmware) ||
      (info.arch && host.arch !== info.arch) ||
      (info.vendorClass && host.vendorClass !== info.vendorClass);
    host.lastSeen = now;
    if (info.ip) host.ip = info.ip;
    if (info.firmware && info.firmware !== 'unknown') host.firmware = info.firmware;
    if (info.arch) host.arch = info.arch;
    if (info.vendorClass) host.vendorClass = info.vendorClass;
    // A PC's boot sends several DHCP packets and a script request: only news is worth a write now.
    if (isNew || learned) await this.db.write();
    else this.sightingsSave.request();
    if (isNew) await this.events.record('info', `new PC ${mac} seen at network boot`, mac);
    return { host, isNew, recorded: true };
  }

  /** Why a new PC from `address` may not be stored now, or null when it may. */
  private admit(address: string | null, now: number): string | null {
    const unregistered = this.db.data.hosts.reduce((n, h) => n + (h.registered ? 0 : 1), 0);
    if (unregistered >= this.limits.maxUnregistered) {
      return `${unregistered} PCs that are not registered are known already (limit ${this.limits.maxUnregistered}); remove stale ones on the Hosts page or register the PC by hand`;
    }
    const key = address ?? 'dhcp';
    let bucket = this.byAddress.get(key);
    if (!bucket) {
      if (this.byAddress.size >= MAX_TRACKED_ADDRESSES) {
        for (const [k, b] of this.byAddress) if (b.full(now)) this.byAddress.delete(k);
        if (this.byAddress.size >= MAX_TRACKED_ADDRESSES) return `too many addresses announced new PCs lately (${MAX_TRACKED_ADDRESSES} tracked)`;
      }
      bucket = new Bucket(this.limits.perAddressPerMinute, now);
      this.byAddress.set(key, bucket);
    }
    if (!bucket.take(now)) return `more than ${this.limits.perAddressPerMinute} new PCs a minute from ${address ?? 'DHCP'}`;
    if (!this.overall.take(now)) return `more than ${this.limits.perMinute} new PCs a minute in all`;
    return null;
  }

  private refused(mac: string, why: string, now: number): void {
    this.logger?.warn({ mac }, `new PC ${mac} not added to the hosts: ${why}`);
    if (now - this.lastRefusalEvent < 60_000) return;
    this.lastRefusalEvent = now;
    this.events.record('warn', `new PCs are not being added to the hosts: ${why}`, mac).catch((err: unknown) => {
      this.logger?.error({ err }, 'could not record an event');
    });
  }

  /** The owner is closing and saves the database itself: no coalesced save runs after this. */
  stopTimers(): void {
    this.sightingsSave.cancel();
  }


  async update(
    macInput: string,
    patch: { name?: string; assignedImage?: string | null; localBoot?: LocalBoot | null; efiLoader?: HostRecord['efiLoader']; uefiBoot?: HostRecord['uefiBoot'] },
  ): Promise<HostRecord> {
    const host = this.require(macInput);
    if (patch.name !== undefined) {
      if (patch.name !== '' && !validHostName(patch.name)) throw new HostError(400, `host name "${patch.name}" must be 1-64 letters, digits, spaces or ._()-`);
      host.name = patch.name;
    }
    if (patch.assignedImage !== undefined) host.assignedImage = patch.assignedImage;
    if (patch.localBoot !== undefined) host.localBoot = patch.localBoot;
    if (patch.efiLoader !== undefined) host.efiLoader = patch.efiLoader;
    if (patch.uefiBoot !== undefined) host.uefiBoot = patch.uefiBoot;
    host.registered = true;
    await this.db.write();
    return host;
  }

  async setHardware(macInput: string, hardware: HardwareReport): Promise<void> {
    const host = this.require(macInput);
    host.hardware = hardware;
    await this.db.write();
  }

  async remove(macInput: string): Promise<void> {
    const host = this.require(macInput);
    this.db.data.hosts = this.db.data.hosts.filter((h) => h !== host);
    await this.db.write();
    await this.events.record('info', `host ${host.mac} removed`, host.mac);
  }
}
