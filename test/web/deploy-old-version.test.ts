/**
 * A deploy of an older version (issue 13) on a real appliance over loopback: after version 2 of an
 * image exists, a deploy of version 1 gets version 1's digest and bytes, over the chunk transport (the
 * test plays the imaging agent) and over NBD (real nbdcopy), even when a newer version is committed
 * while it runs. A capture keeps the PC model its client reported, and a deploy of that version onto
 * another model is refused over the API until it is confirmed.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { loopbackConfig } from '../lib/appliance-config.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { runCommand } from '../../src/domain/command-table.js';
import type { TaskRecord } from '../../src/domain/database.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { diskDigest } from '../lib/disk-digest.js';
import { nullLogger } from '../../src/lib/log.js';
import { ChunkCodecContext } from '../../src/imaging/chunk-format.js';
import { readVersionOrigin } from '../../src/imaging/version-origin.js';
import { run } from '../nbd/helpers.js';

const CHUNK = 1024 * 1024;
const codec = new ChunkCodecContext();
let dir: string;
let app: RunningAppliance;
let base: string;
const versions: Buffer[] = [];

function makeDisk(): Buffer {
  const d = Buffer.alloc(4 * CHUNK + 4096);
  randomBytes(2 * CHUNK).copy(d, 0);
  d.fill('old version test ', 3 * CHUNK, 4 * CHUNK);
  return d;
}

async function importVersion(image: string, disk: Buffer): Promise<void> {
  const file = path.join(dir, `${image}-${Date.now()}.raw`);
  await writeFile(file, disk);
  await app.core.commands.importImage(TEST_OPERATOR, image, createReadStream(file), disk.length, 'test', () => undefined);
}

async function bootToken(mac: string): Promise<string> {
  app.core.hosts.bootAddresses.note(mac, '127.0.0.1');
  const res = await fetch(`${base}/boot/ipxe?mac=${mac}&platform=efi&arch=x86_64&chip=undionly`);
  expect(res.status).toBe(200);
  const m = /netclone\.token=([A-Za-z0-9_-]+)/.exec(await res.text());
  if (!m) throw new Error('no token in the boot script');
  return m[1];
}

async function call(method: string, pathname: string, token: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${pathname}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

async function download(pathname: string, token: string): Promise<Buffer> {
  const res = await fetch(`${base}${pathname}`, { headers: { authorization: `Bearer ${token}` } });
  expect(res.status).toBe(200);
  return Buffer.from(await res.arrayBuffer());
}

async function queue(args: Record<string, unknown>): Promise<TaskRecord> {
  return (await runCommand(app.core.commands, TEST_OPERATOR, 'task.create', args, () => undefined)) as TaskRecord;
}

const hardware = (vendor: string, model: string) => ({
  dmi: { vendor, model, serial: 'S', uuid: 'U' },
  disks: [{ name: 'sda', size: 8 * CHUNK, logicalSectorSize: 512, serial: 'D1' }],
  nics: [],
});

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-old-version-'));
  app = await startAppliance(loopbackConfig(dir), nullLogger());
  base = `http://127.0.0.1:${app.ports.http}`;
  versions.push(makeDisk(), makeDisk());
  await importVersion('office', versions[0]);
  await importVersion('office', versions[1]);
  expect(await app.core.store.versions('office')).toEqual([1, 2]);
});

afterAll(async () => {
  await app?.stop();
  await rm(dir, { recursive: true, force: true });
});

afterEach(async () => {
  for (const t of app.core.tasks.list({ active: true })) await app.core.tasks.cancel(t.id);
});

describe('a deploy of version 1 after version 2 exists', () => {
  it('over chunks: the task, the start answer, the list and the chunk files are version 1\'s, and its read-back is checked against version 1', async () => {
    const mac = '52:54:00:00:e1:01';
    const task = await queue({ kind: 'deploy', mac, image: 'office', version: '1', transport: 'chunks' });
    const token = await bootToken(mac);
    const want = diskDigest(versions[0], versions[0].length, CHUNK);
    expect(want).not.toBe(diskDigest(versions[1], versions[1].length, CHUNK));
    const t = await call('GET', `/api/client/v1/task?mac=${mac}`, token);
    expect((t.json.imageInfo as { digest: string }).digest).toBe(want);
    const start = await call('POST', '/api/client/v1/start', token, { disk: { name: 'sda', size: 8 * CHUNK, logicalSectorSize: 512 } });
    expect(start.status, JSON.stringify(start.json)).toBe(200);
    expect(start.json).toMatchObject({ kind: 'deploy', version: 1, digest: want });
    const list = await download('/api/client/v1/chunks/list', token);
    const disk = Buffer.alloc(versions[0].length);
    for (let i = 0; i * 32 < list.length; i++) {
      const entry = list.subarray(i * 32, i * 32 + 32);
      if (entry.every((b) => b === 0)) continue;
      const hash = entry.toString('hex');
      codec.decodeChecked(await download(`/api/client/v1/chunks/${hash}`, token), hash, 'full').copy(disk, i * CHUNK);
    }
    expect(disk.equals(versions[0])).toBe(true);
    const done = await call('POST', '/api/client/v1/result', token, { ok: true, digest: diskDigest(disk, disk.length, CHUNK) });
    expect(done.json, JSON.stringify(done.json)).toMatchObject({ state: 'done' });
    expect(task.result?.version).toBe(1);
  });

  it('over NBD: nbdcopy reads version 1\'s bytes, also when a newer version is committed during the deploy', async () => {
    const mac = '52:54:00:00:e1:02';
    const task = await queue({ kind: 'deploy', mac, image: 'office', version: '1', transport: 'nbd' });
    const token = await bootToken(mac);
    const want = diskDigest(versions[0], versions[0].length, CHUNK);
    const t = await call('GET', `/api/client/v1/task?mac=${mac}`, token);
    expect(t.json.imageInfo).toMatchObject({ size: versions[0].length, digest: want });
    const start = await call('POST', '/api/client/v1/start', token, { disk: { name: 'vda', size: 8 * CHUNK, logicalSectorSize: 512 } });
    expect(start.status, JSON.stringify(start.json)).toBe(200);
    // Version 3 arrives before the PC connects: the export still serves version 1.
    await importVersion('office', makeDisk());
    const out = path.join(dir, 'nbd-deployed.raw');
    const r = await run('nbdcopy', ['--flush', String(start.json.nbd), out]);
    expect(r.code, r.stderr).toBe(0);
    const got = await readFile(out);
    expect(got.equals(versions[0])).toBe(true);
    const done = await call('POST', '/api/client/v1/result', token, { ok: true, digest: diskDigest(got, got.length, CHUNK) });
    expect(done.json, JSON.stringify(done.json)).toMatchObject({ state: 'done' });
    expect(task.result?.version).toBe(1);
  });

  it('a task without a version deploys the newest at start', async () => {
    const mac = '52:54:00:00:e1:03';
    await queue({ kind: 'deploy', mac, image: 'office', transport: 'chunks' });
    const token = await bootToken(mac);
    const newest = (await app.core.store.versions('office')).at(-1);
    const start = await call('POST', '/api/client/v1/start', token, { disk: { name: 'sda', size: 8 * CHUNK, logicalSectorSize: 512 } });
    expect(start.json).toMatchObject({ kind: 'deploy', version: newest });
  });
});

describe('the PC model of a capture', () => {
  it('is kept with the version, and a deploy of it onto another model needs "force" in the API', async () => {
    const pc = '52:54:00:00:e2:01';
    await queue({ kind: 'capture', mac: pc, image: 'lenovo-img', transport: 'nbd' });
    const token = await bootToken(pc);
    expect((await call('POST', '/api/client/v1/hardware', token, hardware('LENOVO', '20XW'))).status).toBe(200);
    const start = await call('POST', '/api/client/v1/start', token, { disk: { name: 'sda', size: 2 * CHUNK, logicalSectorSize: 512 } });
    expect(start.status, JSON.stringify(start.json)).toBe(200);
    const src = path.join(dir, 'capture-src.raw');
    await writeFile(src, Buffer.alloc(2 * CHUNK, 3));
    const r = await run('nbdcopy', ['--flush', src, String(start.json.nbd)]);
    expect(r.code, r.stderr).toBe(0);
    const done = await call('POST', '/api/client/v1/result', token, { ok: true, digest: null });
    expect(done.json, JSON.stringify(done.json)).toMatchObject({ state: 'done' });
    expect(await readVersionOrigin(app.core.store, 'lenovo-img', 1)).toEqual({ vendor: 'LENOVO', model: '20XW' });

    const other = '52:54:00:00:e2:02';
    await queue({ kind: 'capture', mac: other, image: 'dell-img', transport: 'chunks' });
    const otherToken = await bootToken(other);
    expect((await call('POST', '/api/client/v1/hardware', otherToken, hardware('Dell Inc.', 'OptiPlex 7090'))).status).toBe(200);
    for (const t of app.core.tasks.list({ active: true })) await app.core.tasks.cancel(t.id);

    const admin = { authorization: `Bearer ${(await app.core.commands.createApiToken(TEST_OPERATOR, 'mismatch')).token}`, 'content-type': 'application/json' };
    const create = (body: Record<string, unknown>) => fetch(`${base}/api/v1/tasks`, { method: 'POST', headers: admin, body: JSON.stringify({ kind: 'deploy', mac: other, image: 'lenovo-img', ...body }) });
    const refused = await create({ version: 1 });
    expect(refused.status).toBe(409);
    expect(((await refused.json()) as { message: string }).message).toMatch(/captured from a LENOVO 20XW, but PC 52:54:00:00:e2:02 is a Dell Inc\. OptiPlex 7090.*"force": true/);
    expect((await create({ version: 9 })).status).toBe(404);
    const forced = await create({ version: 1, force: true });
    expect(forced.status).toBe(201);
    expect(((await forced.json()) as { task: TaskRecord }).task.version).toBe(1);
  });
});
