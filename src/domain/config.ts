/**
 * Configuration: embedded defaults, overridden by a config file, overridden by flags.
 *
 * The file format is `key = value` lines with `#` comments, because an operator's
 * /etc/netclone/config must be able to document every option inline (JSON cannot).
 * Parsing is pure and strict: an unknown key or a bad value is an error naming the
 * line, never a silent default.
 */
import { isIPv4 } from 'node:net';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { ipToNumber } from '../lib/ipv4.js';
import { ALERT_CONFIG_KEYS, parseAlertFileSettings, type AlertConfigKey, type AlertFileSettings } from './alert-config.js';

export type DhcpMode = 'off' | 'proxy' | 'full';

export interface Config {
  /** One data directory is one appliance: database, image store, lock and control socket. */
  readonly dataDir: string;
  /** Where images live; defaults to `<dataDir>/images`. */
  readonly imagesDir: string;
  /** iPXE loaders (TFTP root) and the thin client (HTTP). */
  readonly bootDir: string;
  readonly listen: string;
  readonly nbdPort: number;
  readonly httpPort: number;
  readonly tftpPort: number;
  readonly dhcp: DhcpMode;
  readonly interface: string | null;
  /** The address PCs reach us on; required for network boot, guessed from --interface when absent. */
  readonly serverIp: string | null;
  readonly dhcpRange: { readonly start: string; readonly end: string } | null;
  readonly dhcpNetmask: string;
  readonly dhcpRouter: string | null;
  readonly dhcpDns: readonly string[];
  readonly dhcpLeaseSeconds: number;
  readonly keepVersions: number;
  readonly logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
  /** Default way a BIOS host leaves iPXE for its disk. */
  readonly localBoot: 'exit' | 'sanboot';
  readonly menuTimeoutSeconds: number;
  /** Seconds an `image url` token lives unless --ttl says otherwise. */
  readonly urlTtlSeconds: number;
  /** Secure cookie flag for the admin session; off by default because the appliance serves plain HTTP on the LAN. */
  readonly secureCookies: boolean;
  readonly arm64BootFile: string;
  /** TFTP keeps the event loop polling for ACKs during transfers (src/pxe/tftp/busy-poll.ts). */
  readonly tftpBusyPoll: boolean;
  /** A task whose imaging client says nothing for this long (seconds) fails: the PC died or lost the network. */
  readonly clientTimeoutSeconds: number;
  /** The same while the client examines the disks, before the transfer starts. */
  readonly clientExamineTimeoutSeconds: number;
  /** How a new task moves its disk unless it says otherwise: chunk files over HTTP (the imaging agent) or raw bytes over NBD. */
  readonly transport: 'chunks' | 'nbd';
  /** Where alerts go and when the daily summary is sent (`alerts.*` keys); the settings page overrides them field by field. */
  readonly alerts: AlertFileSettings;
  /** How x86-64 UEFI PCs without a choice of their own boot: iPXE, or the signed shim → GRUB chain (Secure Boot). */
  readonly uefiBoot: 'ipxe' | 'signed';
}

/** The directory of the netclone checkout or installed package (holds `images/` and `boot/`). */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export const DEFAULT_DATA_DIR = process.env.NETCLONE_DATA ?? PACKAGE_ROOT;

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Every key the file and flags accept, in file spelling (kebab-case like the flags). */
export type ConfigKey =
  | AlertConfigKey
  | 'data' | 'images' | 'boot-dir' | 'listen' | 'nbd-port' | 'http-port' | 'tftp-port' | 'dhcp' | 'interface'
  | 'server-ip' | 'dhcp-range' | 'dhcp-netmask' | 'dhcp-router' | 'dhcp-dns' | 'dhcp-lease-time' | 'keep-versions'
  | 'log-level' | 'local-boot' | 'menu-timeout' | 'url-ttl' | 'secure-cookies' | 'arm64-boot-file'
  | 'tftp-busy-poll' | 'client-timeout' | 'client-examine-timeout' | 'transport' | 'uefi-boot';

export const CONFIG_KEYS: readonly ConfigKey[] = [
  'data', 'images', 'boot-dir', 'listen', 'nbd-port', 'http-port', 'tftp-port', 'dhcp', 'interface', 'server-ip',
  'dhcp-range', 'dhcp-netmask', 'dhcp-router', 'dhcp-dns', 'dhcp-lease-time', 'keep-versions', 'log-level',
  'local-boot', 'menu-timeout', 'url-ttl', 'secure-cookies', 'arm64-boot-file', 'tftp-busy-poll', 'client-timeout',
  'client-examine-timeout', 'transport', 'uefi-boot',
  ...ALERT_CONFIG_KEYS,
];

export type ConfigOverrides = Partial<Record<ConfigKey, string>>;

export function isConfigKey(key: string): key is ConfigKey {
  return (CONFIG_KEYS as readonly string[]).includes(key);
}

/** Parse `key = value` text. Pure; errors name the line. */
export function parseConfigText(text: string, source = 'config'): ConfigOverrides {
  if (text.length > 1_000_000) throw new ConfigError(`${source}: file is larger than 1 MB; is this the right file?`);
  const out: ConfigOverrides = {};
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.replace(/(^|\s)#.*$/, '').trim();
    if (line === '') return;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new ConfigError(`${source}:${i + 1}: expected "key = value", got "${raw.trim()}"`);
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (!isConfigKey(key)) {
      throw new ConfigError(`${source}:${i + 1}: unknown option "${key}" (known: ${CONFIG_KEYS.join(', ')})`);
    }
    out[key] = value;
  });
  return out;
}

function port(key: string, value: string): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) > 65535) {
    throw new ConfigError(`${key}: "${value}" is not a port number (0-65535)`);
  }
  return Number(value);
}

function positiveInt(key: string, value: string, max: number): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > max) {
    throw new ConfigError(`${key}: "${value}" must be a whole number from 1 to ${max}`);
  }
  return Number(value);
}

function ipv4(key: string, value: string): string {
  if (!isIPv4(value)) throw new ConfigError(`${key}: "${value}" is not an IPv4 address`);
  return value;
}

function oneOf<T extends string>(key: string, value: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(value)) {
    throw new ConfigError(`${key}: "${value}" must be one of ${allowed.join(', ')}`);
  }
  return value as T;
}

/** Parse "30s", "15m", "2h", "7d" or plain seconds. */
export function parseDuration(key: string, value: string): number {
  const m = /^(\d+)\s*(s|m|h|d)?$/.exec(value);
  if (!m) throw new ConfigError(`${key}: "${value}" is not a duration (e.g. 90s, 15m, 2h, 7d)`);
  const n = Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's') as 's' | 'm' | 'h' | 'd'];
  if (n < 1 || n > 365 * 86400) throw new ConfigError(`${key}: "${value}" must be between 1s and 365d`);
  return n;
}

/** Layer overrides (file first, then flags) on the embedded defaults and validate the result. */
export function resolveConfig(...layers: ConfigOverrides[]): Config {
  const o: ConfigOverrides = Object.assign({}, ...layers);
  const dataDir = path.resolve(o.data ?? DEFAULT_DATA_DIR);
  const dhcp = oneOf('dhcp', o.dhcp ?? 'proxy', ['off', 'proxy', 'full'] as const);
  let dhcpRange: Config['dhcpRange'] = null;
  if (o['dhcp-range'] !== undefined) {
    const m = /^([\d.]+)\s*-\s*([\d.]+)$/.exec(o['dhcp-range']);
    if (!m) throw new ConfigError(`dhcp-range: "${o['dhcp-range']}" must look like 192.168.50.100-192.168.50.200`);
    const start = ipv4('dhcp-range', m[1]);
    const end = ipv4('dhcp-range', m[2]);
    if (ipToNumber(start) > ipToNumber(end)) throw new ConfigError(`dhcp-range: start ${start} is after end ${end}`);
    if (ipToNumber(end) - ipToNumber(start) > 65535) throw new ConfigError('dhcp-range: more than 65536 addresses; use a smaller range');
    dhcpRange = { start, end };
  }
  if (dhcp === 'full' && dhcpRange === null) {
    throw new ConfigError('dhcp full: needs --dhcp-range START-END (the addresses netclone may lease)');
  }
  const listen = o.listen ?? '0.0.0.0';
  if (!isIPv4(listen) && listen !== '::' && listen !== 'localhost') {
    throw new ConfigError(`listen: "${listen}" is not an IPv4 address (use 0.0.0.0 for all)`);
  }
  const iface = o.interface ?? null;
  if (iface !== null && !/^[A-Za-z0-9_.:-]{1,15}$/.test(iface)) throw new ConfigError(`interface: "${iface}" is not an interface name`);
  const yes = ['yes', 'true', 'on', '1'];
  const no = ['no', 'false', 'off', '0'];
  const secure = o['secure-cookies'] ?? 'no';
  if (![...yes, ...no].includes(secure)) throw new ConfigError(`secure-cookies: "${secure}" must be yes or no`);
  const busyPoll = o['tftp-busy-poll'] ?? 'yes';
  if (![...yes, ...no].includes(busyPoll)) throw new ConfigError(`tftp-busy-poll: "${busyPoll}" must be yes or no`);
  // The client reports every few seconds; below half a minute one slow answer would fail a healthy task.
  const clientTimeoutSeconds = parseDuration('client-timeout', o['client-timeout'] ?? '2m');
  if (clientTimeoutSeconds < 30) throw new ConfigError(`client-timeout: "${o['client-timeout']}" is too short; use 30s or more`);
  const clientExamineTimeoutSeconds = parseDuration('client-examine-timeout', o['client-examine-timeout'] ?? '10m');
  if (clientExamineTimeoutSeconds < clientTimeoutSeconds) {
    throw new ConfigError(`client-examine-timeout: "${o['client-examine-timeout']}" is shorter than client-timeout (${clientTimeoutSeconds} s); examining the disks takes longer, not shorter`);
  }
  return {
    dataDir,
    imagesDir: path.resolve(dataDir, o.images ?? 'images'),
    bootDir: path.resolve(o['boot-dir'] ?? path.join(PACKAGE_ROOT, 'boot')),
    listen,
    nbdPort: port('nbd-port', o['nbd-port'] ?? '10809'),
    httpPort: port('http-port', o['http-port'] ?? '8080'),
    tftpPort: port('tftp-port', o['tftp-port'] ?? '69'),
    dhcp,
    interface: iface,
    serverIp: o['server-ip'] === undefined ? null : ipv4('server-ip', o['server-ip']),
    dhcpRange,
    dhcpNetmask: ipv4('dhcp-netmask', o['dhcp-netmask'] ?? '255.255.255.0'),
    dhcpRouter: o['dhcp-router'] === undefined || o['dhcp-router'] === '' ? null : ipv4('dhcp-router', o['dhcp-router']),
    dhcpDns: (o['dhcp-dns'] ?? '').split(',').map((s) => s.trim()).filter(Boolean).map((s) => ipv4('dhcp-dns', s)),
    dhcpLeaseSeconds: parseDuration('dhcp-lease-time', o['dhcp-lease-time'] ?? '1h'),
    keepVersions: positiveInt('keep-versions', o['keep-versions'] ?? '3', 1000),
    logLevel: oneOf('log-level', o['log-level'] ?? 'info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const),
    localBoot: oneOf('local-boot', o['local-boot'] ?? 'exit', ['exit', 'sanboot'] as const),
    menuTimeoutSeconds: positiveInt('menu-timeout', o['menu-timeout'] ?? '10', 3600),
    urlTtlSeconds: parseDuration('url-ttl', o['url-ttl'] ?? '1h'),
    secureCookies: yes.includes(secure),
    arm64BootFile: o['arm64-boot-file'] ?? 'ipxe-arm64.efi',
    tftpBusyPoll: yes.includes(busyPoll),
    clientTimeoutSeconds,
    clientExamineTimeoutSeconds,
    transport: oneOf('transport', o.transport ?? 'chunks', ['chunks', 'nbd'] as const),
    alerts: parseAlertFileSettings(o, (m) => new ConfigError(m)),
    uefiBoot: oneOf('uefi-boot', o['uefi-boot'] ?? 'ipxe', ['ipxe', 'signed'] as const),
  };
}
