/** The running server sends alerts: its task failures, its scheduler's missed runs, and the API's send test reach the webhook. */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { parseAlertFileSettings } from '../../src/domain/alert-config.js';
import { createApiToken } from '../../src/domain/users.js';
import { nullLogger } from '../../src/lib/log.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { loopbackConfig } from '../lib/appliance-config.js';
import { waitFor } from '../lib/wait.js';

let appliance: RunningAppliance | undefined;
let server: http.Server | undefined;
let dir: string | undefined;

afterEach(async () => {
  await appliance?.stop();
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  if (dir) await rm(dir, { recursive: true, force: true });
  appliance = server = dir = undefined;
});

describe('alerts in the running server', () => {
  it('a failed task, a missed scheduled run and the API\'s send test each reach the configured webhook', async () => {
    const hooks: Array<Record<string, unknown>> = [];
    server = http.createServer((req, res) => {
      let data = '';
      req.on('data', (c: Buffer) => (data += c.toString()));
      req.on('end', () => {
        hooks.push(JSON.parse(data) as Record<string, unknown>);
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;

    dir = await mkdtemp(path.join(tmpdir(), 'nc-alerts-serve-'));
    const base = loopbackConfig(path.join(dir, 'data'));
    appliance = await startAppliance({ ...base, alerts: parseAlertFileSettings({ 'alerts.webhook.url': url }, (m) => new Error(m)) }, nullLogger());
    const { core } = appliance;

    const task = await core.tasks.create({ kind: 'capture', mac: 'aa:bb:cc:dd:ee:01', image: 'office' });
    await core.tasks.fail(task, 'the PC lost the network');
    await waitFor('the failure alert', () => hooks.find((h) => h.event === 'failure'));

    appliance.scheduler.emit('run', {
      id: 'r', scheduleId: 's', mac: 'aa:bb:cc:dd:ee:02', dueAt: '2026-03-10T02:00:00.000Z', state: 'missed', taskId: null,
      reason: 'the PC did not start its capture within 120 minutes', endedAt: '2026-03-10T04:00:00.000Z',
    });
    await waitFor('the missed alert', () => hooks.find((h) => h.event === 'missed'));

    const auth = { Authorization: `Bearer ${(await createApiToken(core.db, 'tests')).token}` };
    const res = await request(`http://127.0.0.1:${appliance.ports.http}`).post('/api/v1/alerts/test').set(auth).expect(200);
    expect(res.body).toEqual([{ channel: 'webhook', target: url, ok: true, message: 'sent' }]);
    expect(hooks.map((h) => h.event)).toEqual(['failure', 'missed', 'test']);
    expect(hooks[0]).toMatchObject({ mac: 'aa:bb:cc:dd:ee:01', image: 'office', reason: 'capture failed: the PC lost the network' });
  });
});
