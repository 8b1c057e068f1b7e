/** Wake buttons (hosts list, host page) and the groups page: members, live tasks, group actions. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { login, makeHarness, type Harness } from './helpers.js';
import { TEST_OPERATOR } from '../lib/actor.js';

let h: Harness;
let agent: Awaited<ReturnType<typeof login>>['agent'];
let csrf: string;
const woken: string[] = [];

const A = '52:54:00:40:00:01';
const B = '52:54:00:40:00:02';
const C = '52:54:00:40:00:03';

beforeAll(async () => {
  h = await makeHarness({ images: ['win11'], wake: async (mac) => { woken.push(mac); return { address: '10.0.0.255', port: 9 }; } });
  ({ agent, csrf } = await login(h.app));
  await h.ctx.commands.addHost(TEST_OPERATOR, A, 'Lab PC 1');
  await h.ctx.commands.addHost(TEST_OPERATOR, B, 'Lab PC 2');
  await h.ctx.commands.addHost(TEST_OPERATOR, C, 'Reception');
  await h.ctx.commands.setHostGroup(TEST_OPERATOR, A, 'Lab 2');
});
afterAll(async () => {
  await h.close();
});

/** The back field and action of the Wake form for `mac` in a page. */
function wakeForm(text: string, mac: string): { back: string | undefined } | null {
  const m = new RegExp(`<form method="post" action="/hosts/${mac}/wake"[^>]*>(.*?)</form>`, 's').exec(text);
  if (!m) return null;
  return { back: /name="back" value="([^"]*)"/.exec(m[1])?.[1] };
}

describe('Wake buttons', () => {
  it('every row of the hosts list and the host page has one, and it sends Wake-on-LAN', async () => {
    const list = await agent.get('/hosts').expect(200);
    for (const mac of [A, B, C]) expect(wakeForm(list.text, mac)).toEqual({ back: '/hosts' });
    const page = await agent.get(`/hosts/${C}`).expect(200);
    expect(wakeForm(page.text, C)).toEqual({ back: `/hosts/${C}` });
    // The polled table keeps its buttons.
    expect(wakeForm((await agent.get('/hosts/table').expect(200)).text, B)).not.toBeNull();

    woken.length = 0;
    const r = await agent.post(`/hosts/${C}/wake`).type('form').send({ _csrf: csrf, back: '/hosts' }).expect(303);
    expect(r.headers.location).toBe('/hosts');
    // The packet goes out a few times (one UDP packet can be lost).
    expect(woken.length).toBeGreaterThan(1);
    expect(new Set(woken)).toEqual(new Set([C]));
    expect((await agent.get('/hosts').expect(200)).text).toContain('Wake-on-LAN sent to Reception: magic packet sent to 10.0.0.255:9.');
  });

  it('without a back field returns to the host page', async () => {
    const r = await agent.post(`/hosts/${A}/wake`).type('form').send({ _csrf: csrf }).expect(303);
    expect(r.headers.location).toBe(`/hosts/${A}`);
  });
});

describe('groups page', () => {
  it('puts a PC in a group from the page', async () => {
    const r = await agent.post('/groups/assign').type('form').send({ _csrf: csrf, back: '/groups', mac: B, group: 'lab 2' }).expect(303);
    expect(r.headers.location).toBe('/groups');
    // An existing group keeps its spelling.
    expect(h.ctx.hosts.get(B)?.group).toBe('Lab 2');
    const page = await agent.get('/groups').expect(200);
    expect(page.text).toContain('Lab PC 2 is in Lab 2 now.');
  });

  it('lists each group with its PCs, their Wake buttons and the group actions', async () => {
    const page = await agent.get('/groups').expect(200);
    const section = /<section class="card group" id="group-lab-2">(.*?)<\/section>/s.exec(page.text)?.[1] ?? '';
    expect(section).toContain('<h2>Lab 2</h2>');
    expect(section).toContain('2 PCs');
    expect([...section.matchAll(/<li data-mac="([^"]+)"/g)].map((m) => m[1]).sort()).toEqual([A, B]);
    expect(section).not.toContain(C);
    expect(section).toContain('action="/groups/Lab%202/wake"');
    expect(section).toContain('action="/groups/Lab%202/capture"');
    expect(section).toContain('action="/groups/Lab%202/deploy"');
    expect(section).toContain('hx-get="/groups/Lab%202/hosts"');
    expect(section).toContain('<a href="/schedules?group=Lab%202">Schedule a backup…</a>');
    expect(wakeForm(section, A)).toEqual({ back: '/groups' });
    expect(page.text).toContain('<a href="/groups" aria-current="page">Groups</a>');
  });

  it('wakes the whole group', async () => {
    woken.length = 0;
    await agent.post('/groups/Lab%202/wake').type('form').send({ _csrf: csrf, back: '/groups' }).expect(303);
    expect(new Set(woken)).toEqual(new Set([A, B]));
    expect((await agent.get('/groups').expect(200)).text).toContain('Wake-on-LAN sent to 2 of 2 PCs.');
  });

  it('captures the whole group, each PC into its own image, and shows each PC\'s task live', async () => {
    const r = await agent.post('/groups/Lab%202/capture').type('form').send({ _csrf: csrf, back: '/groups', image: 'backup-{host}', after: 'poweroff' }).expect(303);
    expect(r.headers.location).toBe('/groups');
    const ta = h.ctx.tasks.activeFor(A);
    const tb = h.ctx.tasks.activeFor(B);
    expect(ta).toMatchObject({ kind: 'capture', image: 'backup-Lab-PC-1', after: 'poweroff' });
    expect(tb).toMatchObject({ kind: 'capture', image: 'backup-Lab-PC-2' });
    expect((await agent.get('/groups').expect(200)).text).toContain('Capture queued for 2 of 2 PCs in Lab 2.');
    if (!ta) throw new Error('no task');
    // The fragment the page polls: each PC's task, with the bar once it runs.
    await h.ctx.tasks.beginBoot(ta, '10.0.0.41');
    const GiB = 1024 ** 3;
    await h.ctx.tasks.markRunning(ta, { name: 'sda', size: 4 * GiB, logicalSectorSize: 512, serial: 'S1' }, '10.0.0.41', 4 * GiB);
    h.ctx.tasks.progress(ta, GiB);
    const frag = await agent.get('/groups/Lab%202/hosts').expect(200);
    const rowA = /<li data-mac="52:54:00:40:00:01">(.*?)<\/li>/s.exec(frag.text)?.[1] ?? '';
    expect(rowA).toContain('capture backup-Lab-PC-1');
    expect(rowA).toMatch(/<progress max="100" value="25"/);
    expect(rowA).toContain('covered 1.0 GiB of 4.0 GiB of the disk');
    const rowB = /<li data-mac="52:54:00:40:00:02">(.*?)<\/li>/s.exec(frag.text)?.[1] ?? '';
    expect(rowB).toContain('state-queued');
    expect(frag.text).toContain('hx-trigger="every 1s"');
  });

  it('deploys the whole group; a PC that is busy is named with the reason, the others still get theirs', async () => {
    await h.ctx.commands.setHostGroup(TEST_OPERATOR, C, 'Lab 2');
    const r = await agent.post('/groups/Lab%202/deploy').type('form').send({ _csrf: csrf, back: '/groups', image: 'win11', wake: 'on' }).expect(303);
    expect(r.headers.location).toBe('/groups');
    expect(h.ctx.tasks.activeFor(C)).toMatchObject({ kind: 'deploy', image: 'win11' });
    const page = await agent.get('/groups').expect(200);
    expect(page.text).toMatch(/Deploy queued for 1 of 3 PCs in Lab 2, 1 woken; not for [^<]*Lab PC 1: [^<]*already has a capture task/);
    expect(page.text).toMatch(/not for [^<]*Lab PC 2: [^<]*already has a capture task/);
  });

  it('a group with no PC is refused back on the page with the reason', async () => {
    const r = await agent.post('/groups/Nobody/wake').type('form').send({ _csrf: csrf, back: '/groups' }).expect(303);
    expect(r.headers.location).toBe('/groups');
    expect((await agent.get('/groups').expect(200)).text).toContain('no host is in group');
  });
});
