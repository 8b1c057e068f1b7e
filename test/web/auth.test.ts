import { afterEach, describe, expect, it } from 'vitest';
import request from 'supertest';
import type { FastifyPluginAsync } from 'fastify';
import { createApiToken, issueSetupToken, revokeApiToken, hasAdmin } from '../../src/appliance/users.js';
import { csrfFrom, login, makeHarness, PASSWORD, type Harness } from './helpers.js';

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

  it('lets the boot and thin-client routes bypass login and CSRF', async () => {
    const extra: FastifyPluginAsync = async (app) => {
      app.get('/boot/menu.ipxe', async () => '#!ipxe\n');
      app.post('/api/client/v1/progress', async () => ({ ok: true }));
    };
    h = await makeHarness({ extraPlugins: [extra] });
    const s = request(h.app.server);
    expect((await s.get('/boot/menu.ipxe').expect(200)).text).toBe('#!ipxe\n');
    expect((await s.post('/api/client/v1/progress').send({ bytes: 1 }).expect(200)).body).toEqual({ ok: true });
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
