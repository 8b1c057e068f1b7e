/**
 * The alert settings page and its "send test" button, through the web app, against a real SMTP
 * server (aiosmtpd in a network namespace of the test's own) and a real HTTP listener for the webhook.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AlertService } from '../../src/domain/alerts.js';
import { parseAlertFileSettings } from '../../src/domain/alert-config.js';
import { Commands } from '../../src/domain/commands.js';
import { setAdminPassword } from '../../src/domain/users.js';
import { buildWebApp } from '../../src/web/app.js';
import { alertRoutes } from '../../src/web/alert-routes.js';
import { openTestDomain, type TestDomain } from '../lib/domain.js';
import { startSmtpNet, type SmtpNet } from '../domain/smtp-net.js';
import { csrfFrom, login, PASSWORD } from './helpers.js';

let smtp: SmtpNet;
let d: TestDomain;
let app: FastifyInstance;
let alerts: AlertService;
let hookServer: http.Server;
let hookUrl: string;
const hooks: Array<Record<string, unknown>> = [];

beforeAll(async () => {
  smtp = await startSmtpNet();
  hookServer = http.createServer((req, res) => {
    let data = '';
    req.on('data', (c: Buffer) => (data += c.toString()));
    req.on('end', () => {
      hooks.push(JSON.parse(data) as Record<string, unknown>);
      res.writeHead(200).end('ok');
    });
  });
  await new Promise<void>((resolve) => hookServer.listen(0, '127.0.0.1', resolve));
  hookUrl = `http://127.0.0.1:${(hookServer.address() as AddressInfo).port}/alerts`;

  d = await openTestDomain('netclone-alerts-page-');
  const { config, logger, db, events, hosts, tasks, store } = d;
  // The file names the webhook only; the page adds email.
  const file = parseAlertFileSettings({ 'alerts.webhook.url': hookUrl, 'alerts.daily-summary': '07:00' }, (m) => new Error(m));
  alerts = new AlertService({ db, events, tasks, file, logger, tickMs: 0 });
  const commands = new Commands({ config, logger, db, events, hosts, tasks, store, nbd: () => null });
  await setAdminPassword(db, PASSWORD);
  app = await buildWebApp(
    { config, logger, db, events, hosts, tasks, commands, services: () => [], bootFiles: async () => [] },
    { announceSetup: false, extraPlugins: [alertRoutes(alerts)] },
  );
  await app.ready();
});

afterAll(async () => {
  await app?.close();
  await alerts?.stop();
  await d?.close();
  hookServer?.closeAllConnections();
  await new Promise<void>((resolve) => hookServer?.close(() => resolve()) ?? resolve());
  await smtp?.stop();
});

describe('alert settings page', () => {
  it('shows what is in force and where each value comes from', async () => {
    const { agent } = await login(app);
    const page = await agent.get('/settings/alerts').expect(200);
    expect(page.text).toContain('<strong>Email:</strong> off');
    expect(page.text).toContain(`POST to <code>${hookUrl}</code>`);
    expect(page.text).toContain('at 07:00 (server time)');
    expect(page.text).toContain(`placeholder="config file: ${hookUrl}"`);
    expect(page.text).toContain('overrides the config file');
  });

  it('saves the page\'s values over the file\'s, and "send test" reaches the SMTP server and the webhook and says so', async () => {
    const { agent } = await login(app);
    const form = await agent.get('/settings/alerts').expect(200);
    const saved = await agent.post('/settings/alerts').type('form').send({
      _csrf: csrfFrom(form.text), smtpHost: smtp.address, smtpPort: String(smtp.port), smtpFrom: 'netclone@office.example', smtpTo: 'it@office.example',
      smtpUser: '', smtpPassword: '', smtpSecure: '', webhookUrl: '', dailySummary: 'off',
    }).expect(200);
    expect(saved.text).toContain('Alert settings saved.');
    expect(saved.text).toContain(`<strong>Email:</strong> on — ${smtp.address}:${smtp.port} from netclone@office.example to it@office.example`);
    expect(saved.text).toContain('<strong>Daily summary:</strong> off');
    expect(saved.headers['hx-push-url']).toBe('/settings/alerts');
    expect(d.db.data.settings.alerts).toEqual({ smtpHost: smtp.address, smtpPort: String(smtp.port), smtpFrom: 'netclone@office.example', smtpTo: 'it@office.example', dailySummary: 'off' });

    const tested = await agent.post('/settings/alerts/test').type('form').send({ _csrf: csrfFrom(saved.text) }).expect(200);
    expect(tested.text).toMatch(/<li class="test-ok"><strong>email<\/strong> \([^)]*\): sent<\/li>/);
    expect(tested.text).toMatch(/<li class="test-ok"><strong>webhook<\/strong> \([^)]*\): sent<\/li>/);
    const [mail] = await smtp.waitForMessages(1);
    expect(mail.subject).toBe('[netclone] test message');
    expect(mail.rcptTos).toEqual(['it@office.example']);
    expect(mail.body).toContain('A test message from netclone');
    expect(hooks.at(-1)).toMatchObject({ event: 'test', summary: 'A test message from netclone: alerts reach you this way.' });
  });

  it('refuses a bad value with the reason, keeping what was saved', async () => {
    const { agent } = await login(app);
    const form = await agent.get('/settings/alerts').expect(200);
    const before = d.db.data.settings.alerts;
    const refused = await agent.post('/settings/alerts').type('form').send({ _csrf: csrfFrom(form.text), smtpTo: 'not an address' }).expect(400);
    expect(refused.text).toContain('Not saved: To: &quot;not an address&quot; is not an email address');
    expect(d.db.data.settings.alerts).toEqual(before);
  });

  it('a failing channel shows its reason on the page', async () => {
    const { agent } = await login(app);
    await request(app.server).put('/api/v1/alerts/settings').expect(401);
    const form = await agent.get('/settings/alerts').expect(200);
    await agent.post('/settings/alerts').type('form').send({
      _csrf: csrfFrom(form.text), smtpHost: smtp.address, smtpPort: '2599', smtpFrom: 'netclone@office.example', smtpTo: 'it@office.example',
    }).expect(200);
    const tested = await agent.post('/settings/alerts/test').type('form').send({ _csrf: csrfFrom(form.text) }).expect(200);
    expect(tested.text).toMatch(/<li class="error-text"><strong>email<\/strong> \([^)]*\): failed — the SMTP server [\d.]+:2599 did not take the message: .*ECONNREFUSED/);
  });

  it('the API reads and sets the same settings and sends the test', async () => {
    const { agent, csrf } = await login(app);
    const put = await agent.put('/api/v1/alerts/settings').set('x-csrf-token', csrf).send({ smtpHost: 'off', dailySummary: '06:45' }).expect(200);
    expect(put.body).toEqual({ email: null, webhookUrl: hookUrl, dailySummary: '06:45', problems: [] });
    expect((await agent.get('/api/v1/alerts/settings').expect(200)).body).toEqual(put.body);
    await agent.put('/api/v1/alerts/settings').set('x-csrf-token', csrf).send({ dailySummary: '6 am' }).expect(400);
    const results = await agent.post('/api/v1/alerts/test').set('x-csrf-token', csrf).expect(200);
    expect(results.body).toEqual([{ channel: 'webhook', target: hookUrl, ok: true, message: 'sent' }]);
  });
});
