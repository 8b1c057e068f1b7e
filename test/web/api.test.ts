import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createSocket, type Socket } from 'node:dgram';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { loopbackConfig } from '../lib/appliance-config.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { createApiToken } from '../../src/domain/users.js';
import { nullLogger } from '../../src/lib/log.js';
import { CMD, ERRNO, TFLAG } from '../../src/nbd/protocol.js';
import { sendMagicPacket, wakeSender } from '../../src/lib/wake-on-lan.js';
import { makeHarness, tinyDisk, type Harness } from './helpers.js';
import { BITLOCKER_NOTE, commitWithLayout, windowsLikeDisk, windowsLikeLayout } from '../lib/layout-image.js';
import { rawGo, readSimpleReply, request as nbdRequest } from '../nbd/helpers.js';
import { run } from '../lib/run.js';
import { sleep, waitFor } from '../lib/wait.js';

let h: Harness;
let auth: { Authorization: string };
let udp: Socket;
const received: Buffer[] = [];

beforeAll(async () => {
  udp = createSocket('udp4');
  udp.on('message', (m) => received.push(m));
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
});
afterAll(() => {
  udp.close();
});

/**
 * Every test of the hosts, images and tasks APIs starts from a fresh harness (images win11 and ubuntu, no
 * PCs, no tasks, one API token) and makes the PCs and tasks it needs, so none leans on what another left.
 */
function freshHarnessPerTest(): void {
  beforeEach(async () => {
    h = await makeHarness({ images: ['win11', 'ubuntu'], wake: wakeSender(() => ({ address: '127.0.0.1', port: udp.address().port })) });
    auth = { Authorization: `Bearer ${(await createApiToken(h.ctx.db, 'tests')).token}` };
  });
  afterEach(async () => {
    await h.close();
  });
}

const api = () => request(h.app.server);

/** A registered PC with `image` assigned, made through the API. */
async function assignedPc(mac: string, image: string): Promise<void> {
  await api().post('/api/v1/hosts').set(auth).send({ mac }).expect(201);
  await api().patch(`/api/v1/hosts/${mac}`).set(auth).send({ assignedImage: image }).expect(200);
}

describe('hosts API', () => {
  freshHarnessPerTest();

  it('creates, reads, patches and deletes hosts', async () => {
    const created = await api().post('/api/v1/hosts').set(auth).send({ mac: '52:54:00:00:00:10', name: 'Desk 10' }).expect(201);
    expect(created.body).toMatchObject({ mac: '52:54:00:00:00:10', name: 'Desk 10', registered: true, state: 'idle' });
    await h.ctx.hosts.sighted({ mac: '52:54:00:00:00:11', ip: '10.0.0.11', firmware: 'uefi' });
    const list = await api().get('/api/v1/hosts').set(auth).expect(200);
    expect(list.body.map((x: { mac: string }) => x.mac).sort()).toEqual(['52:54:00:00:00:10', '52:54:00:00:00:11']);
    expect(list.body.find((x: { mac: string }) => x.mac === '52:54:00:00:00:11')).toMatchObject({ registered: false, ip: '10.0.0.11', firmware: 'uefi' });
    const patched = await api().patch('/api/v1/hosts/52:54:00:00:00:11').set(auth).send({ name: 'Desk 11', assignedImage: 'win11' }).expect(200);
    expect(patched.body).toMatchObject({ name: 'Desk 11', assignedImage: 'win11', registered: true });
    const boot = await api().patch('/api/v1/hosts/52:54:00:00:00:11').set(auth).send({ localBoot: 'sanboot', efiLoader: 'ipxe.efi' }).expect(200);
    expect(boot.body).toMatchObject({ localBoot: 'sanboot', efiLoader: 'ipxe.efi' });
    expect(h.ctx.hosts.get('52:54:00:00:00:11')).toMatchObject({ localBoot: 'sanboot', efiLoader: 'ipxe.efi' });
    await api().patch('/api/v1/hosts/52:54:00:00:00:11').set(auth).send({ efiLoader: 'evil.efi' }).expect(400);
    await api().get('/api/v1/hosts/52-54-00-00-00-11').set(auth).expect(200);
    await api().delete('/api/v1/hosts/52:54:00:00:00:10').set(auth).expect(204);
    await api().get('/api/v1/hosts/52:54:00:00:00:10').set(auth).expect(404);
  });

  it('names the PC last seen at an address (what the TFTP log uses)', async () => {
    await h.ctx.hosts.sighted({ mac: '52:54:00:00:00:21', ip: '10.0.0.21', firmware: 'bios' });
    expect(h.ctx.hosts.byIp('10.0.0.21')?.mac).toBe('52:54:00:00:00:21');
    expect(h.ctx.hosts.byIp('10.0.0.99')).toBeUndefined();
    await sleep(5);
    // The lease moved to another PC: the newer sighting wins.
    await h.ctx.hosts.sighted({ mac: '52:54:00:00:00:22', ip: '10.0.0.21', firmware: 'uefi' });
    expect(h.ctx.hosts.byIp('10.0.0.21')?.mac).toBe('52:54:00:00:00:22');
  });

  it('answers bad input with 400 and a message, never 500', async () => {
    await assignedPc('52:54:00:00:00:11', 'win11');
    const badMac = await api().post('/api/v1/hosts').set(auth).send({ mac: 'zz:zz' }).expect(400);
    expect(badMac.body.message).toMatch(/mac is not a MAC address/);
    expect((await api().get('/api/v1/hosts/not-a-mac').set(auth).expect(400)).body.message).toMatch(/MAC/);
    expect((await api().post('/api/v1/hosts').set(auth).send({ mac: '52:54:00:00:00:12', name: '<script>' }).expect(400)).body.message).toMatch(/name/);
    expect((await api().post('/api/v1/hosts').set(auth).send({ mac: '52:54:00:00:00:12', extra: 1 }).expect(400)).body.message).toMatch(/unknown field "extra"/);
    expect((await api().post('/api/v1/hosts').set(auth).send({}).expect(400)).body.message).toMatch(/"mac" is missing/);
    await api().post('/api/v1/hosts').set(auth).set('content-type', 'application/json').send('{"mac": ').expect(400);
    const badAssign = await api().patch('/api/v1/hosts/52:54:00:00:00:11').set(auth).send({ assignedImage: '../etc' }).expect(400);
    expect(badAssign.body.message).toMatch(/image name/);
    expect((await api().patch('/api/v1/hosts/52:54:00:00:00:11').set(auth).send({ assignedImage: 'nonexistent' }).expect(400)).body.message).toMatch(/no image "nonexistent"/);
    await api().get('/api/v1/images/..%2F..%2Fetc').set(auth).expect(400);
    await api().get('/api/v1/images/nope').set(auth).expect(404);
    expect((await api().post('/api/v1/images/win11/url').set(auth).send({ ttlSeconds: 1e9 }).expect(400)).body.message).toMatch(/ttlSeconds/);
    await api().delete('/api/v1/images/win11/versions/0').set(auth).expect(400);
    await api().delete('/api/v1/images/win11/versions/abc').set(auth).expect(400);
    await api().get('/api/v1/tasks?limit=-5').set(auth).expect(400);
    await api().get('/api/v1/events?limit=100000').set(auth).expect(400);
    await api().post('/api/v1/tasks').set(auth).send({ kind: 'explode', mac: '52:54:00:00:00:11' }).expect(400);
  });
});

describe('images API', () => {
  freshHarnessPerTest();

  it('lists images and shows details with partition table and space figures', async () => {
    const list = await api().get('/api/v1/images').set(auth).expect(200);
    expect(list.body.map((i: { name: string }) => i.name)).toEqual(['ubuntu', 'win11']);
    const d = await api().get('/api/v1/images/win11').set(auth).expect(200);
    expect(d.body).toMatchObject({ name: 'win11', latestVersion: 1, size: 3 * 1024 * 1024, partitionTable: { scheme: 'mbr' } });
    expect(d.body.versions[0]).toMatchObject({ version: 1, source: 'test import' });
    expect(d.body.storedBytes).toBeGreaterThan(0);
    expect(d.body.storedBytes).toBeLessThan(d.body.dataBytes);
  });

  it('shows what an image knows: the layout of a version the agent captured, and the smallest disk it fits', async () => {
    const layout = windowsLikeLayout();
    await commitWithLayout(h.store, 'win11', windowsLikeDisk(layout), layout);
    const d = await api().get('/api/v1/images/win11').set(auth).expect(200);
    expect(d.body.latestVersion).toBe(2);
    expect(d.body.size).toBe(64 * 1024 * 1024);
    // C: shrinks to 12 MiB and the 16 MiB behind it packs after it, plus the GPT backup area.
    expect(d.body.fitsDiskBytes).toBe(34 * 1024 * 1024 + 33 * 512);
    expect(d.body.layoutError).toBeNull();
    expect(d.body.layout).toEqual({
      scheme: 'gpt',
      diskGuid: '9D3C6A1E-5B2F-4C8D-A1E7-0F2B3C4D5E6F',
      freeBytes: 39 * 1024 * 1024,
      partitions: layout.partitions.map(({ attributes: _a, ...p }) => p),
    });
    expect(d.body.layout).not.toHaveProperty('freeChunks');
    expect(d.body.layout.partitions[2]).toMatchObject({ index: 3, typeId: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7', guid: '00000003-1111-2222-3333-444455556666', name: 'Basic data partition', filesystem: 'ntfs', label: 'Windows', uuid: '0123456789ABCDEF', sizeBytes: 40 * 1024 * 1024, usedBytes: 10 * 1024 * 1024, minSizeBytes: 12 * 1024 * 1024, mode: 'used-blocks', note: null });
    expect(d.body.layout.partitions[3]).toMatchObject({ filesystem: 'bitlocker', mode: 'whole', note: BITLOCKER_NOTE });
    expect(d.body.layout.partitions[4]).toMatchObject({ filesystem: 'swap', mode: 'swap', label: 'swap0' });
    // Imported: no layout; it deploys onto disks of its own size.
    const plain = await api().get('/api/v1/images/ubuntu').set(auth).expect(200);
    expect(plain.body).toMatchObject({ layout: null, layoutError: null, fitsDiskBytes: 3 * 1024 * 1024, partitionTable: { scheme: 'mbr' } });
  });

  it('verifies an image and reports the result', async () => {
    const started = await api().post('/api/v1/images/win11/verify').set(auth).send({}).expect(202);
    expect(['running', 'ok']).toContain(started.body.state);
    const v = await waitFor('the verify to finish', async () => {
      const r = await api().get('/api/v1/images/win11').set(auth);
      return r.body.lastVerify?.state !== 'running' ? (r.body.lastVerify as { state: string; message: string }) : undefined;
    });
    expect(v.state).toBe('ok');
    expect(v.message).toMatch(/intact/);
    await api().post('/api/v1/images/missing/verify').set(auth).send({}).expect(404);
  });

  it('renames an image; assigned hosts follow; a taken name is a 409', async () => {
    await assignedPc('52:54:00:00:00:11', 'win11');
    await api().post('/api/v1/images/win11/rename').set(auth).send({ to: 'ubuntu' }).expect(409);
    const r = await api().post('/api/v1/images/win11/rename').set(auth).send({ to: 'win11-office' }).expect(200);
    expect(r.body.name).toBe('win11-office');
    expect(h.ctx.hosts.get('52:54:00:00:00:11')?.assignedImage).toBe('win11-office');
    await api().post('/api/v1/images/win11-office/rename').set(auth).send({ to: '../x' }).expect(400);
  });

  it('deletes a version; the last version takes the image with it', async () => {
    await api().delete('/api/v1/images/ubuntu/versions/7').set(auth).expect(404);
    await api().delete('/api/v1/images/ubuntu/versions/1').set(auth).expect(204);
    const list = await api().get('/api/v1/images').set(auth).expect(200);
    expect(list.body.map((i: { name: string }) => i.name)).toEqual(['win11']);
  });
});

describe('tasks API', () => {
  freshHarnessPerTest();

  it('queues a deploy of the assigned image with Wake-on-LAN, refuses a second one, cancels', async () => {
    await assignedPc('52:54:00:00:00:11', 'win11');
    received.length = 0;
    const r = await api().post('/api/v1/tasks').set(auth).send({ kind: 'deploy', mac: '52:54:00:00:00:11', wake: true }).expect(201);
    expect(r.body.task).toMatchObject({ kind: 'deploy', image: 'win11', state: 'queued', mac: '52:54:00:00:00:11' });
    expect(r.body.task.tokenHash).toBeUndefined();
    expect(r.body.wake.sent).toBe(true);
    const packet = await waitFor('the magic packet', () => received[0]);
    expect(packet.length).toBe(102);
    expect(packet.subarray(0, 6)).toEqual(Buffer.alloc(6, 0xff));
    for (let i = 0; i < 16; i++) expect(packet.subarray(6 + i * 6, 12 + i * 6).toString('hex')).toBe('525400000011');
    expect((await api().get('/api/v1/hosts/52:54:00:00:00:11').set(auth)).body.state).toBe('task pending');
    const again = await api().post('/api/v1/tasks').set(auth).send({ kind: 'capture', mac: '52:54:00:00:00:11', image: 'new-one' }).expect(409);
    expect(again.body.message).toMatch(/already has a deploy task/);
    const id = r.body.task.id as string;
    expect((await api().get(`/api/v1/tasks/${id}`).set(auth).expect(200)).body.id).toBe(id);
    expect((await api().get('/api/v1/tasks?active=true').set(auth).expect(200)).body).toHaveLength(1);
    const c = await api().post(`/api/v1/tasks/${id}/cancel`).set(auth).expect(200);
    expect(c.body.state).toBe('cancelled');
    await api().post(`/api/v1/tasks/${id}/cancel`).set(auth).expect(409);
    await api().get('/api/v1/tasks/no-such-task').set(auth).expect(404);
  });

  it('needs an image name for a capture and an existing image for a deploy', async () => {
    await h.ctx.hosts.add('52:54:00:00:00:20');
    expect((await api().post('/api/v1/tasks').set(auth).send({ kind: 'capture', mac: '52:54:00:00:00:20' }).expect(400)).body.message).toMatch(/name/);
    expect((await api().post('/api/v1/tasks').set(auth).send({ kind: 'deploy', mac: '52:54:00:00:00:20' }).expect(400)).body.message).toMatch(/no assigned image/);
    await api().post('/api/v1/tasks').set(auth).send({ kind: 'deploy', mac: '52:54:00:00:00:20', image: 'ghost' }).expect(404);
    const cap = await api().post('/api/v1/tasks').set(auth).send({ kind: 'capture', mac: '52:54:00:00:00:20', image: 'fresh', after: 'poweroff' }).expect(201);
    expect(cap.body.task).toMatchObject({ state: 'queued', after: 'poweroff', image: 'fresh' });
    expect(cap.body.wake).toBeNull();
  });

  it('queues a task for a PC it has not seen yet and registers that PC, as the CLI and the PC menus do', async () => {
    const mac = '52:54:00:00:00:98';
    expect(h.ctx.hosts.get(mac)).toBeUndefined();
    const r = await api().post('/api/v1/tasks').set(auth).send({ kind: 'deploy', mac, image: 'win11' }).expect(201);
    expect(r.body.task).toMatchObject({ mac, kind: 'deploy', image: 'win11', state: 'queued' });
    expect(h.ctx.hosts.get(mac)?.registered).toBe(true);
  });

  it('lists events and status', async () => {
    await h.ctx.hosts.add('52:54:00:00:00:20');
    await api().post('/api/v1/tasks').set(auth).send({ kind: 'capture', mac: '52:54:00:00:00:20', image: 'fresh' }).expect(201);
    const ev = await api().get('/api/v1/events?limit=5').set(auth).expect(200);
    expect(ev.body.length).toBeGreaterThan(0);
    expect(ev.body.length).toBeLessThanOrEqual(5);
    const mine = await api().get('/api/v1/events?mac=52:54:00:00:00:20').set(auth).expect(200);
    expect(mine.body.every((e: { mac: string }) => e.mac === '52:54:00:00:00:20')).toBe(true);
    const st = await api().get('/api/v1/status').set(auth).expect(200);
    expect(st.body.services.map((s: { name: string }) => s.name)).toEqual(['http', 'nbd', 'tftp', 'dhcp']);
    expect(st.body.store.freeBytes).toBeGreaterThan(0);
    expect(st.body).toMatchObject({ images: 2, activeTasks: 1 });
  });

  it('manages API tokens', async () => {
    const c = await api().post('/api/v1/tokens').set(auth).send({ name: 'ci' }).expect(201);
    expect(c.body.token).toMatch(/^nct_/);
    const list = await api().get('/api/v1/tokens').set(auth).expect(200);
    expect(list.body.map((t: { name: string }) => t.name)).toEqual(['tests', 'ci']);
    expect(JSON.stringify(list.body)).not.toContain('tokenHash');
    await api().post('/api/v1/tokens').set(auth).send({ name: 'ci' }).expect(409);
    await api().get('/api/v1/hosts').set({ Authorization: `Bearer ${c.body.token}` }).expect(200);
    await api().delete(`/api/v1/tokens/${c.body.id}`).set(auth).expect(204);
    await api().get('/api/v1/hosts').set({ Authorization: `Bearer ${c.body.token}` }).expect(401);
  });

  it('publishes the OpenAPI document behind login', async () => {
    // /docs is behind login like the pages: a token opens the API, not the docs UI.
    expect((await api().get('/docs/json').set(auth)).status).toBe(302);
    const { login } = await import('./helpers.js');
    const { agent } = await login(h.app);
    const doc = await agent.get('/docs/json').expect(200);
    expect(doc.body.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.body.paths)).toEqual(expect.arrayContaining(['/api/v1/hosts', '/api/v1/hosts/{mac}', '/api/v1/images/{name}/versions/{n}', '/api/v1/tasks/{id}/cancel', '/api/v1/status']));
    expect(Object.keys(doc.body.paths).some((p) => p.startsWith('/hosts'))).toBe(false);
    const detail = JSON.stringify(doc.body.paths['/api/v1/images/{name}'].get.responses['200']);
    for (const field of ['"fitsDiskBytes"', '"layout"', '"freeBytes"', '"minSizeBytes"', '"used-blocks"']) expect(detail).toContain(field);
    expect(detail).not.toContain('freeChunks');
    await agent.get('/docs').redirects(2).expect(200);
  });
});

describe('Wake-on-LAN', () => {
  it('sends the 102-byte magic packet to the given address', async () => {
    received.length = 0;
    await sendMagicPacket('AA-BB-CC-DD-EE-FF', { address: '127.0.0.1', port: udp.address().port });
    const p = await waitFor('the magic packet', () => received[0]);
    expect(p).toEqual(Buffer.concat([Buffer.alloc(6, 0xff), ...Array.from({ length: 16 }, () => Buffer.from('aabbccddeeff', 'hex'))]));
    await expect(sendMagicPacket('nonsense', { address: '127.0.0.1', port: 9 })).rejects.toThrow(/MAC/);
  });
});

/**
 * The URL route on the real appliance: the HTTP API, the runtime's NBD access (grants over the image
 * store's export source) and the NBD server, checked from outside with real NBD clients.
 */
describe('nbd:// URL on the running appliance', () => {
  let app: RunningAppliance;
  let dir: string;
  let bearer: { Authorization: string };
  const disk = tinyDisk();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'netclone-api-nbd-'));
    app = await startAppliance(loopbackConfig(dir), nullLogger());
    await writeFile(join(dir, 'win11.raw'), disk);
    await app.core.commands.importImage(TEST_OPERATOR, 'win11', createReadStream(join(dir, 'win11.raw')), disk.length, 'test import', () => undefined);
    bearer = { Authorization: `Bearer ${(await createApiToken(app.core.db, 'tests')).token}` };
  });
  afterAll(async () => {
    await app?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('issues a read-only nbd:// URL through the NBD layer', async () => {
    const before = Date.now();
    const r = await request(`http://127.0.0.1:${app.ports.http}`)
      .post('/api/v1/images/win11/url')
      .set(bearer)
      .set('Host', `localhost:${app.ports.http}`)
      .send({ ttlSeconds: 600 })
      .expect(200);
    const after = Date.now();
    // The URL names the host the caller reached us by and the NBD server's port.
    const m = new RegExp(`^nbd://localhost:${app.ports.nbd}/([A-Za-z0-9_-]+)$`).exec(r.body.uri as string);
    expect(m, r.body.uri).not.toBeNull();
    expect(r.body.exportName).toBe(m?.[1]);
    const expires = Date.parse(r.body.expiresAt as string);
    expect(expires).toBeGreaterThanOrEqual(before + 600_000 - 1);
    expect(expires).toBeLessThanOrEqual(after + 600_000);
    const uri = `nbd://127.0.0.1:${app.ports.nbd}/${r.body.exportName as string}`;

    // A real client sees a read-only export of the image's size, and reads the image's bytes.
    const info = await run('nbdinfo', ['--json', uri]);
    expect(info.code, info.stderr).toBe(0);
    const exp = (JSON.parse(info.stdout) as { exports: Array<{ 'export-size': number; is_read_only: boolean }> }).exports[0];
    expect(exp).toMatchObject({ 'export-size': disk.length, is_read_only: true });
    const copy = join(dir, 'copy.raw');
    const read = await run('nbdcopy', [uri, copy]);
    expect(read.code, read.stderr).toBe(0);
    expect((await readFile(copy)).equals(disk)).toBe(true);

    // Writing is refused: by real clients, and by the server itself when a client ignores the flag.
    await writeFile(join(dir, 'junk.raw'), Buffer.alloc(disk.length, 0xaa));
    const nbdcopyWrite = await run('nbdcopy', [join(dir, 'junk.raw'), uri]);
    expect(nbdcopyWrite.code).not.toBe(0);
    expect(nbdcopyWrite.stderr).toMatch(/read.?only/i);
    const qemuWrite = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xaa 0 4k', uri]);
    // qemu opens an NBD export read-write only when the server does not flag it read-only.
    expect(qemuWrite.code).not.toBe(0);
    expect(qemuWrite.stderr).toMatch(/can't open device.*Permission denied/);
    expect(qemuWrite.stdout).not.toMatch(/wrote 4096/);
    const { c, flags } = await rawGo(app.ports.nbd, r.body.exportName as string);
    try {
      expect(flags & TFLAG.READ_ONLY).toBe(TFLAG.READ_ONLY);
      c.write(Buffer.concat([nbdRequest(CMD.WRITE, 9n, 0n, 4096), Buffer.alloc(4096, 0xaa)]));
      expect(await readSimpleReply(c)).toEqual({ errno: ERRNO.EPERM, cookie: 9n });
    } finally {
      c.destroy();
    }

    // Nothing changed: the same bytes, and no new version.
    const again = await run('nbdcopy', [uri, copy]);
    expect(again.code, again.stderr).toBe(0);
    expect((await readFile(copy)).equals(disk)).toBe(true);
    expect(await app.core.store.versions('win11')).toEqual([1]);
  });
});
