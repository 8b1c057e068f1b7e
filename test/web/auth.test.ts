import { afterEach, describe, expect, it } from 'vitest';
import request from 'supertest';
import { createApiToken, issueSetupToken, revokeApiToken, hasAdmin } from '../../src/domain/users.js';
import { LOGIN_FAILURES_PER_MINUTE } from '../../src/domain/pc-menu.js';
import { lintIpxe } from '../lib/ipxe-lint.js';
import { csrfFrom, login, makeHarness, PASSWORD, type Harness } from './helpers.js';
import { makeBootHarness, PC_IP, STRANGER_IP, TECHNICIAN, tokenIn, type BootHarness } from './boot-harness.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe('access without login', () => {
  it('redirects pages to /login, answers 401 JSON on the API, and tells htmx to redirect', async () => {
    h = await makeHarness();
    const s = request(h.app.server);
    for (const path of ['/', '/hosts', '/images', '/tasks', '/settings', '/hosts/52:54:00:00:00:01', '/docs', '/no-such-page']) {
      const r = await s.get(path);
      expect(r.status, path).toBe(302);
      expect(r.headers.location, path).toMatch(/^\/login/);
    }
    expect((await s.get('/tasks')).headers.location).toBe('/login?next=%2Ftasks');
    for (const path of ['/api/v1/hosts', '/api/v1/images', '/api/v1/tasks', '/api/v1/events', '/api/v1/status', '/api/v1/tokens', '/api/v1/nope']) {
      const r = await s.get(path);
      expect(r.status, path).toBe(401);
      expect(r.body.message, path).toMatch(/log in|Bearer/);
    }
    const post = await s.post('/api/v1/hosts').send({ mac: '52:54:00:00:00:01' });
    expect(post.status).toBe(401);
    expect(h.ctx.hosts.list()).toHaveLength(0);
    const frag = await s.get('/tasks/active').set('HX-Request', 'true');
    expect(frag.status).toBe(401);
    expect(frag.headers['hx-redirect']).toMatch(/^\/login/);
    // A page form without a session changes nothing either.
    const form = await s.post('/hosts').type('form').send({ mac: '52:54:00:00:00:01' });
    expect(form.status).toBe(302);
    expect(h.ctx.hosts.list()).toHaveLength(0);
  });

  it('serves the login page, htmx and the stylesheet without login', async () => {
    h = await makeHarness();
    const s = request(h.app.server);
    const login = await s.get('/login').expect(200);
    expect(login.text).toContain('name="password"');
    const js = await s.get('/static/htmx.min.js').expect(200);
    expect(js.headers['content-type']).toMatch(/javascript/);
    expect(js.text).toContain('htmx');
    await s.get('/static/app.css').expect(200).expect('content-type', /css/);
    await s.get('/static/..%2Fapp.ts').expect(404);
  });

  it('lets the real boot and thin-client routes bypass the admin login and CSRF, which guard them by their own means', async () => {
    const b = await makeBootHarness();
    try {
      const mac = '52:54:00:00:0a:01';
      // No session, no CSRF token: the boot script and a menu form POST with a technician's login work.
      const script = await b.bootScript(mac, PC_IP);
      expect(script.statusCode).toBe(200);
      expect(script.body).toMatch(/^#!ipxe\n/);
      const registered = await b.action(PC_IP, { mac, do: 'register' }, TECHNICIAN);
      expect(registered.statusCode).toBe(200);
      expect(b.hosts.get(mac)?.registered).toBe(true);
      // The client API takes its task token without a session or CSRF token; an admin cookie is no substitute.
      await b.tasks.create({ kind: 'capture', mac, image: 'desk' });
      b.addresses.note(mac, PC_IP);
      const token = tokenIn((await b.bootScript(mac, PC_IP)).body);
      expect(token).not.toBeNull();
      const progress = await b.client(PC_IP, 'POST', '/api/client/v1/progress', token, { phase: 'transferring', message: 'hello' });
      expect(progress.statusCode).toBe(200);
      expect(progress.json()).toEqual({ ok: true });
      const cookie = await b.app.inject({ method: 'GET', url: `/api/client/v1/task?mac=${mac}`, remoteAddress: PC_IP, headers: { cookie: 'nc_session=whatever' } });
      expect(cookie.statusCode).toBe(401);
      // The admin API beside them still wants a login.
      expect((await b.app.inject({ method: 'GET', url: '/api/v1/hosts', remoteAddress: PC_IP })).statusCode).toBe(401);
    } finally {
      await b.close();
    }
  });
});

describe('boot menu actions', () => {
  const mac = '52:54:00:00:0b:01';
  const WRONG = { username: 'admin', password: 'not-the-password' };
  let b: BootHarness | undefined;
  afterEach(async () => {
    await b?.close();
    b = undefined;
  });

  it('refuses every action sent as GET and changes nothing, whatever it carries', async () => {
    b = await makeBootHarness({ images: ['golden'] });
    for (const what of ['register', 'capture', 'deploy', 'deploy-list', 'start']) {
      const r = await b.app.inject({
        method: 'GET', remoteAddress: STRANGER_IP,
        url: `/boot/ipxe/action?mac=${mac}&do=${what}&image=golden&username=admin&password=${encodeURIComponent(PASSWORD)}`,
      });
      expect(r.statusCode, what).toBe(405);
      expect(r.headers.allow).toBe('POST');
      expect(r.body).toContain('nothing was changed');
    }
    expect(b.tasks.list()).toEqual([]);
    expect(b.hosts.get(mac)?.registered ?? false).toBe(false);
  });

  it('register: refused without a login and with a wrong one; with a valid login the PC is registered and boots its disk', async () => {
    b = await makeBootHarness();
    const none = await b.action(PC_IP, { mac, do: 'register' });
    expect(none.body).toContain('this action needs a login');
    const wrong = await b.action(PC_IP, { mac, do: 'register' }, WRONG);
    expect(wrong.body).toContain('wrong username or password');
    expect(b.hosts.get(mac)?.registered ?? false).toBe(false);
    const ok = await b.action(PC_IP, { mac, do: 'register' }, TECHNICIAN);
    expect(ok.statusCode).toBe(200);
    expect(ok.body).toContain('registered, booting the local disk');
    expect(lintIpxe(ok.body)).toEqual([]);
    expect(b.hosts.get(mac)?.registered).toBe(true);
  });

  it('capture: refused without a valid login; with one it queues a capture and hands the PC the client, its token bound to the PC', async () => {
    b = await makeBootHarness();
    await b.hosts.add(mac, 'Reception 1');
    expect((await b.action(PC_IP, { mac, do: 'capture' })).body).toContain('needs a login');
    expect((await b.action(PC_IP, { mac, do: 'capture' }, WRONG)).body).toContain('wrong username or password');
    expect(b.tasks.list()).toEqual([]);
    const ok = await b.action(PC_IP, { mac, do: 'capture' }, TECHNICIAN);
    const task = b.tasks.activeFor(mac);
    expect(task).toMatchObject({ kind: 'capture', image: 'Reception-1', state: 'booting', clientIp: PC_IP });
    const token = tokenIn(ok.body);
    expect(token).not.toBeNull();
    expect(ok.body).toContain('/boot/client/vmlinuz');
    expect(lintIpxe(ok.body)).toEqual([]);
    expect((await b.client(PC_IP, 'GET', `/api/client/v1/task?mac=${mac}`, token)).json()).toMatchObject({ kind: 'capture', image: 'Reception-1' });
    expect((await b.client(STRANGER_IP, 'GET', `/api/client/v1/task?mac=${mac}`, token)).statusCode).toBe(403);
  });

  it('deploy: refused without a valid login or for an unknown image; with a login it queues the deploy of the chosen image', async () => {
    b = await makeBootHarness({ images: ['golden'] });
    expect((await b.action(PC_IP, { mac, do: 'deploy', image: 'golden' })).body).toContain('needs a login');
    expect((await b.action(PC_IP, { mac, do: 'deploy', image: 'golden' }, WRONG)).body).toContain('wrong username or password');
    const unknown = await b.action(PC_IP, { mac, do: 'deploy', image: 'nope' }, TECHNICIAN);
    expect(unknown.body).toContain('no image by that name');
    expect(b.tasks.list()).toEqual([]);
    const ok = await b.action(PC_IP, { mac, do: 'deploy', image: 'golden' }, TECHNICIAN);
    expect(b.tasks.activeFor(mac)).toMatchObject({ kind: 'deploy', image: 'golden', state: 'booting', clientIp: PC_IP });
    expect(tokenIn(ok.body)).not.toBeNull();
    expect(lintIpxe(ok.body)).toEqual([]);
    // A second deploy while this one is pending is refused on the PC's screen, not queued.
    const twice = await b.action(PC_IP, { mac, do: 'deploy', image: 'golden' }, TECHNICIAN);
    expect(twice.body).toContain('already has a deploy task');
    expect(b.tasks.list()).toHaveLength(1);
  });

  it('start: a task waiting for a PC whose address was not confirmed starts only after a valid login', async () => {
    b = await makeBootHarness({ images: ['golden'] });
    const task = await b.tasks.create({ kind: 'deploy', mac, image: 'golden' });
    expect((await b.action(PC_IP, { mac, do: 'start' })).body).toContain('needs a login');
    expect((await b.action(PC_IP, { mac, do: 'start' }, WRONG)).body).toContain('wrong username or password');
    expect(task.state).toBe('queued');
    const ok = await b.action(PC_IP, { mac, do: 'start' }, TECHNICIAN);
    expect(task).toMatchObject({ state: 'booting', clientIp: PC_IP });
    expect(tokenIn(ok.body)).not.toBeNull();
    const other = await b.action(PC_IP, { mac: '52:54:00:00:0b:02', do: 'start' }, TECHNICIAN);
    expect(other.body).toContain('no task waits for this PC');
  });

  it('stops checking passwords from an address after repeated failures, for a while', async () => {
    b = await makeBootHarness();
    for (let i = 0; i < LOGIN_FAILURES_PER_MINUTE; i++) {
      expect((await b.action(STRANGER_IP, { mac, do: 'register' }, WRONG)).body).toContain('wrong username or password');
    }
    const blocked = await b.action(STRANGER_IP, { mac, do: 'register' }, TECHNICIAN);
    expect(blocked.body).toContain('too many failed logins');
    expect(b.hosts.get(mac)?.registered ?? false).toBe(false);
    // Another address is not held back by the stranger's guesses.
    await b.action(PC_IP, { mac, do: 'register' }, TECHNICIAN);
    expect(b.hosts.get(mac)?.registered).toBe(true);
  });
});

describe('login', () => {
  it('refuses a wrong password, refuses a missing CSRF token, and logs in with the right one', async () => {
    h = await makeHarness();
    const agent = request.agent(h.app.server);
    const page = await agent.get('/login').expect(200);
    const csrf = csrfFrom(page.text);
    const wrong = await agent.post('/login').type('form').send({ username: 'admin', password: 'nope-nope', _csrf: csrf });
    expect(wrong.status).toBe(401);
    expect(wrong.text).toContain('Wrong username or password');
    const noCsrf = await agent.post('/login').type('form').send({ username: 'admin', password: PASSWORD });
    expect(noCsrf.status).toBe(403);
    expect(noCsrf.text).toMatch(/CSRF/);
    const ok = await agent.post('/login').type('form').send({ username: 'admin', password: PASSWORD, _csrf: csrf, next: '/tasks' });
    expect(ok.status).toBe(303);
    expect(ok.headers.location).toBe('/tasks');
    const cookie = ([] as string[]).concat(ok.headers['set-cookie'] ?? []).find((c) => c.startsWith('nc_session='));
    expect(cookie).toMatch(/HttpOnly/i);
    expect(cookie).toMatch(/SameSite=Strict/i);
    expect(cookie).not.toMatch(/Secure/);
    await agent.get('/tasks').expect(200);
  });

  it('never redirects off-site after login', async () => {
    h = await makeHarness();
    const agent = request.agent(h.app.server);
    const csrf = csrfFrom((await agent.get('/login')).text);
    const r = await agent.post('/login').type('form').send({ username: 'admin', password: PASSWORD, _csrf: csrf, next: '//evil.example/x' });
    expect(r.status).toBe(303);
    expect(r.headers.location).toBe('/');
  });

  it('rate-limits login attempts', async () => {
    h = await makeHarness({ loginRateLimit: { max: 3, timeWindowMs: 60_000 } });
    const agent = request.agent(h.app.server);
    const csrf = csrfFrom((await agent.get('/login')).text);
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      statuses.push((await agent.post('/login').type('form').send({ username: 'admin', password: `guess-${i}-xx`, _csrf: csrf })).status);
    }
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    // Even the right password is refused while the limit holds.
    const right = await agent.post('/login').type('form').send({ username: 'admin', password: PASSWORD, _csrf: csrf });
    expect(right.status).toBe(429);
  });

  it('logs out: the old session cookie stops working', async () => {
    h = await makeHarness();
    const { agent, csrf } = await login(h.app);
    await agent.post('/logout').type('form').send({ _csrf: csrf }).expect(303);
    const r = await agent.get('/');
    expect(r.status).toBe(302);
  });
});

describe('CSRF', () => {
  it('refuses session POSTs without the token, on the API and on pages', async () => {
    h = await makeHarness();
    const { agent, csrf } = await login(h.app);
    const api = await agent.post('/api/v1/hosts').send({ mac: '52:54:00:00:00:01' });
    expect(api.status).toBe(403);
    expect(api.body.message).toMatch(/CSRF/);
    const wrongToken = await agent.post('/api/v1/hosts').set('x-csrf-token', 'not-a-token').send({ mac: '52:54:00:00:00:01' });
    expect(wrongToken.status).toBe(403);
    const page = await agent.post('/hosts').type('form').send({ mac: '52:54:00:00:00:01' });
    expect(page.status).toBe(403);
    expect(h.ctx.hosts.list()).toHaveLength(0);
    await agent.post('/api/v1/hosts').set('x-csrf-token', csrf).send({ mac: '52:54:00:00:00:01' }).expect(201);
    await agent.delete('/api/v1/hosts/52:54:00:00:00:01').expect(403);
    await agent.delete('/api/v1/hosts/52:54:00:00:00:01').set('x-csrf-token', csrf).expect(204);
  });
});

describe('API tokens', () => {
  it('work without CSRF, and stop working when revoked', async () => {
    h = await makeHarness();
    const { token, record } = await createApiToken(h.ctx.db, 'script');
    expect(token).toMatch(/^nct_/);
    expect(JSON.stringify(h.ctx.db.data)).not.toContain(token);
    const s = request(h.app.server);
    const auth = { Authorization: `Bearer ${token}` };
    await s.get('/api/v1/hosts').set(auth).expect(200);
    await s.post('/api/v1/hosts').set(auth).send({ mac: '52-54-00-AA-BB-CC', name: 'Lab 1' }).expect(201);
    expect(h.ctx.hosts.get('52:54:00:aa:bb:cc')?.name).toBe('Lab 1');
    expect(h.ctx.db.data.apiTokens[0].lastUsed).not.toBeNull();
    await s.get('/api/v1/hosts').set({ Authorization: 'Bearer nct_wrong' }).expect(401);
    await s.get('/api/v1/hosts').set({ Authorization: 'Basic abc' }).expect(401);
    // A bearer token opens the API only, not the pages.
    expect((await s.get('/').set(auth)).status).toBe(302);
    await revokeApiToken(h.ctx.db, record.id);
    await s.get('/api/v1/hosts').set(auth).expect(401);
  });
});

describe('first-run setup', () => {
  it('sets the admin password through the one-time link, then the link is dead', async () => {
    h = await makeHarness({ admin: false });
    const agent = request.agent(h.app.server);
    expect((await agent.get('/login')).text).toContain('No admin password is set yet');
    const token = await issueSetupToken(h.ctx.db);
    expect(token).not.toBeNull();
    expect(h.ctx.db.data.settings.setupToken).not.toBe(token);
    expect((await agent.get('/setup?token=wrong')).status).toBe(403);
    const form = await agent.get(`/setup?token=${token}`).expect(200);
    const csrf = csrfFrom(form.text);
    const mismatch = await agent.post('/setup').type('form').send({ token, password: 'abcdefgh1', confirm: 'abcdefgh2', _csrf: csrf });
    expect(mismatch.status).toBe(400);
    const short = await agent.post('/setup').type('form').send({ token, password: 'short', confirm: 'short', _csrf: csrf });
    expect(short.status).toBe(400);
    expect(short.text).toContain('at least 8');
    expect(hasAdmin(h.ctx.db)).toBe(false);
    const ok = await agent.post('/setup').type('form').send({ token, password: 'first-password', confirm: 'first-password', _csrf: csrf });
    expect(ok.status).toBe(303);
    await agent.get('/').expect(200);
    expect(hasAdmin(h.ctx.db)).toBe(true);
    expect((await agent.get(`/setup?token=${token}`)).status).toBe(403);
    const replay = await agent.post('/setup').type('form').send({ token, password: 'attacker-pass', confirm: 'attacker-pass', _csrf: csrf });
    expect(replay.status).toBe(403);
    const fresh = request.agent(h.app.server);
    const c2 = csrfFrom((await fresh.get('/login')).text);
    await fresh.post('/login').type('form').send({ username: 'admin', password: 'first-password', _csrf: c2 }).expect(303);
  });

  it('issues no setup token once an admin exists', async () => {
    h = await makeHarness();
    expect(await issueSetupToken(h.ctx.db)).toBeNull();
  });
});

describe('security headers', () => {
  it('sends a CSP that allows only our own scripts and does not force HTTPS on a plain-HTTP appliance', async () => {
    h = await makeHarness();
    const r = await request(h.app.server).get('/login');
    const csp = String(r.headers['content-security-policy']);
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).not.toContain('upgrade-insecure-requests');
    expect(r.headers['x-frame-options']).toBeDefined();
    expect(r.headers['strict-transport-security']).toBeUndefined();
  });
});
