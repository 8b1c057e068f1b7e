/**
 * Alerts through a real SMTP server (aiosmtpd in a network namespace this test creates, reached
 * over a veth pair) and a real HTTP listener on loopback for the webhook. Time is a fake clock
 * the test moves; the periodic work runs when the test calls tick().
 */
import { EventEmitter } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AlertService } from '../../src/domain/alerts.js';
import { NO_FILE_ALERTS, parseAlertFileSettings, type AlertFileSettings } from '../../src/domain/alert-config.js';
import type { ScheduleRecord, ScheduleRunRecord, TaskRecord } from '../../src/domain/database.js';
import { openTestDomain, type TestDomain } from '../lib/domain.js';
import { waitFor } from '../lib/wait.js';
import { startSmtpNet, type SmtpNet } from './smtp-net.js';

interface Hook {
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Record<string, unknown>;
}

interface Receiver {
  readonly url: string;
  readonly hooks: Hook[];
  /** What the next requests get: a status, or 'hang' (never answered). */
  answer: number | 'hang';
  close(): Promise<void>;
}

async function startReceiver(): Promise<Receiver> {
  const hooks: Hook[] = [];
  const hanging: http.ServerResponse[] = [];
  const r = { answer: 204 as number | 'hang' };
  const server = http.createServer((req, res) => {
    let data = '';
    req.on('data', (d: Buffer) => (data += d.toString()));
    req.on('end', () => {
      hooks.push({ headers: req.headers, body: JSON.parse(data) as Record<string, unknown> });
      if (r.answer === 'hang') hanging.push(res);
      else res.writeHead(r.answer, { 'content-type': 'text/plain' }).end(r.answer >= 400 ? 'receiver says no' : '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return Object.assign(r, {
    url: `http://127.0.0.1:${port}/hooks/netclone`,
    hooks,
    close: async () => {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}

const MAC = 'aa:bb:cc:00:00:01';
const USER = 'alerts';
const PASSWORD = 's3cret pass';

let smtp: SmtpNet;
let hook: Receiver;
let d: TestDomain;
let alerts: AlertService;
let clock: number;

function fileSettings(extra: Record<string, string> = {}): AlertFileSettings {
  return parseAlertFileSettings({
    'alerts.smtp.host': smtp.address, 'alerts.smtp.port': String(smtp.port), 'alerts.smtp.user': USER,
    'alerts.smtp.password-file': join(d.dir, 'smtp-password'), 'alerts.smtp.from': 'netclone@office.example', 'alerts.smtp.to': 'it@office.example, boss@office.example',
    'alerts.webhook.url': hook.url, ...extra,
  }, (m) => new Error(m));
}

function service(file: AlertFileSettings, extra: Partial<ConstructorParameters<typeof AlertService>[0]> = {}): AlertService {
  return new AlertService({ db: d.db, events: d.events, tasks: d.tasks, file, logger: d.logger, now: () => clock, tickMs: 0, ...extra });
}

function doneCapture(at: string, version: number): TaskRecord {
  return {
    id: `done-${version}`, kind: 'capture', mac: MAC, image: 'reception', state: 'done', createdAt: at, updatedAt: at, startedAt: at, finishedAt: at, reason: null,
    diskSerial: null, after: 'poweroff', transport: 'chunks', tokenHash: '', clientIp: null, disk: null,
    progress: { bytes: 0, total: 0, percent: 100, mbps: 0, etaSeconds: 0 }, result: { version, digest: null, bytesOnWire: 0 }, log: [],
  };
}

/** Daily at 02:00 local time, 60-minute window: the last good backup may be 24 h + 1 h + 1 h old. */
function dailySchedule(createdAt: Date): ScheduleRecord {
  return { id: 'sched-1', target: { mac: MAC }, image: 'reception', spec: { kind: 'daily', time: '02:00' }, wake: false, after: 'poweroff', windowMinutes: 60, createdAt: createdAt.toISOString(), lastRunAt: null };
}

beforeAll(async () => {
  smtp = await startSmtpNet({ user: USER, password: PASSWORD });
  hook = await startReceiver();
});

afterAll(async () => {
  await hook?.close();
  await smtp?.stop();
});

beforeEach(async () => {
  d = await openTestDomain('netclone-alerts-');
  await writeFile(join(d.dir, 'smtp-password'), `${PASSWORD}\n`);
  await d.hosts.add(MAC, 'Reception PC');
  clock = new Date(2026, 2, 10, 12, 0).getTime();
  smtp.messages.length = 0;
  hook.hooks.length = 0;
  hook.answer = 204;
  alerts = service(fileSettings());
  alerts.start();
});

afterEach(async () => {
  await alerts.stop();
  await d.close();
});

describe('alerts over SMTP and a webhook', () => {
  it('a failed task sends an email (logged in with the password file) and a webhook with the documented JSON', async () => {
    const task = await d.tasks.create({ kind: 'capture', mac: MAC, image: 'reception' });
    await d.tasks.fail(task, 'the disk could not be read at sector 4096');
    await alerts.idle();
    const [mail] = await smtp.waitForMessages(1);
    expect(mail.subject).toBe(`[netclone] task failed: Reception PC (${MAC})`);
    expect(mail.body).toContain('Reason: capture failed: the disk could not be read at sector 4096');
    expect(mail.body).toContain('Image: reception');
    expect(mail.rcptTos).toEqual(['it@office.example', 'boss@office.example']);
    expect(mail.mailFrom).toBe('netclone@office.example');
    expect(mail.authenticated).toBe(true);
    expect(hook.hooks).toHaveLength(1);
    expect(hook.hooks[0].headers['content-type']).toBe('application/json');
    expect(hook.hooks[0].body).toEqual({
      event: 'failure', host: 'Reception PC', mac: MAC, image: 'reception', reason: 'capture failed: the disk could not be read at sector 4096', at: task.finishedAt,
    });
  });

  it('a task that ends done or cancelled sends nothing', async () => {
    const task = await d.tasks.create({ kind: 'capture', mac: MAC, image: 'reception' });
    await d.tasks.cancel(task.id);
    await alerts.idle();
    expect(hook.hooks).toHaveLength(0);
    expect(smtp.messages).toHaveLength(0);
  });

  it('a missed scheduled run (the scheduler\'s run event) sends an alert naming the due time and why', async () => {
    const scheduler = new EventEmitter();
    alerts.watchScheduler(scheduler);
    d.db.data.schedules.push(dailySchedule(new Date(2026, 2, 1)));
    const run: ScheduleRunRecord = {
      id: 'run-1', scheduleId: 'sched-1', mac: MAC, dueAt: new Date(2026, 2, 10, 2, 0).toISOString(), state: 'missed', taskId: 'x',
      reason: 'the PC did not start its capture within 60 minutes', endedAt: new Date(2026, 2, 10, 3, 0).toISOString(),
    };
    scheduler.emit('run', { ...run, state: 'done', reason: null });
    // Its task failed: the task's own failure alert covers it.
    scheduler.emit('run', { ...run, state: 'failed', reason: 'disk read error' });
    scheduler.emit('run', run);
    await alerts.idle();
    const [mail] = await smtp.waitForMessages(1);
    expect(mail.subject).toBe(`[netclone] scheduled backup missed: Reception PC (${MAC})`);
    expect(mail.body).toContain('the PC did not start its capture within 60 minutes');
    expect(hook.hooks.map((h) => h.body)).toEqual([{
      event: 'missed', host: 'Reception PC', mac: MAC, image: 'reception', at: run.endedAt,
      reason: `the backup due ${run.dueAt} did not run: the PC did not start its capture within 60 minutes`,
    }]);
  });

  it('a scheduled run that failed before it had a task sends a failure alert', async () => {
    const scheduler = new EventEmitter();
    alerts.watchScheduler(scheduler);
    scheduler.emit('run', { id: 'run-2', scheduleId: 'gone', mac: MAC, dueAt: '2026-03-10T02:00:00.000Z', state: 'failed', taskId: null, reason: 'the capture could not be queued: no such image', endedAt: '2026-03-10T02:00:01.000Z' });
    await alerts.idle();
    expect(hook.hooks.map((h) => [h.body.event, h.body.reason])).toEqual([['failure', 'the backup due 2026-03-10T02:00:00.000Z did not run: the capture could not be queued: no such image']]);
  });

  it('an overdue host is alerted once per episode: not again on later ticks, again after a fresh backup goes stale', async () => {
    d.db.data.schedules.push(dailySchedule(new Date(2026, 2, 1)));
    d.db.data.tasks.push(doneCapture(new Date(2026, 2, 9, 2, 30).toISOString(), 7));
    // Allowed: 24 h between runs + 60 min window + 1 h for the capture = 26 h, so overdue from 10 March 04:30.
    clock = new Date(2026, 2, 10, 4, 29).getTime();
    await alerts.tick();
    await alerts.idle();
    expect(hook.hooks).toHaveLength(0);

    clock = new Date(2026, 2, 10, 4, 31).getTime();
    await alerts.tick();
    clock = new Date(2026, 2, 10, 9, 0).getTime();
    await alerts.tick();
    await alerts.idle();
    expect(hook.hooks.map((h) => h.body.event)).toEqual(['overdue']);
    expect(hook.hooks[0].body).toMatchObject({ host: 'Reception PC', mac: MAC, image: 'reception', at: new Date(2026, 2, 10, 4, 30).toISOString() });
    expect(String(hook.hooks[0].body.reason)).toContain('older than its schedule allows');
    const [mail] = await smtp.waitForMessages(1);
    expect(mail.subject).toBe(`[netclone] backup overdue: Reception PC (${MAC})`);

    // A restarted server remembers the episode (kept in the database).
    await alerts.stop();
    alerts = service(fileSettings());
    await alerts.tick();
    await alerts.idle();
    expect(hook.hooks).toHaveLength(1);

    // A good backup ends the episode; once that one is stale too, a new one begins.
    d.db.data.tasks.push(doneCapture(new Date(2026, 2, 10, 10, 0).toISOString(), 8));
    clock = new Date(2026, 2, 10, 11, 0).getTime();
    await alerts.tick();
    clock = new Date(2026, 2, 11, 12, 1).getTime();
    await alerts.tick();
    await alerts.idle();
    expect(hook.hooks.map((h) => [h.body.event, h.body.at])).toEqual([
      ['overdue', new Date(2026, 2, 10, 4, 30).toISOString()],
      ['overdue', new Date(2026, 2, 11, 12, 0).toISOString()],
    ]);
    await smtp.waitForMessages(2);
  });

  it('the daily summary goes out once at the set time, and again the next day', async () => {
    await alerts.stop();
    clock = new Date(2026, 2, 10, 7, 0).getTime();
    alerts = service(fileSettings({ 'alerts.daily-summary': '08:00' }));
    d.db.data.schedules.push(dailySchedule(new Date(2026, 2, 1)));
    d.db.data.tasks.push(doneCapture(new Date(2026, 2, 10, 2, 30).toISOString(), 3));
    for (const [h, m] of [[7, 30], [7, 59]]) {
      clock = new Date(2026, 2, 10, h, m).getTime();
      await alerts.tick();
    }
    await alerts.idle();
    expect(hook.hooks).toHaveLength(0);

    clock = new Date(2026, 2, 10, 8, 0).getTime();
    await alerts.tick();
    clock = new Date(2026, 2, 10, 8, 1).getTime();
    await alerts.tick();
    await alerts.idle();
    expect(hook.hooks.map((h) => h.body.event)).toEqual(['summary']);
    expect(hook.hooks[0].body.at).toBe(new Date(2026, 2, 10, 8, 0).toISOString());
    expect(String(hook.hooks[0].body.summary)).toContain('1 PC: 0 overdue, 0 never backed up.');
    expect(String(hook.hooks[0].body.summary)).toContain(`Reception PC (${MAC}): last good backup`);
    const [mail] = await smtp.waitForMessages(1);
    expect(mail.subject).toBe('[netclone] daily summary');
    expect(mail.body).toContain(`Reception PC (${MAC}): last good backup ${new Date(2026, 2, 10, 2, 30).toISOString()}`);

    clock = new Date(2026, 2, 11, 7, 59).getTime();
    await alerts.tick();
    clock = new Date(2026, 2, 11, 8, 0, 30).getTime();
    await alerts.tick();
    await alerts.idle();
    const summaries = hook.hooks.filter((h) => h.body.event === 'summary');
    expect(summaries.map((h) => h.body.at)).toEqual([new Date(2026, 2, 10, 8, 0).toISOString(), new Date(2026, 2, 11, 8, 0, 30).toISOString()]);
    // By then the backup of 10 March 02:30 is overdue, and the summary says so.
    expect(String(summaries[1].body.summary)).toContain(`1 PC: 1 overdue`);
    expect(String(summaries[1].body.summary)).toContain(`OVERDUE Reception PC (${MAC})`);
  });

  it('a settings page value overrides the file: a daily summary set there is sent although the file has none', async () => {
    await alerts.savePageSettings({ dailySummary: '13:15' });
    clock = new Date(2026, 2, 10, 13, 15).getTime();
    await alerts.tick();
    await alerts.idle();
    expect(hook.hooks.map((h) => h.body.event)).toEqual(['summary']);
  });

  it('"send test" reaches both channels and reports each; a refusing webhook is reported, recorded as an event, and thrown at nobody', async () => {
    const ok = await alerts.sendTest();
    expect(ok.map((r) => [r.channel, r.ok, r.message])).toEqual([['email', true, 'sent'], ['webhook', true, 'sent']]);
    const [mail] = await smtp.waitForMessages(1);
    expect(mail.subject).toBe('[netclone] test message');
    expect(hook.hooks[0].body).toMatchObject({ event: 'test', host: null, mac: null, image: null, reason: null });

    hook.answer = 500;
    const bad = await alerts.sendTest();
    expect(bad[1]).toMatchObject({ channel: 'webhook', ok: false });
    expect(bad[1].message).toContain('answered 500: receiver says no');
    expect(d.events.recent(5).map((e) => e.message)).toContainEqual(expect.stringContaining('test alert by webhook not delivered: the webhook'));
  });

  it('a task failure whose channels both fail still fails the task normally and records why each alert was not delivered', async () => {
    await alerts.stop();
    hook.answer = 'hang';
    // Nothing listens on port 2526 at the SMTP address: the connection is refused.
    alerts = service(fileSettings({ 'alerts.smtp.port': '2526' }), { sendTimeoutMs: 300 });
    alerts.start();
    const task = await d.tasks.create({ kind: 'deploy', mac: MAC, image: 'reception' });
    await d.tasks.fail(task, 'the PC lost the network');
    expect(d.tasks.get(task.id)?.state).toBe('failed');
    await alerts.idle();
    const messages = d.events.recent(10).filter((e) => e.level === 'warn').map((e) => e.message);
    expect(messages).toContainEqual(expect.stringMatching(/^failure alert by email not delivered: the SMTP server 10\.213\.\d+\.\d+:2526 did not take the message: .*ECONNREFUSED/));
    expect(messages).toContainEqual(expect.stringMatching(/^failure alert by webhook not delivered: .*no answer within 300 ms/));
    await waitFor('the webhook request', () => hook.hooks.length === 1);
  });

  it('a wrong SMTP password is reported as the server\'s refusal', async () => {
    await writeFile(join(d.dir, 'smtp-password'), 'wrong\n');
    const [email] = await alerts.sendTest();
    expect(email.ok).toBe(false);
    expect(email.message).toMatch(/did not take the message: 535/);
    expect(smtp.messages).toHaveLength(0);
  });

  it('with no channel set up nothing is sent and the test says so by an empty result', async () => {
    await alerts.stop();
    alerts = service(NO_FILE_ALERTS);
    expect(await alerts.sendTest()).toEqual([]);
  });
});
