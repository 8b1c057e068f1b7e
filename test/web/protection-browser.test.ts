/**
 * A technician's walk in headless Chromium on the running appliance: the dashboard's protection view
 * (an overdue PC marked, a protected one not), then Settings → Alerts, where email is set up on the page
 * and "Send test message" reaches a real SMTP server (aiosmtpd in a network namespace of this test's own)
 * and the config file's webhook (a real HTTP listener on loopback).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAlertFileSettings } from '../../src/domain/alert-config.js';
import type { ScheduleRecord, TaskRecord } from '../../src/domain/database.js';
import { setAdminPassword } from '../../src/domain/users.js';
import { nullLogger } from '../../src/lib/log.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { loopbackConfig } from '../lib/appliance-config.js';
import { startSmtpNet, type SmtpNet } from '../domain/smtp-net.js';
import { PASSWORD } from './helpers.js';
import { waitFor } from '../lib/wait.js';

const ARTIFACTS = join(process.cwd(), 'test-artifacts', 'web');
const FRESH = '52:54:00:aa:00:01';
const STALE = '52:54:00:aa:00:02';
const HOUR = 3_600_000;

let app: RunningAppliance;
let smtp: SmtpNet;
let hookServer: http.Server;
const hooks: Array<Record<string, unknown>> = [];
let dir: string;
let profile: string;
let browser: BrowserContext;
let page: Page;
let base: string;

function capture(mac: string, finishedAt: Date): TaskRecord {
  const at = finishedAt.toISOString();
  return {
    id: `walk-${mac}`, kind: 'capture', mac, image: 'office', state: 'done', createdAt: at, updatedAt: at, startedAt: at, finishedAt: at, reason: null,
    diskSerial: null, after: 'poweroff', transport: 'chunks', tokenHash: '', clientIp: null, disk: null,
    progress: { bytes: 0, total: 0, percent: 100, mbps: 0, etaSeconds: 0 }, result: { version: 2, digest: null, bytesOnWire: 0 }, log: [],
  };
}

function daily(mac: string): ScheduleRecord {
  return { id: `walk-${mac}`, target: { mac }, image: 'office', spec: { kind: 'daily', time: '02:00' }, wake: false, after: 'poweroff', windowMinutes: 60, createdAt: new Date(Date.now() - 60 * 24 * HOUR).toISOString(), lastRunAt: null };
}

beforeAll(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  smtp = await startSmtpNet();
  hookServer = http.createServer((req, res) => {
    let data = '';
    req.on('data', (c: Buffer) => (data += c.toString()));
    req.on('end', () => {
      hooks.push(JSON.parse(data) as Record<string, unknown>);
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => hookServer.listen(0, '127.0.0.1', resolve));
  const hookUrl = `http://127.0.0.1:${(hookServer.address() as AddressInfo).port}/alerts`;

  dir = await mkdtemp(join(tmpdir(), 'netclone-protection-browser-'));
  app = await startAppliance({ ...loopbackConfig(dir), alerts: parseAlertFileSettings({ 'alerts.webhook.url': hookUrl }, (m) => new Error(m)) }, nullLogger());
  await setAdminPassword(app.core.db, PASSWORD);
  await app.core.hosts.add(FRESH, 'Front desk');
  await app.core.hosts.add(STALE, 'Back office');
  // Daily at 02:00 with a 60-minute window: a backup may be 26 h old. Front desk's is an hour old, Back office's four days.
  app.core.db.data.schedules.push(daily(FRESH), daily(STALE));
  app.core.db.data.tasks.push(capture(FRESH, new Date(Date.now() - HOUR)), capture(STALE, new Date(Date.now() - 96 * HOUR)));
  await app.core.db.write();
  base = `http://127.0.0.1:${app.ports.http}`;
  profile = await mkdtemp(join(tmpdir(), 'netclone-protection-chromium-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 860 },
  });
  page = browser.pages()[0] ?? (await browser.newPage());
});

afterAll(async () => {
  await browser?.close();
  await app?.stop();
  hookServer?.closeAllConnections();
  await new Promise<void>((resolve) => (hookServer ? hookServer.close(() => resolve()) : resolve()));
  await smtp?.stop();
  if (profile) await rm(profile, { recursive: true, force: true });
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** One session, in order: log in, read the protection view, then set up and test alerts from its "Alerts" link. */
describe('protection view and alert settings in Chromium', () => {
  it('the dashboard marks the overdue PC by word and row style, and not the protected one', async () => {
    await page.goto(`${base}/`);
    await page.fill('input[name=password]', PASSWORD);
    await page.click('button:has-text("Log in")');
    await page.waitForURL(`${base}/`);
    const stale = page.locator(`#protection tr[data-mac="${STALE}"]`);
    const fresh = page.locator(`#protection tr[data-mac="${FRESH}"]`);
    expect(await stale.getAttribute('class')).toBe('overdue');
    expect(await stale.textContent()).toContain('Overdue');
    expect(await stale.textContent()).toContain('4 days');
    expect(await fresh.textContent()).toContain('Protected');
    const background = (l: typeof stale): Promise<string> => l.evaluate((el) => getComputedStyle(el).backgroundColor);
    expect(await background(stale)).not.toBe(await background(fresh));
    // Overdue first.
    expect(await page.locator('#protection tbody tr').first().getAttribute('data-mac')).toBe(STALE);
    await page.screenshot({ path: join(ARTIFACTS, 'protection-dashboard.png'), fullPage: true });
  });

  it('sets up email on the alerts page and "Send test message" reaches the SMTP server and the webhook', async () => {
    await page.click('#protection a:has-text("Alerts")');
    await page.waitForURL(`${base}/settings/alerts`);
    expect(await page.textContent('#alerts-in-force')).toContain('Email: off');
    await page.fill('input[name=smtpHost]', smtp.address);
    await page.fill('input[name=smtpPort]', String(smtp.port));
    await page.fill('input[name=smtpFrom]', 'netclone@office.example');
    await page.fill('input[name=smtpTo]', 'it@office.example');
    await page.click('#alert-settings button:has-text("Save")');
    await expect.poll(() => page.textContent('#alerts-in-force')).toContain(`Email: on — ${smtp.address}:${smtp.port}`);
    expect(page.url()).toBe(`${base}/settings/alerts`);
    await page.click('button:has-text("Send test message")');
    await expect.poll(() => page.textContent('#test-results')).toMatch(/email \([^)]*\): sent[\s\S]*webhook \([^)]*\): sent/);
    expect(page.url()).toBe(`${base}/settings/alerts`);
    // The server's own minute check may have sent Back office's overdue alert too: look for the test message.
    await waitFor('the test message at the SMTP server', () => smtp.messages.find((m) => m.subject === '[netclone] test message'), { timeoutMs: 10_000 });
    expect(hooks.filter((h) => h.event === 'test')).toHaveLength(1);
    await page.screenshot({ path: join(ARTIFACTS, 'alerts-send-test.png'), fullPage: true });
  });
});
