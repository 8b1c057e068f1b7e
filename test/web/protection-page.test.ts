/** The dashboard's protection view and GET /api/v1/protection. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ScheduleRecord, TaskRecord } from '../../src/domain/database.js';
import request from 'supertest';
import { login, makeHarness, type Harness } from './helpers.js';

const FRESH = 'aa:bb:cc:00:00:01';
const STALE = 'aa:bb:cc:00:00:02';
const HOUR = 3_600_000;

function capture(mac: string, state: 'done' | 'failed', finishedAt: Date, extra: Partial<TaskRecord> = {}): TaskRecord {
  const at = finishedAt.toISOString();
  return {
    id: `${mac}-${state}-${at}`, kind: 'capture', mac, image: 'office', state, createdAt: at, updatedAt: at, startedAt: at, finishedAt: at,
    reason: state === 'failed' ? 'the PC lost the network' : null, diskSerial: null, after: 'poweroff', transport: 'chunks', tokenHash: '', clientIp: null, disk: null,
    progress: { bytes: 0, total: 0, percent: 0, mbps: 0, etaSeconds: null }, result: state === 'done' ? { version: 4, digest: null, bytesOnWire: 0 } : null, log: [], ...extra,
  };
}

function hourly(mac: string): ScheduleRecord {
  return { id: `s-${mac}`, target: { mac }, image: 'office', spec: { kind: 'cron', expression: '0 * * * *' }, wake: false, after: 'poweroff', windowMinutes: 30, createdAt: new Date(Date.now() - 30 * 24 * HOUR).toISOString(), lastRunAt: null };
}

let h: Harness;

beforeEach(async () => {
  h = await makeHarness();
  await h.ctx.hosts.add(FRESH, 'Front desk');
  await h.ctx.hosts.add(STALE, 'Back office');
  // Hourly: a backup may be 1 h + 30 min window + 1 h old. Front desk's is 10 min old, Back office's 3 days.
  h.ctx.db.data.schedules.push(hourly(FRESH), hourly(STALE));
  h.ctx.db.data.tasks.push(
    capture(FRESH, 'done', new Date(Date.now() - 10 * 60_000)),
    capture(STALE, 'done', new Date(Date.now() - 72 * HOUR)),
    capture(STALE, 'failed', new Date(Date.now() - 2 * HOUR)),
  );
});

afterEach(async () => {
  await h.close();
});

describe('protection view', () => {
  it('the dashboard lists each PC with its last good backup, age, next run and last failure, the overdue one marked by a class and a word', async () => {
    const { agent } = await login(h.app);
    const page = (await agent.get('/').expect(200)).text;
    const section = page.slice(page.indexOf('id="protection"'), page.indexOf('</section>', page.indexOf('id="protection"')));
    const rows = section.split('<tr ').slice(1);
    expect(rows).toHaveLength(2);
    // Overdue first.
    expect(rows[0]).toContain(`class="overdue" data-mac="${STALE}"`);
    expect(rows[0]).toContain('Overdue');
    expect(rows[0]).toContain('3 days');
    expect(rows[0]).toContain('the PC lost the network');
    expect(rows[0]).toContain('>failed<');
    expect(rows[1]).toContain(`class="" data-mac="${FRESH}"`);
    expect(rows[1]).toContain('Protected');
    expect(rows[1]).toContain('10 min');
    expect(rows[1]).toContain('<span class="muted">v4</span>');
    expect(rows[1]).toMatch(/in (\d+ min|under a minute)/);
    expect(section).toContain('1 PC overdue');
  });

  it('GET /api/v1/protection returns the same, overdue first', async () => {
    const { agent } = await login(h.app);
    const body = (await agent.get('/api/v1/protection').expect(200)).body as Array<Record<string, unknown>>;
    expect(body.map((r) => [r.mac, r.overdue])).toEqual([[STALE, true], [FRESH, false]]);
    expect(body[0]).toMatchObject({ name: 'Back office', scheduled: true, allowedAgeSeconds: 9000, lastGood: { image: 'office', version: 4 }, lastFailure: { kind: 'failed', reason: 'the PC lost the network' } });
    expect(body[1].lastFailure).toBeNull();
    expect(typeof body[1].nextRun).toBe('string');
  });

  it('the API needs a login', async () => {
    await request(h.app.server).get('/api/v1/protection').expect(401);
  });
});
