/**
 * The imaging client's menu mode, server side (src/web/menu-routes.ts), against the real boot and
 * client routes: a technician logs in at the PC, the client POSTs the chosen action and goes on
 * with the task token it gets back. One test process plays the PC (PC_IP) and a stranger (STRANGER_IP).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { LightMyRequestResponse } from 'fastify';
import { LOGIN_FAILURES_PER_MINUTE } from '../../src/domain/pc-menu.js';
import { MENU_SESSION_MS } from '../../src/web/menu-routes.js';
import { makeBootHarness, PC_IP, STRANGER_IP, TECHNICIAN, type BootHarness } from './boot-harness.js';

const MAC = '52:54:00:3e:a0:07';
const DISK = { name: 'sda', size: 8 * 1024 * 1024, logicalSectorSize: 512 };
const WRONG = { username: 'admin', password: 'not the password' };

let h: BootHarness | undefined;
afterEach(async () => {
  vi.useRealTimers();
  await h?.close();
  h = undefined;
});

function post(b: BootHarness, ip: string, url: string, body: unknown, session?: string): Promise<LightMyRequestResponse> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (session) headers.authorization = `Bearer ${session}`;
  return b.app.inject({ method: 'POST', url: `/api/client/v1/menu/${url}`, remoteAddress: ip, headers, payload: JSON.stringify(body) });
}

async function login(b: BootHarness, ip = PC_IP, mac = MAC): Promise<{ session: string; images: string[]; host: unknown; task: unknown; expiresIn: number }> {
  const r = await post(b, ip, 'login', { mac, ...TECHNICIAN });
  if (r.statusCode !== 200) throw new Error(`login failed: ${r.statusCode} ${r.body}`);
  return r.json();
}

function logged(b: BootHarness, level: 'info' | 'warn'): Array<Record<string, unknown>> {
  return b.logs.filter((l) => (level === 'warn' ? l.level >= 40 : l.level === 30));
}

describe('POST /api/client/v1/menu/login', () => {
  it('refuses a wrong password with 401 and a message (also in the status line, which busybox wget shows), listing no image', async () => {
    h = await makeBootHarness({ images: ['golden-win11'] });
    const r = await post(h, PC_IP, 'login', { mac: MAC, ...WRONG });
    expect(r.statusCode).toBe(401);
    expect(r.json()).toEqual({ error: 'wrong username or password' });
    expect(r.statusMessage).toBe('wrong username or password');
    expect(r.body).not.toContain('golden-win11');
    expect(r.body).not.toContain('session');
    expect(logged(h, 'warn')).toContainEqual(expect.objectContaining({ mac: MAC, ip: PC_IP, msg: 'client menu: wrong username or password' }));
  });

  it('answers a session, the PC and the images with a committed version after a good login, and logs it with MAC and address', async () => {
    h = await makeBootHarness({ images: ['golden-win11', 'lab'] });
    await h.hosts.add(MAC, 'Front desk');
    const r = await login(h);
    expect(r.session).toMatch(/^[A-Za-z0-9_-]{32,}$/);
    expect(r.expiresIn).toBe(MENU_SESSION_MS / 1000);
    expect(r.host).toEqual({ mac: MAC, name: 'Front desk', registered: true });
    expect([...r.images].sort()).toEqual(['golden-win11', 'lab']);
    expect(r.task).toBeNull();
    expect(logged(h, 'info')).toContainEqual(expect.objectContaining({ mac: MAC, ip: PC_IP, user: 'admin', msg: expect.stringContaining('logged in at the PC') }));
  });

  it('refuses a malformed body with 400 and counts no failure', async () => {
    h = await makeBootHarness();
    for (const body of [{}, { mac: MAC, username: 'admin' }, { mac: MAC, username: 'admin', password: '' }, { mac: MAC, ...TECHNICIAN, extra: 1 }, { mac: 'nope', ...TECHNICIAN }]) {
      const r = await post(h, PC_IP, 'login', body);
      expect(r.statusCode, JSON.stringify(body)).toBe(400);
    }
    const bad = await h.app.inject({ method: 'POST', url: '/api/client/v1/menu/login', remoteAddress: PC_IP, headers: { 'content-type': 'application/json' }, payload: '{"mac":' });
    expect(bad.statusCode).toBe(400);
    await login(h);
  });

  it('stops logins from an address after the failed-login limit, counting failures at the boot menu too; other addresses go on', async () => {
    h = await makeBootHarness();
    // The boot menu's POST and the client menu share one count per address.
    for (let i = 0; i < 2; i++) expect((await h.action(PC_IP, { mac: MAC, do: 'register' }, WRONG)).body).toContain('wrong username or password');
    for (let i = 2; i < LOGIN_FAILURES_PER_MINUTE; i++) expect((await post(h, PC_IP, 'login', { mac: MAC, ...WRONG })).statusCode).toBe(401);
    const blocked = await post(h, PC_IP, 'login', { mac: MAC, ...TECHNICIAN });
    expect(blocked.statusCode).toBe(429);
    expect(blocked.json().error).toMatch(/too many failed logins/);
    expect(logged(h, 'warn')).toContainEqual(expect.objectContaining({ mac: MAC, ip: PC_IP, msg: expect.stringContaining('too many failed logins') }));
    // ... and the boot menu refuses that address as well.
    expect((await h.action(PC_IP, { mac: MAC, do: 'register' }, TECHNICIAN)).body).toContain('too many failed logins');
    expect(h.hosts.get(MAC)?.registered ?? false).toBe(false);
    await login(h, STRANGER_IP, '52:54:00:3e:a0:08');
  });
});

describe('POST /api/client/v1/menu/action', () => {
  it('a deploy gives a task token bound to the PC: it starts the transfer from the PC, and is refused from another address', async () => {
    h = await makeBootHarness({ images: ['golden-win11'] });
    const { session } = await login(h);
    const r = await post(h, PC_IP, 'action', { do: 'deploy', image: 'golden-win11' }, session);
    expect(r.statusCode, r.body).toBe(200);
    const { task: id, token, kind, image } = r.json();
    expect({ kind, image }).toEqual({ kind: 'deploy', image: 'golden-win11' });
    const task = h.tasks.get(id);
    expect(task).toMatchObject({ kind: 'deploy', mac: MAC, image: 'golden-win11', state: 'booting', clientIp: PC_IP });
    expect(h.tasks.byToken(token)).toBe(task);
    expect(h.hosts.get(MAC)?.registered).toBe(true);
    expect(logged(h, 'info')).toContainEqual(expect.objectContaining({ mac: MAC, ip: PC_IP, do: 'deploy', msg: expect.stringContaining('asks for deploy') }));

    const stolen = await h.client(STRANGER_IP, 'POST', '/api/client/v1/start', token, { disk: DISK });
    expect(stolen.statusCode).toBe(403);
    expect(task?.state).toBe('booting');
    expect((await h.client(PC_IP, 'GET', `/api/client/v1/task?mac=${MAC}`, token)).json()).toMatchObject({ id, kind: 'deploy', image: 'golden-win11' });
    const start = await h.client(PC_IP, 'POST', '/api/client/v1/start', token, { disk: DISK });
    expect(start.statusCode, start.body).toBe(200);
    expect(start.json().nbd).toMatch(/^nbd:\/\//);
    expect(task).toMatchObject({ state: 'running', clientIp: PC_IP });
  });

  it('a capture creates the capture task, named by the technician or after the PC', async () => {
    h = await makeBootHarness();
    const named = await post(h, PC_IP, 'action', { do: 'capture', image: 'desk-2026' }, (await login(h)).session);
    expect(named.statusCode, named.body).toBe(200);
    expect(h.tasks.get(named.json().task)).toMatchObject({ kind: 'capture', image: 'desk-2026', mac: MAC, state: 'booting', clientIp: PC_IP });
    expect(h.tasks.byToken(named.json().token)?.id).toBe(named.json().task);

    const other = '52:54:00:3e:a0:09';
    const unnamed = await post(h, STRANGER_IP, 'action', { do: 'capture' }, (await login(h, STRANGER_IP, other)).session);
    expect(unnamed.statusCode, unnamed.body).toBe(200);
    expect(h.tasks.get(unnamed.json().task)).toMatchObject({ kind: 'capture', image: 'pc-5254003ea009', mac: other, clientIp: STRANGER_IP });
  });

  it('register registers the PC and creates no task', async () => {
    h = await makeBootHarness();
    const r = await post(h, PC_IP, 'action', { do: 'register' }, (await login(h)).session);
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ registered: true, already: false });
    expect(h.hosts.get(MAC)?.registered).toBe(true);
    expect(h.tasks.list()).toEqual([]);
  });

  it('start hands out the task that waits for the PC, which the login answer names', async () => {
    h = await makeBootHarness();
    const queued = await h.tasks.create({ kind: 'capture', mac: MAC, image: 'from-the-page' });
    const { session, task } = await login(h);
    expect(task).toEqual({ kind: 'capture', image: 'from-the-page' });
    const r = await post(h, PC_IP, 'action', { do: 'start' }, session);
    expect(r.json()).toMatchObject({ task: queued.id, kind: 'capture', image: 'from-the-page' });
    expect(h.tasks.byToken(r.json().token)).toBe(queued);
    expect(queued).toMatchObject({ state: 'booting', clientIp: PC_IP });
  });

  it('without a session is 401, with another address\'s session 403, and neither changes anything', async () => {
    h = await makeBootHarness({ images: ['golden-win11'] });
    const none = await post(h, PC_IP, 'action', { do: 'capture' });
    expect(none.statusCode).toBe(401);
    expect(none.json().error).toMatch(/log in first/);
    // Checked before the body: a caller without a login learns nothing about it.
    expect((await post(h, PC_IP, 'action', { nonsense: true })).statusCode).toBe(401);
    expect((await post(h, PC_IP, 'action', { do: 'capture' }, 'A'.repeat(32))).statusCode).toBe(401);
    const { session } = await login(h);
    const elsewhere = await post(h, STRANGER_IP, 'action', { do: 'deploy', image: 'golden-win11' }, session);
    expect(elsewhere.statusCode).toBe(403);
    expect(logged(h, 'warn')).toContainEqual(expect.objectContaining({ mac: MAC, ip: STRANGER_IP, boundTo: PC_IP }));
    expect(h.tasks.list()).toEqual([]);
    expect(h.hosts.get(MAC)?.registered ?? false).toBe(false);
    // The session is still the PC's.
    expect((await post(h, PC_IP, 'action', { do: 'register' }, session)).statusCode).toBe(200);
  });

  it('a session serves one successful action; a refused one (unknown image, bad body) leaves it for another try', async () => {
    h = await makeBootHarness({ images: ['golden-win11'] });
    const { session } = await login(h);
    const unknown = await post(h, PC_IP, 'action', { do: 'deploy', image: 'nope' }, session);
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().error).toMatch(/no image by that name/);
    expect((await post(h, PC_IP, 'action', { do: 'deploy' }, session)).statusCode).toBe(400);
    expect((await post(h, PC_IP, 'action', { do: 'erase' }, session)).statusCode).toBe(400);
    expect((await post(h, PC_IP, 'action', { do: 'capture', image: '../etc' }, session)).statusCode).toBe(400);
    expect(h.tasks.list()).toEqual([]);
    expect((await post(h, PC_IP, 'action', { do: 'deploy', image: 'golden-win11' }, session)).statusCode).toBe(200);
    const again = await post(h, PC_IP, 'action', { do: 'register' }, session);
    expect(again.statusCode).toBe(401);
    expect(again.json().error).toMatch(/expired or was used already/);
  });

  it('a session expires after five minutes', async () => {
    h = await makeBootHarness();
    vi.useFakeTimers({ toFake: ['Date'] });
    const { session } = await login(h);
    vi.setSystemTime(Date.now() + MENU_SESSION_MS + 1000);
    const late = await post(h, PC_IP, 'action', { do: 'register' }, session);
    expect(late.statusCode).toBe(401);
    expect(logged(h, 'warn')).toContainEqual(expect.objectContaining({ mac: MAC, msg: 'client menu action refused: the login expired' }));
    expect(h.hosts.get(MAC)?.registered ?? false).toBe(false);
  });

  it('answers a GET on either route with 405 and changes nothing', async () => {
    h = await makeBootHarness({ images: ['golden-win11'] });
    const { session } = await login(h);
    for (const url of ['login', 'action', `action?do=deploy&image=golden-win11`, `login?mac=${MAC}&username=admin&password=x`]) {
      const r = await h.app.inject({ method: 'GET', url: `/api/client/v1/menu/${url}`, remoteAddress: PC_IP, headers: { authorization: `Bearer ${session}` } });
      expect(r.statusCode, url).toBe(405);
      expect(r.headers.allow).toBe('POST');
      expect(r.body).not.toContain('golden-win11');
    }
    expect(h.tasks.list()).toEqual([]);
    // The session was not spent by the GETs.
    expect((await post(h, PC_IP, 'action', { do: 'register' }, session)).statusCode).toBe(200);
  });
});
