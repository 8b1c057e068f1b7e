/**
 * Alert settings: where alerts go (email over SMTP, a JSON webhook) and when the daily summary
 * is sent. Two sources: the config file's `alerts.*` keys, and the settings page, kept in the
 * database. A value set on the page overrides the file's value for that one field; a field left
 * empty on the page keeps the file's value, and "off" turns a channel off whatever the file says.
 *
 * Pure: parsing and merging only. The SMTP password is read from its file when a message is sent
 * (alert-senders.ts), so a changed password file needs no restart.
 */
import { isIP } from 'node:net';

/** The config file keys, in file spelling. */
export const ALERT_CONFIG_KEYS = [
  'alerts.smtp.host', 'alerts.smtp.port', 'alerts.smtp.secure', 'alerts.smtp.user', 'alerts.smtp.password-file',
  'alerts.smtp.from', 'alerts.smtp.to', 'alerts.webhook.url', 'alerts.daily-summary',
] as const;

export type AlertConfigKey = (typeof ALERT_CONFIG_KEYS)[number];

export interface SmtpSettings {
  readonly host: string;
  readonly port: number;
  /** TLS from the first byte (port 465); otherwise STARTTLS when the server offers it. */
  readonly secure: boolean;
  readonly user: string | null;
  /** Where the password is: a file (config file) or the value itself (settings page). */
  readonly password: { readonly file: string } | { readonly value: string } | null;
  readonly from: string;
  readonly to: readonly string[];
}

export interface DailyTime {
  readonly hour: number;
  readonly minute: number;
}

/** What the alerts use after the file and the page are merged: null means that channel is off. */
export interface AlertSettings {
  readonly smtp: SmtpSettings | null;
  readonly webhookUrl: string | null;
  readonly dailySummary: DailyTime | null;
}

/** The config file's alert keys, checked but not yet merged (all optional). */
export interface AlertFileSettings {
  readonly smtpHost: string | null;
  readonly smtpPort: number | null;
  readonly smtpSecure: boolean | null;
  readonly smtpUser: string | null;
  readonly smtpPasswordFile: string | null;
  readonly smtpFrom: string | null;
  readonly smtpTo: readonly string[] | null;
  readonly webhookUrl: string | null;
  /** null: the key is absent; 'off': set to off. */
  readonly dailySummary: DailyTime | 'off' | null;
}

/**
 * The settings page's values as the database keeps them: a missing or empty field keeps the
 * file's value; "off" in smtpHost, webhookUrl or dailySummary turns that off.
 */
export interface AlertPageSettings {
  smtpHost?: string;
  smtpPort?: string;
  smtpSecure?: string;
  smtpUser?: string;
  smtpPassword?: string;
  smtpFrom?: string;
  smtpTo?: string;
  webhookUrl?: string;
  dailySummary?: string;
}

/** What alerts keep between restarts: the hosts already reported overdue (MAC → since when), so an episode is reported once. */
export interface AlertState {
  overdue: Record<string, string>;
}

export const ALERT_PAGE_FIELDS = ['smtpHost', 'smtpPort', 'smtpSecure', 'smtpUser', 'smtpPassword', 'smtpFrom', 'smtpTo', 'webhookUrl', 'dailySummary'] as const;

export const NO_FILE_ALERTS: AlertFileSettings = {
  smtpHost: null, smtpPort: null, smtpSecure: null, smtpUser: null, smtpPasswordFile: null, smtpFrom: null, smtpTo: null, webhookUrl: null, dailySummary: null,
};

type Fail = (message: string) => Error;

const HOST_RE = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
/** Deliberately loose: the SMTP server is the judge of an address; this catches typos like a missing @. */
const EMAIL_RE = /^[^\s@<>,;"]+@[^\s@<>,;"]+$/;

function smtpHost(key: string, value: string, fail: Fail): string {
  if (!HOST_RE.test(value) && !isIP(value)) throw fail(`${key}: "${value}" is not a host name or IP address`);
  return value;
}

function portNumber(key: string, value: string, fail: Fail): number {
  if (!/^\d{1,5}$/.test(value) || Number(value) < 1 || Number(value) > 65535) throw fail(`${key}: "${value}" is not a port number (1-65535)`);
  return Number(value);
}

function yesNo(key: string, value: string, fail: Fail): boolean {
  if (['yes', 'true', 'on', '1'].includes(value)) return true;
  if (['no', 'false', 'off', '0'].includes(value)) return false;
  throw fail(`${key}: "${value}" must be yes or no`);
}

function email(key: string, value: string, fail: Fail): string {
  if (!EMAIL_RE.test(value) || value.length > 254) throw fail(`${key}: "${value}" is not an email address (name@example.org)`);
  return value;
}

function emails(key: string, value: string, fail: Fail): string[] {
  const list = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (list.length === 0) throw fail(`${key}: give at least one email address (several separated by commas)`);
  if (list.length > 50) throw fail(`${key}: more than 50 addresses; use a mailing list`);
  return list.map((a) => email(key, a, fail));
}

function httpUrl(key: string, value: string, fail: Fail): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw fail(`${key}: "${value}" is not a URL (http://host:port/path)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw fail(`${key}: "${value}" must be an http:// or https:// URL`);
  return url.toString();
}

export function parseDailyTime(key: string, value: string, fail: Fail): DailyTime {
  const m = /^(\d{1,2}):(\d{2})$/.exec(value);
  if (!m || Number(m[1]) > 23 || Number(m[2]) > 59) throw fail(`${key}: "${value}" must be a time of day HH:MM (24-hour, the server's time zone) or off`);
  return { hour: Number(m[1]), minute: Number(m[2]) };
}

export function formatDailyTime(t: DailyTime): string {
  return `${String(t.hour).padStart(2, '0')}:${String(t.minute).padStart(2, '0')}`;
}

/** The config file's `alerts.*` values, checked one by one. `fail` makes the caller's error type. */
export function parseAlertFileSettings(o: Partial<Record<AlertConfigKey, string>>, fail: Fail): AlertFileSettings {
  const get = (k: AlertConfigKey): string | null => {
    const v = o[k]?.trim();
    return v === undefined || v === '' ? null : v;
  };
  const host = get('alerts.smtp.host');
  const port = get('alerts.smtp.port');
  const secure = get('alerts.smtp.secure');
  const to = get('alerts.smtp.to');
  const from = get('alerts.smtp.from');
  const url = get('alerts.webhook.url');
  const daily = get('alerts.daily-summary');
  const s: AlertFileSettings = {
    smtpHost: host === null || host === 'off' ? null : smtpHost('alerts.smtp.host', host, fail),
    smtpPort: port === null ? null : portNumber('alerts.smtp.port', port, fail),
    smtpSecure: secure === null ? null : yesNo('alerts.smtp.secure', secure, fail),
    smtpUser: get('alerts.smtp.user'),
    smtpPasswordFile: get('alerts.smtp.password-file'),
    smtpFrom: from === null ? null : email('alerts.smtp.from', from, fail),
    smtpTo: to === null ? null : emails('alerts.smtp.to', to, fail),
    webhookUrl: url === null || url === 'off' ? null : httpUrl('alerts.webhook.url', url, fail),
    dailySummary: daily === null ? null : daily === 'off' ? 'off' : parseDailyTime('alerts.daily-summary', daily, fail),
  };
  if (s.smtpHost !== null && (s.smtpTo === null || s.smtpFrom === null)) {
    throw fail('alerts.smtp.host is set, but alerts.smtp.from or alerts.smtp.to is not: email alerts need a sender and at least one recipient');
  }
  if (s.smtpPasswordFile !== null && s.smtpUser === null) throw fail('alerts.smtp.password-file is set without alerts.smtp.user: the password needs a user name');
  return s;
}

/** Thrown for a page value that cannot be used; the page shows the message beside the form. */
export class AlertSettingsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AlertSettingsError';
  }
}

const pageFail: Fail = (m) => new AlertSettingsError(m);

/** The page's values, trimmed and checked (each non-empty one as the file would check it); empties are dropped. */
export function checkPageSettings(input: Readonly<Record<string, string | undefined>>): AlertPageSettings {
  const out: AlertPageSettings = {};
  for (const f of ALERT_PAGE_FIELDS) {
    const v = input[f]?.trim();
    if (v !== undefined && v !== '') out[f] = f === 'smtpPassword' ? (input[f] ?? '') : v;
  }
  if (out.smtpHost !== undefined && out.smtpHost !== 'off') smtpHost('SMTP server', out.smtpHost, pageFail);
  if (out.smtpPort !== undefined) portNumber('SMTP port', out.smtpPort, pageFail);
  if (out.smtpSecure !== undefined) yesNo('TLS from the start', out.smtpSecure, pageFail);
  if (out.smtpFrom !== undefined) email('From', out.smtpFrom, pageFail);
  if (out.smtpTo !== undefined) emails('To', out.smtpTo, pageFail);
  if (out.webhookUrl !== undefined && out.webhookUrl !== 'off') out.webhookUrl = httpUrl('Webhook URL', out.webhookUrl, pageFail);
  if (out.dailySummary !== undefined && out.dailySummary !== 'off') parseDailyTime('Daily summary', out.dailySummary, pageFail);
  return out;
}

/**
 * The settings in force: each page value over the file's. Email is on when a server, a sender and
 * a recipient are known; an incomplete email setup is reported, not silently ignored.
 */
export function mergeAlertSettings(file: AlertFileSettings, page: AlertPageSettings): { settings: AlertSettings; problems: string[] } {
  const problems: string[] = [];
  const host = page.smtpHost !== undefined ? (page.smtpHost === 'off' ? null : page.smtpHost) : file.smtpHost;
  const secure = page.smtpSecure !== undefined ? yesNo('secure', page.smtpSecure, pageFail) : (file.smtpSecure ?? false);
  const port = page.smtpPort !== undefined ? Number(page.smtpPort) : (file.smtpPort ?? (secure ? 465 : 587));
  const user = page.smtpUser ?? file.smtpUser;
  const password = page.smtpPassword !== undefined ? { value: page.smtpPassword } : file.smtpPasswordFile !== null ? { file: file.smtpPasswordFile } : null;
  const from = page.smtpFrom ?? file.smtpFrom;
  const to = page.smtpTo !== undefined ? emails('To', page.smtpTo, pageFail) : file.smtpTo;
  let smtp: SmtpSettings | null = null;
  if (host !== null) {
    if (from === null || to === null) problems.push('email alerts are off: the SMTP server is set but the sender (From) or the recipients (To) are not');
    else smtp = { host, port, secure, user, password: user === null ? null : password, from, to };
  }
  const webhookUrl = page.webhookUrl !== undefined ? (page.webhookUrl === 'off' ? null : page.webhookUrl) : file.webhookUrl;
  const daily = page.dailySummary !== undefined
    ? (page.dailySummary === 'off' ? null : parseDailyTime('Daily summary', page.dailySummary, pageFail))
    : (file.dailySummary === 'off' ? null : file.dailySummary);
  return { settings: { smtp, webhookUrl, dailySummary: daily }, problems };
}
