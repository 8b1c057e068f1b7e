import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { login, makeHarness, tinyDisk, type Harness } from './helpers.js';
import { importStream } from '../../src/imaging/image-import.js';
import { BITLOCKER_NOTE, commitWithLayout, windowsLikeDisk, windowsLikeLayout } from '../lib/layout-image.js';
import { waitFor } from '../lib/wait.js';

let h: Harness;
let agent: Awaited<ReturnType<typeof login>>['agent'];
let csrf: string;

beforeAll(async () => {
  h = await makeHarness({ images: ['win11'], wake: async () => ({ address: '127.0.0.1', port: 9 }) });
  ({ agent, csrf } = await login(h.app));
});
afterAll(async () => {
  await h.close();
});

const MAC = '52:54:00:00:00:31';

describe('pages', () => {
  it('show plain-words empty states', async () => {
    expect((await agent.get('/hosts').expect(200)).text).toContain('No PCs yet');
    expect((await agent.get('/tasks').expect(200)).text).toContain('Nothing is running');
    const dash = await agent.get('/').expect(200);
    expect(dash.text).toContain('free of');
    expect(dash.text).toContain('port 67 in use');
  });

  it('show a PC that network-booted, and register, rename and assign it', async () => {
    await h.ctx.hosts.sighted({ mac: MAC, ip: '10.1.2.3', firmware: 'bios' });
    const table = await agent.get('/hosts/table').expect(200);
    expect(table.text).toContain(MAC);
    expect(table.text).toContain('unregistered');
    await agent.post(`/hosts/${MAC}`).type('form').send({ _csrf: csrf, name: 'Front desk', assignedImage: 'win11' }).expect(303);
    expect(h.ctx.hosts.get(MAC)).toMatchObject({ name: 'Front desk', assignedImage: 'win11', registered: true });
    const page = await agent.get(`/hosts/${MAC}`).expect(200);
    expect(page.text).toContain('Saved Front desk.');
    expect(page.text).toContain('Deploy now');
    // The flash is shown once.
    expect((await agent.get(`/hosts/${MAC}`)).text).not.toContain('Saved Front desk.');
  });

  it('escape everything a PC or a user can put into a page', async () => {
    await h.ctx.db.update((d) => {
      const host = d.hosts.find((x) => x.mac === MAC);
      if (host) host.vendorClass = '<img src=x onerror=alert(1)>';
    });
    const page = await agent.get(`/hosts/${MAC}`).expect(200);
    expect(page.text).not.toContain('<img src=x');
    expect(page.text).toContain('&lt;img src=x onerror=alert(1)&gt;');
  });

  it('add a host by MAC and refuse a bad MAC with a message', async () => {
    const r = await agent.post('/hosts').type('form').send({ _csrf: csrf, mac: '52-54-00-00-00-32', name: 'Lab' }).expect(303);
    expect(r.headers.location).toBe('/hosts/52:54:00:00:00:32');
    const bad = await agent.post('/hosts').type('form').send({ _csrf: csrf, mac: 'hello' });
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('is not a MAC address');
    const frag = await agent.post('/hosts').set('HX-Request', 'true').type('form').send({ _csrf: csrf, mac: 'hello' });
    expect(frag.status).toBe(400);
    expect(frag.headers['hx-retarget']).toBe('#flash');
    expect(frag.text).toMatch(/^<p class="error"/);
    await agent.post('/hosts/52:54:00:00:00:32/delete').type('form').send({ _csrf: csrf }).expect(303);
    expect(h.ctx.hosts.get('52:54:00:00:00:32')).toBeUndefined();
  });

  it('start a deploy with wake, show live progress, cancel it', async () => {
    const r = await agent.post(`/hosts/${MAC}/deploy`).type('form').send({ _csrf: csrf, image: '', wake: 'on' }).expect(303);
    expect(r.headers.location).toBe(`/hosts/${MAC}`);
    const task = h.ctx.tasks.activeFor(MAC);
    expect(task).toMatchObject({ kind: 'deploy', image: 'win11', state: 'queued' });
    expect((await agent.get(`/hosts/${MAC}`)).text).toContain('magic packet sent to 127.0.0.1:9');
    if (!task) throw new Error('no task');
    await h.ctx.tasks.beginBoot(task, '10.1.2.3');
    await h.ctx.tasks.markRunning(task, { name: 'sda', size: 3 << 20, logicalSectorSize: 512, serial: 'S1' }, '10.1.2.3', 3 << 20);
    h.ctx.tasks.progress(task, 1 << 20);
    const frag = await agent.get(`/tasks/${task.id}/progress`).expect(200);
    expect(frag.text).toMatch(/<progress max="100" value="33.3"/);
    expect(frag.text).toContain('hx-trigger="every 1s"');
    const live = await agent.get('/tasks/active').expect(200);
    expect(live.text).toContain(`progress-${task.id}`);
    await agent.get(`/tasks/${task.id}`).expect(200);
    await agent.post(`/tasks/${task.id}/cancel`).type('form').send({ _csrf: csrf }).expect(303);
    expect(h.ctx.tasks.get(task.id)?.state).toBe('cancelled');
    const done = await agent.get(`/tasks/${task.id}/progress`).expect(200);
    expect(done.text).not.toContain('hx-trigger');
    expect(done.text).toContain('cancelled by technician');
  });

  it('start a capture and refuse a bad image name', async () => {
    const bad = await agent.post(`/hosts/${MAC}/capture`).type('form').send({ _csrf: csrf, image: '../../etc' });
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('not a valid image name');
    await agent.post(`/hosts/${MAC}/capture`).type('form').send({ _csrf: csrf, image: 'front-desk' }).expect(303);
    const task = h.ctx.tasks.activeFor(MAC);
    expect(task).toMatchObject({ kind: 'capture', image: 'front-desk' });
    if (task) await h.ctx.tasks.cancel(task.id);
    expect((await agent.get('/tasks')).text).toContain('front-desk');
  });

  it('verify, get a URL, rename and delete images from the page', async () => {
    expect((await agent.get('/images').expect(200)).text).toContain('win11');
    const page = await agent.get('/images/win11').expect(200);
    expect(page.text).toContain('MBR partition table');
    const v = await agent.post('/images/win11/verify').set('HX-Request', 'true').type('form').send({ _csrf: csrf }).expect(200);
    expect(v.text).toContain('verify-box');
    const status = await waitFor('the verify to finish', async () => {
      const s = await agent.get('/images/win11/verify-status').expect(200);
      return s.text.includes('verifying') ? undefined : s.text;
    });
    expect(status).toContain('verified');
    const url = await agent.post('/images/win11/url').set('HX-Request', 'true').type('form').send({ _csrf: csrf }).expect(200);
    expect(url.text).toContain('nbd://');
    await agent.post('/images/win11/rename').type('form').send({ _csrf: csrf, to: 'win11-v2' }).expect(303);
    expect(h.ctx.hosts.get(MAC)?.assignedImage).toBe('win11-v2');
    const del = await agent.post('/images/win11-v2/versions/1/delete').type('form').send({ _csrf: csrf }).expect(303);
    expect(del.headers.location).toBe('/images');
    expect((await agent.get('/images')).text).toContain('No images yet — capture a PC');
    expect((await agent.get('/images/win11-v2')).status).toBe(404);
  });

  it('show what an image knows: partitions, filesystems, how each was captured, the smallest disk it fits', async () => {
    const layout = windowsLikeLayout();
    await commitWithLayout(h.store, 'agentpc', windowsLikeDisk(layout), layout);
    const page = (await agent.get('/images/agentpc').expect(200)).text;
    const card = page.slice(page.indexOf('<h2>Layout'), page.indexOf('<h2>Versions'));
    expect(card).toContain('GPT partition table, disk GUID <code>9D3C6A1E-5B2F-4C8D-A1E7-0F2B3C4D5E6F</code> · 6 partitions · 39.0 MiB free space not stored');
    expect(card).toMatch(/<strong title="35668480 bytes">Fits disks ≥ 34\.0 MiB<\/strong> <span class="muted">\(captured from a 64\.0 MiB disk\)/);
    const rows = card.split('<tr>').slice(2).map((r) => r.replace(/\s+/g, ' '));
    expect(rows).toHaveLength(6);
    expect(rows[0]).toMatch(/<td>1<\/td><td title="C12A7328-F81F-11D2-BA4B-00A0C93EC93B">EFI System<\/td> <td>EFI system partition \/ SYSTEM<\/td><td>vfat<\/td>.*<code title="UUID 1234-ABCD">1234-ABCD<\/code>.*<td>4\.0 MiB<\/td> <td>1\.0 MiB<\/td><td>—<\/td>.*>used blocks<\/td>/);
    expect(rows[2]).toMatch(/<td>3<\/td><td title="EBD0A0A2-B9E5-4433-87C0-68B6B72699C7">Microsoft basic data<\/td> <td>Basic data partition \/ Windows<\/td><td>ntfs<\/td>/);
    expect(rows[2]).toContain('<code title="UUID 0123456789ABCDEF">01234567…</code>');
    expect(rows[2]).toContain('<code title="GUID 00000003-1111-2222-3333-444455556666">00000003…</code>');
    expect(rows[2]).toMatch(/<td>40\.0 MiB<\/td> <td>10\.0 MiB<\/td><td>12\.0 MiB<\/td> <td class="reason-cell">used blocks<\/td>/);
    expect(rows[3]).toContain(`<td class="reason-cell">whole: ${BITLOCKER_NOTE}</td>`);
    expect(rows[3]).toContain('<td>bitlocker</td>');
    expect(rows[4]).toMatch(/Linux swap.*swap0.*swap: recreated on restore/);
    expect(rows[5]).toMatch(/Windows recovery environment.*Recovery.*<td>8\.0 MiB<\/td> <td>3\.0 MiB<\/td><td>4\.0 MiB<\/td>/);

    // A version without a layout (imported) shows the table read from its disk and fits only its own size.
    const disk = tinyDisk();
    await importStream(h.store, 'plainpc', Readable.from([disk]), disk.length, { source: 'import' });
    const plain = (await agent.get('/images/plainpc').expect(200)).text;
    expect(plain).toContain('Fits disks ≥ 3.0 MiB</strong> <span class="muted">(captured without a layout: restored at its own size)</span>');
    expect(plain).toContain('MBR partition table, 1 partition');
    expect(plain).not.toContain('Can shrink to');
  });

  it('create and revoke API tokens, change the password', async () => {
    const created = await agent.post('/settings/tokens').type('form').send({ _csrf: csrf, name: 'nightly' }).expect(200);
    const token = /id="new-token">([^<]+)</.exec(created.text)?.[1];
    expect(token).toMatch(/^nct_/);
    const id = h.ctx.db.data.apiTokens.find((t) => t.name === 'nightly')?.id;
    await agent.post(`/settings/tokens/${id}/revoke`).type('form').send({ _csrf: csrf }).expect(303);
    expect(h.ctx.db.data.apiTokens).toHaveLength(0);
    const wrong = await agent.post('/settings/password').type('form').send({ _csrf: csrf, current: 'not-it-at-all', password: 'new-password-1' });
    expect(wrong.status).toBe(400);
    await agent.post('/settings/password').type('form').send({ _csrf: csrf, current: 'correct horse battery', password: 'new-password-1' }).expect(303);
    await agent.get('/settings').expect(200);
  });

  it('answer unknown pages with a readable 404', async () => {
    const r = await agent.get('/hosts/52:54:00:00:00:99');
    expect(r.status).toBe(404);
    expect(r.text).toContain('no host with MAC 52:54:00:00:00:99');
    expect((await agent.get('/nowhere')).status).toBe(404);
  });
});
