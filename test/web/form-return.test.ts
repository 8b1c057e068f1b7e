/**
 * After a refused form the browser is back on the page it came from (POST-redirect-GET with the
 * reason as a flash), and Cancel returns to the page it was pressed on, without a Referer.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { login, makeHarness, type Harness } from './helpers.js';
import { safeBack } from '../../src/web/form-return.js';
import { TEST_OPERATOR } from '../lib/actor.js';

let h: Harness;
let agent: Awaited<ReturnType<typeof login>>['agent'];
let csrf: string;

const MAC = '52:54:00:20:00:01';

beforeAll(async () => {
  h = await makeHarness({ images: ['win11'] });
  ({ agent, csrf } = await login(h.app));
  await h.ctx.commands.addHost(TEST_OPERATOR, MAC, 'Front desk');
});
afterAll(async () => {
  await h.close();
});

const backFields = (text: string): string[] => [...text.matchAll(/name="back" value="([^"]*)"/g)].map((m) => m[1]);

describe('forms know their page', () => {
  it('every form of a page carries that page\'s path, query included', async () => {
    const page = await agent.get(`/hosts/${MAC}`).expect(200);
    const forms = (page.text.match(/<form method="post"/g) ?? []).length;
    expect(forms).toBeGreaterThan(3);
    expect(backFields(page.text)).toEqual(Array(forms).fill(`/hosts/${MAC}`));
    const list = await agent.get('/hosts?q=front&state=idle').expect(200);
    expect(backFields(list.text)).toContain('/hosts?q=front&amp;state=idle');
    // A GET form repeats the page's hidden fields in its query: they are not part of the page's path.
    const checked = await agent.get(`/hosts/${MAC}?image=win11&_csrf=x&back=%2Fhosts%2F${encodeURIComponent(MAC)}`).expect(200);
    expect(new Set(backFields(checked.text))).toEqual(new Set([`/hosts/${MAC}?image=win11`]));
  });

  it('accepts only same-origin paths as a place to go back to', () => {
    expect(safeBack('/hosts/52:54:00:20:00:01')).toBe('/hosts/52:54:00:20:00:01');
    expect(safeBack('/hosts?q=a%20b')).toBe('/hosts?q=a%20b');
    for (const bad of ['//evil.example/x', '/\\evil.example', 'https://evil.example/', 'javascript:alert(1)', 'hosts', '', '/a\nb', '/logout', '/login?next=/', 42, null]) {
      expect(safeBack(bad), String(bad)).toBeNull();
    }
  });
});

describe('a refused form', () => {
  it('returns to its page with the reason, so the address bar and a reload stay on that page', async () => {
    const r = await agent.post(`/hosts/${MAC}/deploy`).type('form').send({ _csrf: csrf, back: `/hosts/${MAC}`, image: 'no-such-image' }).expect(303);
    expect(r.headers.location).toBe(`/hosts/${MAC}`);
    const page = await agent.get(`/hosts/${MAC}`).expect(200);
    expect(page.text).toMatch(/<div id="flash"[^>]*><p class="error" role="alert">[^<]*no-such-image/);
    // Shown once.
    expect((await agent.get(`/hosts/${MAC}`)).text).not.toContain('class="error" role="alert"');
  });

  it('returns to a page with its query after a validation error', async () => {
    const r = await agent.post('/hosts').type('form').send({ _csrf: csrf, back: '/hosts?q=front', mac: 'hello' }).expect(303);
    expect(r.headers.location).toBe('/hosts?q=front');
    expect((await agent.get('/hosts?q=front').expect(200)).text).toContain('is not a MAC address');
  });

  it('returns to its page after a failed CSRF check too', async () => {
    const r = await agent.post(`/hosts/${MAC}`).type('form').send({ _csrf: 'stale', back: `/hosts/${MAC}`, name: 'X' }).expect(303);
    expect(r.headers.location).toBe(`/hosts/${MAC}`);
    expect((await agent.get(`/hosts/${MAC}`)).text).toContain('CSRF check failed');
    expect(h.ctx.hosts.get(MAC)?.name).toBe('Front desk');
  });

  it('does not follow a back field that leaves the server', async () => {
    const r = await agent.post('/hosts').type('form').send({ _csrf: csrf, back: '//evil.example/', mac: 'hello' });
    expect(r.status).toBe(400);
    expect(r.headers.location).toBeUndefined();
    expect(r.text).toContain('is not a MAC address');
  });

  it('under htmx shows the reason in place and tells htmx not to push the POST URL', async () => {
    const r = await agent.post('/hosts').set('HX-Request', 'true').type('form').send({ _csrf: csrf, back: '/hosts', mac: 'hello' });
    expect(r.status).toBe(400);
    expect(r.headers['hx-push-url']).toBe('false');
    expect(r.headers['hx-retarget']).toBe('#flash');
  });

  it('keeps /settings in the address bar after a token is created (htmx)', async () => {
    const r = await agent.post('/settings/tokens').set('HX-Request', 'true').type('form').send({ _csrf: csrf, name: 'backup-script' }).expect(200);
    expect(r.headers['hx-push-url']).toBe('/settings');
  });
});

describe('Cancel', () => {
  const queue = async (): Promise<string> => {
    const { task } = await h.ctx.commands.startTask(TEST_OPERATOR, { kind: 'deploy', mac: MAC, image: 'win11' });
    return task.id;
  };

  it('returns to the page it was pressed on (its back field)', async () => {
    const id = await queue();
    const page = await agent.get(`/hosts/${MAC}`).expect(200);
    expect(page.text).toContain(`action="/tasks/${id}/cancel"`);
    const r = await agent.post(`/tasks/${id}/cancel`).type('form').send({ _csrf: csrf, back: `/hosts/${MAC}` }).expect(303);
    expect(r.headers.location).toBe(`/hosts/${MAC}`);
    expect(h.ctx.tasks.get(id)?.state).toBe('cancelled');
  });

  it('returns to the page htmx says it is on (a polled fragment has no back field)', async () => {
    const id = await queue();
    const r = await agent.post(`/tasks/${id}/cancel`).set('HX-Request', 'true').set('Host', 'netclone.lan:8080').set('HX-Current-URL', 'http://netclone.lan:8080/tasks').type('form').send({ _csrf: csrf }).expect(303);
    expect(r.headers.location).toBe('/tasks');
  });

  it('goes to the task without a usable back, and never off the server', async () => {
    const id = await queue();
    const r = await agent.post(`/tasks/${id}/cancel`).set('HX-Request', 'true').set('Host', 'netclone.lan:8080').set('HX-Current-URL', 'http://evil.example/tasks').type('form').send({ _csrf: csrf, back: 'https://evil.example/' }).expect(303);
    expect(r.headers.location).toBe(`/tasks/${id}`);
  });
});

describe('log-in and setup forms', () => {
  it('post to their page\'s own URL, so a refusal answered there keeps it', async () => {
    const { default: request } = await import('supertest');
    const login = await request(h.app.server).get('/login?next=%2Fhosts%3Fq%3Dlab').expect(200);
    expect(login.text).toContain('action="/login?next=%2Fhosts%3Fq%3Dlab"');
    const csrfLogin = /name="_csrf" value="([^"]+)"/.exec(login.text)?.[1] ?? '';
    const cookies = login.headers['set-cookie'] as unknown as string[];
    const wrong = await request(h.app.server).post('/login?next=%2Fhosts%3Fq%3Dlab').set('Cookie', cookies).type('form')
      .send({ _csrf: csrfLogin, username: 'admin', password: 'wrong password', next: '/hosts?q=lab' });
    expect(wrong.status).toBe(401);
    expect(wrong.text).toContain('action="/login?next=%2Fhosts%3Fq%3Dlab"');
    const { setupForm } = await import('../../src/web/pages/auth.js');
    expect(setupForm('c', 'tok-en_1', null).value).toContain('action="/setup?token=tok-en_1"');
  });
});
