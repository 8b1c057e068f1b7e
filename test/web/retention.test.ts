/**
 * Retention and store-wide space on the web (issue 13): the JSON API (prune with dry run, stored
 * policy, protect, notes, /store/space) and the image page's forms, the images list and the
 * dashboard. The harness's two images are made from the same disk, so they share every chunk.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import request from 'supertest';
import { createApiToken } from '../../src/domain/users.js';
import { importStream } from '../../src/imaging/image-import.js';
import { login, makeHarness, tinyDisk, type Harness } from './helpers.js';

let h: Harness;
let auth: { Authorization: string };
const api = () => request(h.app.server);

/** Another version of `name`: the tiny disk with its data stretch changed by `seed`. */
async function newVersion(name: string, seed: number): Promise<void> {
  const disk = tinyDisk();
  for (let i = 1024 * 1024; i < 1024 * 1024 + 4096; i++) disk[i] = (i * seed) & 0xff;
  await importStream(h.store, name, Readable.from([disk]), disk.length, { source: `capture of 52:54:00:aa:00:0${seed} disk sda` });
}

beforeEach(async () => {
  h = await makeHarness({ images: ['win11', 'ubuntu'] });
  auth = { Authorization: `Bearer ${(await createApiToken(h.ctx.db, 'tests')).token}` };
});
afterEach(async () => {
  await h.close();
});

describe('store-wide space', () => {
  it('the images list adds up to what the store holds, and an image sharing all its chunks with another shows what that saves', async () => {
    const space = (await api().get('/api/v1/store/space').set(auth).expect(200)).body as { storedBytes: number; logicalBytes: number; dedupSavings: number; versionCount: number };
    expect(space.versionCount).toBe(2);
    const list = (await api().get('/api/v1/images').set(auth).expect(200)).body as Array<{ storedBytes: number; exclusiveBytes: number }>;
    expect(Math.abs(list.reduce((s, i) => s + i.storedBytes, 0) - space.storedBytes)).toBeLessThanOrEqual(1);
    expect(list.map((i) => i.exclusiveBytes)).toEqual([0, 0]);
    const win = (await api().get('/api/v1/images/win11').set(auth).expect(200)).body as { storedBytes: number; sharedBytes: number; dedupSavings: number };
    expect(win.sharedBytes).toBe(space.storedBytes);
    expect(win.storedBytes).toBe(Math.round(space.storedBytes / 2));
    expect(win.dedupSavings).toBe(space.storedBytes - win.storedBytes); // "Dedup saves 0 B" before issue 13
    expect(space.dedupSavings).toBe(space.storedBytes);
  });

  it('the dashboard and the images list say what the store holds against the versions\' data', async () => {
    const { agent } = await login(h.app);
    for (const path of ['/', '/images']) expect((await agent.get(path).expect(200)).text).toMatch(/The store holds <strong>[^<]+<\/strong> on disk for <strong>[^<]+<\/strong> of data in 2 versions/);
  });
});

describe('retention API', () => {
  it('protects, notes, stores a policy, previews and prunes; protected and newest versions stay', async () => {
    for (const seed of [2, 3]) await newVersion('win11', seed);
    await api().put('/api/v1/images/win11/versions/1/protect').set(auth).expect(200, { image: 'win11', version: 1, protected: true, note: '' });
    await api().put('/api/v1/images/win11/versions/2/note').set(auth).send({ note: 'before the BIOS update' }).expect(200);
    await api().delete('/api/v1/images/win11/versions/1').set(auth).expect(409);
    await api().put('/api/v1/images/win11/retention').set(auth).send({ keepLast: 1, keepDaily: 0 }).expect(200, { image: 'win11', retention: { keepLast: 1 } });
    await api().get('/api/v1/images/win11/retention').set(auth).expect(200, { image: 'win11', retention: { keepLast: 1 } });
    await api().put('/api/v1/images/win11/retention').set(auth).send({ keepYearly: 1 }).expect(400);

    const dry = await api().post('/api/v1/images/win11/prune').set(auth).send({ dryRun: true }).expect(200);
    expect(dry.body.policySource).toBe('stored');
    expect(dry.body.decisions.map((d: { version: number; keep: boolean }) => [d.version, d.keep])).toEqual([[3, true], [2, false], [1, true]]);
    expect(dry.body.removed).toEqual([]);

    const detail = (await api().get('/api/v1/images/win11').set(auth).expect(200)).body as { retention: unknown; versions: Array<{ version: number; protected: boolean; note: string; changedBytes: number; previousVersion: number | null; sourceMac: string | null }> };
    expect(detail.retention).toEqual({ keepLast: 1 });
    expect(detail.versions.map((v) => [v.version, v.protected, v.note, v.previousVersion, v.sourceMac])).toEqual([
      [3, false, '', 2, '52:54:00:aa:00:03'], [2, false, 'before the BIOS update', 1, '52:54:00:aa:00:02'], [1, true, '', null, null],
    ]);
    // One 1 MiB chunk differs between versions 2 and 3.
    expect(detail.versions[0].changedBytes).toBe(1024 * 1024);

    const done = await api().post('/api/v1/images/win11/prune').set(auth).send({}).expect(200);
    expect(done.body.removed).toEqual([2]);
    expect(await h.store.versions('win11')).toEqual([1, 3]);
    await api().delete('/api/v1/images/win11/versions/1/protect').set(auth).expect(200, { image: 'win11', version: 1, protected: false, note: '' });
    await api().post('/api/v1/images/win11/prune').set(auth).send({ keepLast: 1 }).expect(200);
    expect(await h.store.versions('win11')).toEqual([3]);
  });

  it('refuses a prune of an image that does not exist (404) and a note that is too long (400)', async () => {
    await api().post('/api/v1/images/nope/prune').set(auth).send({}).expect(404);
    await api().put('/api/v1/images/win11/versions/1/note').set(auth).send({ note: 'x'.repeat(501) }).expect(400);
  });
});

describe('image page', () => {
  it('edits a note, toggles protection, stores a policy, previews a prune and prunes, all through CSRF-checked forms', async () => {
    for (const seed of [2, 3]) await newVersion('win11', seed);
    const { agent, csrf } = await login(h.app);
    const page = (await agent.get('/images/win11').expect(200)).text;
    expect(page).toContain('action="/images/win11/versions/2/note"');
    expect(page).toContain('action="/images/win11/versions/1/protect"');
    expect(page).toMatch(/<th>Changed<\/th>/);

    await agent.post('/images/win11/versions/2/note').type('form').send({ note: 'clean install' }).expect(403);
    await agent.post('/images/win11/versions/2/note').type('form').send({ _csrf: csrf, note: 'clean install' }).expect(303);
    await agent.post('/images/win11/versions/1/protect').type('form').send({ _csrf: csrf, protected: '1' }).expect(303);
    const after = (await agent.get('/images/win11').expect(200)).text;
    expect(after).toContain('value="clean install"');
    expect(after).toMatch(/<span class="badge state-done">protected<\/span><br><button class="small">Unprotect<\/button>/);

    await agent.post('/images/win11/retention').type('form').send({ _csrf: csrf, keepLast: '1', keepDaily: '', do: 'save' }).expect(303);
    expect((await agent.get('/images/win11').expect(200)).text).toContain('Policy: <strong>keep-last 1</strong>');

    const asked = await agent.post('/images/win11/retention').type('form').send({ _csrf: csrf, keepLast: '1', keepDaily: '', do: 'preview' }).expect(303);
    expect(asked.headers.location).toBe('/images/win11/prune?dryRun=1&keepLast=1#prune-preview');
    const preview = (await agent.get('/images/win11/prune?dryRun=1&keepLast=1').expect(200)).text;
    expect(preview).toContain('Dry run: keep-last 1');
    expect(preview.match(/badge state-failed">remove</g)?.length).toBe(1);
    expect(preview).toContain('Remove 1 version now');
    expect(await h.store.versions('win11')).toEqual([1, 2, 3]);

    const r = await agent.post('/images/win11/prune').type('form').send({ _csrf: csrf, keepLast: '1' }).expect(303);
    expect(r.headers.location).toBe('/images/win11');
    expect(await h.store.versions('win11')).toEqual([1, 3]);
    expect((await agent.get('/images/win11').expect(200)).text).toContain('Removed version 2 of win11 (keep-last 1)');
  });
});
