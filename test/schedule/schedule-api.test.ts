/** Schedules, groups and Wake-on-LAN through the JSON API and the Schedules page. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import request from 'supertest';
import { createApiToken } from '../../src/domain/users.js';
import { csrfFrom, login, makeHarness, type Harness } from '../web/helpers.js';

const A = '52:54:00:13:a0:01';
const B = '52:54:00:13:a0:02';

let h: Harness;
let auth: { Authorization: string };
const woken: Array<{ mac: string; ip: string | null }> = [];
const api = () => request(h.app.server);

beforeEach(async () => {
  woken.length = 0;
  h = await makeHarness({ images: ['win11'], wake: async (mac, ip) => { woken.push({ mac, ip: ip ?? null }); return { address: '10.0.0.255', port: 9 }; } });
  auth = { Authorization: `Bearer ${(await createApiToken(h.ctx.db, 'tests')).token}` };
  await api().post('/api/v1/hosts').set(auth).send({ mac: A, name: 'Lab PC 1' }).expect(201);
  await api().post('/api/v1/hosts').set(auth).send({ mac: B }).expect(201);
});
afterEach(async () => {
  await h.close();
});

describe('schedules API', () => {
  it('adds, lists and removes a schedule; the list says when it runs next', async () => {
    const created = await api().post('/api/v1/schedules').set(auth).send({ host: A, capture: 'lab1', daily: '2:30', wake: true }).expect(201);
    expect(created.body).toMatchObject({ target: { mac: A }, image: 'lab1', spec: { kind: 'daily', time: '02:30' }, wake: true, after: 'poweroff', windowMinutes: 120, description: 'daily at 02:30', lastRuns: [] });
    const next = new Date(created.body.nextRunAt as string);
    expect([next.getHours(), next.getMinutes()]).toEqual([2, 30]);
    expect(next.getTime()).toBeGreaterThan(Date.now());
    expect(next.getTime() - Date.now()).toBeLessThanOrEqual(24 * 3_600_000);

    await api().post('/api/v1/schedules').set(auth).send({ group: 'Lab', capture: 'lab-{host}', weekly: { day: 'friday', time: '22:00' }, after: 'reboot' }).expect(201);
    await api().post('/api/v1/schedules').set(auth).send({ host: B, capture: 'b', cron: '0 3 * * 1-5' }).expect(201);
    const list = await api().get('/api/v1/schedules').set(auth).expect(200);
    expect(list.body.map((s: { description: string }) => s.description)).toEqual(['daily at 02:30', 'weekly on fri at 22:00', 'cron 0 3 * * 1-5']);
    expect(list.body[2].after).toBe('reboot');

    await api().delete(`/api/v1/schedules/${created.body.id as string}`).set(auth).expect(204);
    expect((await api().get('/api/v1/schedules').set(auth).expect(200)).body).toHaveLength(2);
    const gone = await api().delete(`/api/v1/schedules/${created.body.id as string}`).set(auth).expect(404);
    expect(gone.body.message).toMatch(/no schedule .*schedule list/);
  });

  it('refuses what makes no schedule, saying what to fix', async () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ host: A, group: 'Lab', capture: 'x', daily: '02:00' }, /exactly one/],
      [{ capture: 'x', daily: '02:00' }, /exactly one/],
      [{ host: A, capture: 'x' }, /exactly one of --daily/],
      [{ host: A, capture: 'x', daily: '25:00' }, /not a time of day/],
      [{ host: A, capture: 'x', cron: '0 0 30 2 *' }, /never fires/],
      [{ host: 'nope', capture: 'x', daily: '02:00' }, /not a MAC address/],
      [{ host: A, capture: 'bad name!', daily: '02:00' }, /not a valid image name/],
    ];
    for (const [body, message] of cases) {
      const r = await api().post('/api/v1/schedules').set(auth).send(body).expect(400);
      expect(r.body.message).toMatch(message);
    }
    expect((await api().get('/api/v1/schedules').set(auth).expect(200)).body).toEqual([]);
  });
});

describe('groups and Wake-on-LAN API', () => {
  it('puts hosts in a group, lists it, wakes it, and queues a capture per host', async () => {
    const put = await api().put(`/api/v1/hosts/${A}/group`).set(auth).send({ group: 'Lab 2' }).expect(200);
    expect(put.body.group).toBe('Lab 2');
    await api().put(`/api/v1/hosts/${B}/group`).set(auth).send({ group: 'lab 2' }).expect(200);
    expect((await api().get(`/api/v1/hosts/${B}`).set(auth).expect(200)).body.group).toBe('Lab 2');
    const groups = (await api().get('/api/v1/groups').set(auth).expect(200)).body as Array<{ name: string; hosts: string[] }>;
    expect(groups.map((g) => [g.name, [...g.hosts].sort()])).toEqual([['Lab 2', [A, B]]]);

    const wake = await api().post('/api/v1/groups/Lab%202/wake').set(auth).expect(200);
    expect(wake.body.map((w: { mac: string; sent: boolean }) => [w.mac, w.sent]).sort()).toEqual([[A, true], [B, true]]);
    // Three packets per PC.
    expect(woken.filter((w) => w.mac === A)).toHaveLength(3);
    expect(woken.filter((w) => w.mac === B)).toHaveLength(3);

    const tasks = await api().post('/api/v1/groups/Lab%202/tasks').set(auth).send({ kind: 'capture', image: 'lab' }).expect(200);
    expect(tasks.body.map((r: { mac: string; ok: boolean; task: { image: string } }) => [r.mac, r.ok, r.task.image]).sort()).toEqual([[A, true, 'lab-Lab-PC-1'], [B, true, 'lab-pc-52540013a002']]);
    // Again: both PCs are busy now, and each says so.
    const again = await api().post('/api/v1/groups/Lab%202/tasks').set(auth).send({ kind: 'capture', image: 'lab' }).expect(200);
    expect(again.body.every((r: { ok: boolean; error: string }) => !r.ok && /already has a capture task/.test(r.error))).toBe(true);

    await api().put(`/api/v1/hosts/${B}/group`).set(auth).send({ group: null }).expect(200);
    expect((await api().get('/api/v1/groups').set(auth).expect(200)).body).toEqual([{ name: 'Lab 2', hosts: [A] }]);
    expect((await api().post('/api/v1/groups/Nowhere/wake').set(auth).expect(404)).body.message).toMatch(/no host is in group "Nowhere"/);
  });

  it('wakes one host on the address it was last seen at', async () => {
    h.ctx.hosts.get(A)!.ip = '10.0.0.17';
    const r = await api().post(`/api/v1/hosts/${A}/wake`).set(auth).expect(200);
    expect(r.body).toEqual({ mac: A, sent: true, detail: 'magic packet sent to 10.0.0.255:9' });
    expect(woken).toEqual([{ mac: A, ip: '10.0.0.17' }, { mac: A, ip: '10.0.0.17' }, { mac: A, ip: '10.0.0.17' }]);
  });
});

describe('Schedules page', () => {
  it('is in the nav, adds a schedule from the form, shows it, and removes it', async () => {
    const { agent, csrf } = await login(h.app);
    const empty = await agent.get('/schedules').expect(200);
    expect(empty.text).toContain('<a href="/schedules" aria-current="page">Schedules</a>');
    expect(empty.text).toContain('No schedules yet');
    await agent.post('/schedules').type('form').send({ _csrf: csrfFrom(empty.text) || csrf, target: `host:${A}`, capture: 'lab1', when: 'weekly', day: 'tue', time: '23:15', wake: 'on' }).expect(303);
    const page = await agent.get('/schedules').expect(200);
    expect(page.text).toContain('Schedule added: host 52:54:00:13:a0:01 into lab1, weekly on tue at 23:15');
    expect(page.text).toMatch(/<td>host 52:54:00:13:a0:01<\/td><td class="mono">lab1<\/td><td>weekly on tue at 23:15<\/td><td>yes<\/td><td>poweroff<\/td>/);
    const id = /action="\/schedules\/([^/]+)\/delete"/.exec(page.text)![1];
    const refused = await agent.post('/schedules').type('form').send({ _csrf: csrfFrom(page.text), target: `host:${A}`, capture: 'lab1', when: 'cron', cron: 'every night' });
    expect(refused.status).toBe(400);
    await h.ctx.commands.setHostGroup({ kind: 'operator', name: 't', via: 'cli' }, A, 'Lab 2');
    // The groups page links to the form with its group picked.
    const groups = await agent.get('/groups').expect(200);
    expect(groups.text).toContain('href="/schedules?group=Lab%202"');
    expect((await agent.get('/schedules?group=Lab%202').expect(200)).text).toContain('<option value="group:Lab 2" selected>');
    await agent.post(`/schedules/${id}/delete`).type('form').send({ _csrf: csrfFrom(page.text) }).expect(303);
    expect((await agent.get('/schedules').expect(200)).text).toContain('No schedules yet');
  });
});
