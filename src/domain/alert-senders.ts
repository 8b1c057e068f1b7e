/**
 * The two ways an alert leaves the server: an email through an SMTP server (nodemailer), and
 * a JSON POST to a webhook. Each send either resolves or rejects with a message that says what
 * went wrong and what to check; alerts.ts catches it, so a dead mail server never fails the task
 * or tick that raised the alert.
 *
 * The webhook body (documented in the README):
 *   { "event": "failure" | "missed" | "overdue" | "summary" | "test",
 *     "host": name or null, "mac": "aa:bb:…" or null, "image": name or null,
 *     "reason": text or null, "at": ISO 8601 time, "summary": text (summary and test only) }
 */
import { readFile } from 'node:fs/promises';
import nodemailer from 'nodemailer';
import type { SmtpSettings } from './alert-config.js';

export type AlertEvent = 'failure' | 'missed' | 'overdue' | 'summary' | 'test';

export interface Alert {
  readonly event: AlertEvent;
  /** The host's name (its MAC when it has none); null for the summary and the test. */
  readonly host: string | null;
  readonly mac: string | null;
  readonly image: string | null;
  readonly reason: string | null;
  readonly at: string;
  readonly summary?: string;
}

export interface AlertChannel {
  readonly name: 'email' | 'webhook';
  /** Where it goes, for messages ("smtp.example.org:587 to ops@example.org"). */
  readonly target: string;
  send(alert: Alert): Promise<void>;
}

const EVENT_WORDS: Readonly<Record<AlertEvent, string>> = {
  failure: 'task failed',
  missed: 'scheduled backup missed',
  overdue: 'backup overdue',
  summary: 'daily summary',
  test: 'test message',
};

/** "[netclone] task failed: PC 12 (aa:bb:…)". */
export function alertSubject(alert: Alert): string {
  const who = alert.host ? `: ${alert.host}${alert.mac && alert.mac !== alert.host ? ` (${alert.mac})` : ''}` : '';
  return `[netclone] ${EVENT_WORDS[alert.event]}${who}`;
}

export function alertText(alert: Alert): string {
  const lines = [`${EVENT_WORDS[alert.event]} at ${alert.at}`];
  if (alert.host) lines.push(`PC: ${alert.host}`);
  if (alert.mac) lines.push(`MAC: ${alert.mac}`);
  if (alert.image) lines.push(`Image: ${alert.image}`);
  if (alert.reason) lines.push(`Reason: ${alert.reason}`);
  if (alert.summary) lines.push('', alert.summary);
  return `${lines.join('\n')}\n`;
}

/** The webhook's JSON body: exactly the documented fields. */
export function webhookBody(alert: Alert): Record<string, string | null> {
  return {
    event: alert.event, host: alert.host, mac: alert.mac, image: alert.image, reason: alert.reason, at: alert.at,
    ...(alert.summary !== undefined ? { summary: alert.summary } : {}),
  };
}

export interface SenderOptions {
  /** How long one send may take, connection included. */
  readonly timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 15_000;

async function smtpPassword(p: SmtpSettings['password']): Promise<string | undefined> {
  if (p === null) return undefined;
  if ('value' in p) return p.value;
  try {
    return (await readFile(p.file, 'utf8')).replace(/\r?\n$/, '');
  } catch (err) {
    throw new Error(`cannot read the SMTP password file ${p.file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); check alerts.smtp.password-file`, { cause: err });
  }
}

export function emailChannel(smtp: SmtpSettings, options: SenderOptions = {}): AlertChannel {
  const timeout = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const target = `${smtp.host}:${smtp.port} to ${smtp.to.join(', ')}`;
  return {
    name: 'email',
    target,
    async send(alert) {
      const pass = await smtpPassword(smtp.password);
      const transport = nodemailer.createTransport({
        host: smtp.host,
        port: smtp.port,
        secure: smtp.secure,
        auth: smtp.user !== null ? { user: smtp.user, pass } : undefined,
        connectionTimeout: timeout,
        greetingTimeout: timeout,
        socketTimeout: timeout,
      });
      try {
        await transport.sendMail({ from: smtp.from, to: [...smtp.to], subject: alertSubject(alert), text: alertText(alert) });
      } catch (err) {
        const e = err as Error & { code?: string; response?: string };
        throw new Error(`the SMTP server ${smtp.host}:${smtp.port} did not take the message: ${e.response ?? e.message}${e.code ? ` (${e.code})` : ''}; check the SMTP settings`, { cause: err });
      } finally {
        transport.close();
      }
    },
  };
}

export function webhookChannel(url: string, options: SenderOptions = {}): AlertChannel {
  const timeout = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return {
    name: 'webhook',
    target: url,
    async send(alert) {
      let res: Response;
      try {
        res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'user-agent': 'netclone-alerts' },
          body: JSON.stringify(webhookBody(alert)),
          signal: AbortSignal.timeout(timeout),
          redirect: 'error',
        });
      } catch (err) {
        const e = err as Error & { cause?: { code?: string; message?: string } };
        const why = e.name === 'TimeoutError' ? `no answer within ${timeout < 1000 ? `${timeout} ms` : `${Math.round(timeout / 1000)} s`}` : (e.cause?.code ?? e.cause?.message ?? e.message);
        throw new Error(`the webhook ${url} could not be reached: ${why}; check the URL and that the receiver is up`, { cause: err });
      }
      // The body is not ours to keep; reading it frees the connection.
      const text = (await res.text().catch(() => '')).slice(0, 200);
      if (!res.ok) throw new Error(`the webhook ${url} answered ${res.status}${text ? `: ${text}` : ''}`);
    },
  };
}
