/**
 * Hosts: adding a MAC that exists is refused unless it is an explicit rename (service, API, CLI), and
 * PCs that only boot (DHCP, /boot/ipxe) cannot grow the host table without bound.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import request from 'supertest';
import { forgetDatabase, openDatabase, type Database } from '../../src/domain/database.js';
import { EventLog } from '../../src/domain/events.js';
import { HostError, HostService } from '../../src/domain/hosts.js';
import { createApiToken } from '../../src/domain/users.js';
import { nullLogger } from '../../src/lib/log.js';
import { login, makeHarness } from '../web/helpers.js';
import { run, type RunResult } from '../lib/run.js';

let dir: string;
let db: Database;
let clock: number;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-hosts-'));
  db = await openDatabase(dir);
  clock = Date.parse('2026-01-01T00:00:00Z');
});
afterEach(async () => {
  vi.useRealTimers();
  forgetDatabase(dir);
  await rm(dir, { recursive: true, force: true });
});

const mac = (i: number): string => `52:54:00:${((i >> 16) & 0xff).toString(16).padStart(2, '0')}:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;

describe('adding a host', () => {
  it('refuses a registered MAC with 409 and keeps its name, unless the request is a rename', async () => {
    const hosts = new HostService(db, new EventLog(db, nullLogger()));
    await hosts.add('52:54:00:00:00:01', 'Desk 1');
    const err = await hosts.add('52:54:00:00:00:01', 'Intruder').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HostError);
    expect((err as HostError).status).toBe(409);
    expect((err as HostError).message).toMatch(/already registered as "Desk 1"; nothing was changed/);
    await expect(hosts.add('52:54:00:00:00:01')).rejects.toMatchObject({ status: 409 });
    expect(hosts.get('52:54:00:00:00:01')?.name).toBe('Desk 1');
    expect((await hosts.add('52:54:00:00:00:01', 'Desk 1b', { rename: true })).name).toBe('Desk 1b');
    await expect(hosts.add('52:54:00:00:00:02', 'X', { rename: true })).rejects.toMatchObject({ status: 404 });
  });

  it('registers and names a PC that had only booted, and register() never renames', async () => {
    const hosts = new HostService(db, new EventLog(db, nullLogger()));
    await hosts.sighted({ mac: '52:54:00:00:00:03', ip: '10.0.0.3' });
    expect((await hosts.add('52:54:00:00:00:03', 'Lab 3')).registered).toBe(true);
    expect((await hosts.register('52:54:00:00:00:03')).name).toBe('Lab 3');
    expect((await hosts.register('52:54:00:00:00:04')).registered).toBe(true);
  });

  it('answers 409 on the API and leaves the host as it was; PATCH renames', async () => {
    const h = await makeHarness();
    try {
      const auth = { Authorization: `Bearer ${(await createApiToken(h.ctx.db, 'tests')).token}` };
      await request(h.app.server).post('/api/v1/hosts').set(auth).send({ mac: '52:54:00:00:00:10', name: 'Desk 10' }).expect(201);
      const again = await request(h.app.server).post('/api/v1/hosts').set(auth).send({ mac: '52:54:00:00:00:10', name: 'Other' }).expect(409);
      expect(again.body.message).toMatch(/already registered as "Desk 10"/);
      expect(h.ctx.hosts.get('52:54:00:00:00:10')?.name).toBe('Desk 10');
      await request(h.app.server).patch('/api/v1/hosts/52:54:00:00:00:10').set(auth).send({ name: 'Other' }).expect(200);
      expect(h.ctx.hosts.get('52:54:00:00:00:10')?.name).toBe('Other');
    } finally {
      await h.close();
    }
  });

  it('shows the refusal on the admin page (409) and leaves the host as it was', async () => {
    const h = await makeHarness();
    try {
      const { agent, csrf } = await login(h.app);
      await agent.post('/hosts').type('form').send({ _csrf: csrf, mac: '52-54-00-00-00-30', name: 'Lab' }).expect(303);
      const again = await agent.post('/hosts').type('form').send({ _csrf: csrf, mac: '52:54:00:00:00:30', name: 'Other' }).expect(409);
      expect(again.text).toContain('already registered as &quot;Lab&quot;');
      expect(h.ctx.hosts.get('52:54:00:00:00:30')?.name).toBe('Lab');
    } finally {
      await h.close();
    }
  });

  it('makes the CLI exit non-zero with the reason, and --rename renames', async () => {
    const data = await mkdtemp(path.join(tmpdir(), 'nc-hosts-cli-'));
    const netclone = (...args: string[]): Promise<RunResult> =>
      run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', "const m = await import('./src/cli/main.ts'); await m.run(process.argv.slice(1));", ...args, '--data', data], {
        env: { ...process.env, NETCLONE_CONFIG: '' },
      });
    try {
      expect((await netclone('host', 'add', '52:54:00:00:00:20', '--name', 'Desk 20')).code).toBe(0);
      const refused = await netclone('host', 'add', '52:54:00:00:00:20', '--name', 'Desk 21');
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/already registered as "Desk 20"; nothing was changed.*--rename/);
      const renamed = await netclone('host', 'add', '52:54:00:00:00:20', '--name', 'Desk 21', '--rename');
      expect(renamed.code).toBe(0);
      const list = await netclone('host', 'list', '--json');
      expect(JSON.parse(list.stdout)).toMatchObject([{ mac: '52:54:00:00:00:20', name: 'Desk 21' }]);
    } finally {
      await rm(data, { recursive: true, force: true });
    }
  });
});

describe('auto-registration bounds', () => {
  const limits = { maxUnregistered: 50, perAddressPerMinute: 10, perMinute: 30 };

  it('stores at most perAddressPerMinute new PCs a minute from one address, and still answers the others', async () => {
    const hosts = new HostService(db, new EventLog(db, nullLogger()), { now: () => clock, autoRegistration: limits });
    const results = [];
    for (let i = 0; i < 25; i++) results.push(await hosts.sighted({ mac: mac(i), ip: '10.0.0.66' }));
    expect(results.filter((r) => r.recorded)).toHaveLength(10);
    expect(hosts.list()).toHaveLength(10);
    // Not stored, but the caller (the boot script) still has a host to decide on.
    expect(results[24]).toMatchObject({ recorded: false, host: { mac: mac(24), registered: false } });
    // Another address has its own budget; known PCs are always refreshed.
    expect((await hosts.sighted({ mac: mac(100), ip: '10.0.0.67' })).recorded).toBe(true);
    expect((await hosts.sighted({ mac: mac(0), ip: '10.0.0.66' })).recorded).toBe(true);
    clock += 60_000;
    expect((await hosts.sighted({ mac: mac(30), ip: '10.0.0.66' })).recorded).toBe(true);
  });

  it('stores at most perMinute new PCs a minute from all addresses, and no more than maxUnregistered in all', async () => {
    const hosts = new HostService(db, new EventLog(db, nullLogger()), { now: () => clock, autoRegistration: limits });
    let stored = 0;
    for (let i = 0; i < 100; i++) if ((await hosts.sighted({ mac: mac(i), ip: `10.0.1.${i}` })).recorded) stored++;
    expect(stored).toBe(30);
    for (let minute = 0; minute < 10; minute++) {
      clock += 60_000;
      for (let i = 0; i < 40; i++) await hosts.sighted({ mac: mac(1000 + minute * 100 + i), ip: `10.0.2.${i}` });
    }
    expect(hosts.list()).toHaveLength(50);
    // A technician's registration is not an auto-registration: it always works.
    await hosts.add(mac(99_999), 'By hand');
    expect(hosts.list()).toHaveLength(51);
  });

  it('does not rewrite the database for a sighting that only moves "last seen"', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const hosts = new HostService(db, new EventLog(db, nullLogger()), { now: () => clock });
    await hosts.sighted({ mac: mac(1), ip: '10.0.0.1', firmware: 'uefi' });
    const write = vi.spyOn(db, 'write');
    for (let i = 0; i < 50; i++) {
      clock += 1000;
      await hosts.sighted({ mac: mac(1), ip: '10.0.0.1', firmware: 'uefi' });
    }
    expect(write).toHaveBeenCalledTimes(0);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(write).toHaveBeenCalledTimes(1);
    await write.mock.results[0].value;
    await hosts.sighted({ mac: mac(1), ip: '10.0.0.9', firmware: 'uefi' });
    expect(write).toHaveBeenCalledTimes(2);
    write.mockRestore();
  });
});
