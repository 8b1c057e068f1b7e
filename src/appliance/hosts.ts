/** Hosts are PCs known by MAC: registered by hand or on first PXE boot. */
import type { Database, Firmware, HardwareReport, HostRecord, LocalBoot } from './database.js';
import type { EventLog } from './events.js';
import { normalizeMac } from './mac.js';
import { BootAddresses } from './boot-addresses.js';

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

export class HostService {
  /** Addresses DHCP tied to each MAC lately: the boot script hands a task token only there. */
  readonly bootAddresses = new BootAddresses();

  constructor(private readonly db: Database, private readonly events: EventLog) {}

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

  /** Register by hand (or by the iPXE menu's "register this PC"). */
  async add(macInput: string, name?: string): Promise<HostRecord> {
    const mac = normalizeMac(macInput);
    if (!mac) throw new HostError(400, `"${macInput}" is not a MAC address (expected aa:bb:cc:dd:ee:ff)`);
    if (name !== undefined && !validHostName(name)) throw new HostError(400, `host name "${name}" must be 1-64 letters, digits, spaces or ._()-`);
    let host = this.db.data.hosts.find((h) => h.mac === mac);
    const now = new Date().toISOString();
    if (!host) {
      host = this.blank(mac, now);
      this.db.data.hosts.push(host);
    }
    host.registered = true;
    if (name !== undefined) host.name = name;
    await this.db.write();
    await this.events.record('info', `host ${mac}${host.name ? ` (${host.name})` : ''} registered`, mac);
    return host;
  }

  /** A PC showed up (DHCP or the boot script): create it on first sight, refresh what we learned. */
  async sighted(info: SightingInfo): Promise<{ host: HostRecord; isNew: boolean }> {
    const mac = normalizeMac(info.mac);
    if (!mac) throw new HostError(400, `"${info.mac}" is not a MAC address`);
    const now = new Date().toISOString();
    let host = this.db.data.hosts.find((h) => h.mac === mac);
    const isNew = !host;
    if (!host) {
      host = this.blank(mac, now);
      this.db.data.hosts.push(host);
    }
    host.lastSeen = now;
    if (info.ip) host.ip = info.ip;
    if (info.firmware && info.firmware !== 'unknown') host.firmware = info.firmware;
    if (info.arch) host.arch = info.arch;
    if (info.vendorClass) host.vendorClass = info.vendorClass;
    await this.db.write();
    if (isNew) await this.events.record('info', `new PC ${mac} seen at network boot`, mac);
    return { host, isNew };
  }

  async update(
    macInput: string,
    patch: { name?: string; assignedImage?: string | null; localBoot?: LocalBoot | null; efiLoader?: HostRecord['efiLoader'] },
  ): Promise<HostRecord> {
    const host = this.require(macInput);
    if (patch.name !== undefined) {
      if (patch.name !== '' && !validHostName(patch.name)) throw new HostError(400, `host name "${patch.name}" must be 1-64 letters, digits, spaces or ._()-`);
      host.name = patch.name;
    }
    if (patch.assignedImage !== undefined) host.assignedImage = patch.assignedImage;
    if (patch.localBoot !== undefined) host.localBoot = patch.localBoot;
    if (patch.efiLoader !== undefined) host.efiLoader = patch.efiLoader;
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
