/**
 * The server side of a capture and a deploy, end to end over loopback: the boot script
 * hands out a task token, a client (played by the test with real nbdcopy) uses the
 * client API and the task's NBD export, and the task ends done with the right bytes.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { loopbackConfig } from '../lib/appliance-config.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { runCommand } from '../../src/domain/command-table.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { diskDigest } from '../lib/disk-digest.js';
import { nullLogger } from '../../src/lib/log.js';
import { run, RawClient, rawGreet, optionBytes, goData, readOptionReply } from '../nbd/helpers.js';
import { OPT } from '../../src/nbd/protocol.js';
import type { TaskRecord } from '../../src/domain/database.js';

const CHUNK = 1024 * 1024;
let dir: string;
let app: RunningAppliance;
let base: string;
let source: Buffer;

/** 24 MiB + a partial chunk: data, zero runs and compressible text. */
function makeDisk(seed: number): Buffer {
  const size = 24 * CHUNK + 4096;
  const d = Buffer.alloc(size);
  randomBytes(3 * CHUNK).copy(d, 0);
  d.fill('netclone test pattern ', 8 * CHUNK, 12 * CHUNK);
  d.writeUInt32LE(seed, 20 * CHUNK + 17);
  randomBytes(4096).copy(d, 24 * CHUNK);
  return d;
}

async function bootScript(mac: string, platform = 'efi'): Promise<string> {
  // The PC's DHCP exchange, which ties its MAC to the address the script is asked for from (DHCP is off here).
  app.core.hosts.bootAddresses.note(mac, '127.0.0.1');
  const res = await fetch(`${base}/boot/ipxe?mac=${mac}&platform=${platform}&arch=x86_64&chip=undionly`);
  expect(res.status).toBe(200);
  return res.text();
}

function tokenOf(script: string): string {
  const m = /netclone\.token=([A-Za-z0-9_-]+)/.exec(script);
  if (!m) throw new Error(`no token in script:\n${script}`);
  return m[1];
}

async function api(pathname: string, token: string | null, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${pathname}`, { method: body === undefined ? 'GET' : 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** A deploy of golden queued for `mac`, and the one-time token the PC's boot script carries. */
async function queuedDeploy(mac: string): Promise<{ task: TaskRecord; token: string }> {
  const task = (await runCommand(app.core.commands, TEST_OPERATOR, 'task.create', { kind: 'deploy', mac, image: 'golden' }, () => undefined)) as TaskRecord;
  return { task, token: tokenOf(await bootScript(mac)) };
}

/** A deploy of golden carried out by nbdcopy and reported verified: the task is done. */
async function finishedDeploy(mac: string): Promise<{ task: TaskRecord; token: string }> {
  const { task, token } = await queuedDeploy(mac);
  const start = await api('/api/client/v1/start', token, { disk: { name: 'vda', size: 64 * CHUNK, logicalSectorSize: 512 } });
  expect(start.status).toBe(200);
  const out = path.join(dir, `deployed-${mac.replace(/:/g, '')}.raw`);
  const r = await run('nbdcopy', ['--flush', String(start.json.nbd), out]);
  expect(r.code, r.stderr).toBe(0);
  const done = await api('/api/client/v1/result', token, { ok: true, message: 'ok', digest: diskDigest(await readFile(out), source.length, CHUNK) });
  expect(done.json).toMatchObject({ state: 'done' });
  return { task, token };
}

/** The PC loses power: nothing more arrives. Two minutes pass (the default client-timeout) and the liveness check runs. */
async function twoMinutesOfSilence(): Promise<TaskRecord[]> {
  const clock = vi.spyOn(Date, 'now').mockReturnValue(Date.now() + 121_000);
  try {
    return await app.core.tasks.checkLiveness();
  } finally {
    clock.mockRestore();
  }
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-flow-'));
  app = await startAppliance(loopbackConfig(dir), nullLogger());
  base = `http://127.0.0.1:${app.ports.http}`;
  source = makeDisk(1);
  const file = path.join(dir, 'golden.raw');
  await writeFile(file, source);
  await app.core.commands.importImage(TEST_OPERATOR, 'golden', createReadStream(file), source.length, 'test', () => undefined);
});

afterAll(async () => {
  await app?.stop();
  await rm(dir, { recursive: true, force: true });
});

// Each test makes its own tasks on its own PCs; one left waiting must not be failed by another test's liveness check.
afterEach(async () => {
  for (const t of app.core.tasks.list({ active: true })) await app.core.tasks.cancel(t.id);
});

describe('deploy through the client API and a task export', () => {
  it('queues a deploy and hands the PC the client with a one-time token', async () => {
    const mac = '52:54:00:00:d0:01';
    const task = (await runCommand(app.core.commands, TEST_OPERATOR, 'task.create', { kind: 'deploy', mac, image: 'golden' }, () => undefined)) as TaskRecord;
    const script = await bootScript(mac.replace(/:/g, '-'));
    expect(script).toContain('/boot/client/vmlinuz');
    expect(tokenOf(script)).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(task.state).toBe('booting');
  });

  it('refuses calls without the token, with a wrong one, and for another MAC', async () => {
    const mac = '52:54:00:00:d0:06';
    const { token } = await queuedDeploy(mac);
    expect((await api(`/api/client/v1/task?mac=${mac}`, null)).status).toBe(401);
    expect((await api(`/api/client/v1/task?mac=${mac}`, 'A'.repeat(32))).status).toBe(403);
    expect((await api('/api/client/v1/task?mac=52:54:00:00:d0:99', token)).status).toBe(403);
    const res = await fetch(`${base}/api/client/v1/task?mac=${mac}`, { headers: { cookie: 'netclone_session=whatever' } });
    expect(res.status).toBe(401);
  });

  it('gives the task with the image facts, then an NBD URL for the chosen disk', async () => {
    const mac = '52:54:00:00:d0:07';
    const { token } = await queuedDeploy(mac);
    const t = await api(`/api/client/v1/task?mac=${mac}`, token);
    expect(t.status).toBe(200);
    expect(t.json).toMatchObject({ kind: 'deploy', image: 'golden', imageInfo: { size: source.length, sectorSize: 512, chunkSize: CHUNK, digest: diskDigest(source, source.length, CHUNK) } });
    const hw = await api('/api/client/v1/hardware', token, {
      dmi: { vendor: 'QEMU', model: 'Standard PC', serial: 'S1', uuid: 'u' },
      disks: [{ name: 'vda', size: 64 * CHUNK, model: 'virt', serial: 'D1', logicalSectorSize: 512, physicalSectorSize: 512, rotational: false, removable: false, transport: 'virtio' }],
      nics: [{ name: 'eth0', mac, driver: 'virtio_net', speed: '1000' }],
    });
    expect(hw.status).toBe(200);
    expect(app.core.hosts.get(mac)?.hardware?.disks[0].serial).toBe('D1');
    expect((await api('/api/client/v1/hardware', token, { dmi: {}, disks: 'x' })).status).toBe(400);
  });

  it('serves the image to nbdcopy, counts progress from the stream, and refuses other addresses', async () => {
    const { task, token } = await queuedDeploy('52:54:00:00:d0:08');
    const start = await api('/api/client/v1/start', token, { disk: { name: 'vda', size: 64 * CHUNK, logicalSectorSize: 512, serial: 'D1' } });
    expect(start.status).toBe(200);
    const uri = String(start.json.nbd);
    expect(uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/d-[A-Za-z0-9_-]+$/);
    expect(task.state).toBe('running');

    const intruder = await RawClient.connect(app.ports.nbd, '127.0.0.2');
    await rawGreet(intruder);
    intruder.write(optionBytes(OPT.GO, goData(uri.split('/').pop() as string)));
    const refusal = await readOptionReply(intruder);
    expect(refusal.type & 0x80000000).toBeTruthy();
    intruder.destroy();

    const out = path.join(dir, 'deployed.raw');
    const r = await run('nbdcopy', ['--flush', uri, out]);
    expect(r.code, r.stderr).toBe(0);
    const disk = await readFile(out);
    expect(disk.equals(source)).toBe(true);
    expect(task.progress.bytes).toBeGreaterThan(0);
    expect(task.progress.bytes).toBeLessThanOrEqual(task.progress.total);
    // Zero runs are holes: far fewer bytes crossed than the disk holds.
    expect(task.progress.bytes).toBeLessThan(source.length - 8 * CHUNK);

    expect((await api('/api/client/v1/progress', token, { phase: 'verifying' })).status).toBe(200);
    expect(task.state).toBe('verifying');
    const done = await api('/api/client/v1/result', token, { ok: true, message: 'ok', digest: diskDigest(disk, source.length, CHUNK) });
    expect(done.json).toMatchObject({ state: 'done' });
    expect(task.result?.bytesOnWire).toBe(task.progress.bytes);
  });

  it('sends the PC to its local disk afterwards (the menu times out to it, no task token), and the spent token is dead', async () => {
    const mac = '52:54:00:00:d0:09';
    const { token } = await finishedDeploy(mac);
    const script = await bootScript(mac);
    expect(script).toMatch(/^choose --timeout \d+ --default local selected/m);
    expect(script).toMatch(/^:local\n(echo [^\n]*\n)?exit$/m);
    expect(script).not.toContain('netclone.token=');
    expect(script).not.toContain('did not finish');
    expect((await api(`/api/client/v1/task?mac=${mac}`, token)).status).toBe(403);
  });

  it('fails a deploy whose read-back digest differs', async () => {
    const mac2 = '52:54:00:00:d0:02';
    const t = (await runCommand(app.core.commands, TEST_OPERATOR, 'task.create', { kind: 'deploy', mac: mac2, image: 'golden' }, () => undefined)) as TaskRecord;
    const tok = tokenOf(await bootScript(mac2));
    await api('/api/client/v1/start', tok, { disk: { name: 'sda', size: source.length, logicalSectorSize: 512 } });
    const res = await api('/api/client/v1/result', tok, { ok: true, digest: '0'.repeat(64) });
    expect(res.json).toMatchObject({ state: 'failed' });
    expect(t.reason).toMatch(/read-back check failed/);
  });

  it('refuses a disk smaller than the image or with other sector sizes, and the task says why', async () => {
    const mac3 = '52:54:00:00:d0:03';
    const t = (await runCommand(app.core.commands, TEST_OPERATOR, 'task.create', { kind: 'deploy', mac: mac3, image: 'golden' }, () => undefined)) as TaskRecord;
    const tok = tokenOf(await bootScript(mac3));
    const res = await api('/api/client/v1/start', tok, { disk: { name: 'sda', size: 4 * CHUNK, logicalSectorSize: 512 } });
    expect(res.status).toBe(409);
    expect(String(res.json.error)).toMatch(/smaller than image golden/);
    expect(t.state).toBe('failed');
    const mac4 = '52:54:00:00:d0:04';
    const t4 = (await runCommand(app.core.commands, TEST_OPERATOR, 'task.create', { kind: 'deploy', mac: mac4, image: 'golden' }, () => undefined)) as TaskRecord;
    const tok4 = tokenOf(await bootScript(mac4));
    expect((await api('/api/client/v1/start', tok4, { disk: { name: 'sda', size: 64 * CHUNK, logicalSectorSize: 4096 } })).status).toBe(409);
    expect(t4.reason).toMatch(/4096-byte sectors/);
  });
});

describe('capture through the client API', () => {
  it('commits a new image version from nbdcopy --flush and reports done', async () => {
    const mac = '52:54:00:00:c0:01';
    const disk = makeDisk(2);
    const file = path.join(dir, 'pc.raw');
    await writeFile(file, disk);
    const t = (await runCommand(app.core.commands, TEST_OPERATOR, 'task.create', { kind: 'capture', mac, image: 'pc1' }, () => undefined)) as TaskRecord;
    const tok = tokenOf(await bootScript(mac));
    const task = await api(`/api/client/v1/task?mac=${mac}`, tok);
    expect(task.json).toMatchObject({ kind: 'capture', imageInfo: null });
    const start = await api('/api/client/v1/start', tok, { disk: { name: 'sda', size: disk.length, logicalSectorSize: 512 } });
    const uri = String(start.json.nbd);
    const r = await run('nbdcopy', ['--flush', file, uri]);
    expect(r.code, r.stderr).toBe(0);
    const res = await api('/api/client/v1/result', tok, { ok: true, message: 'captured' });
    expect(res.json).toMatchObject({ state: 'done' });
    expect(t.result?.version).toBe(1);
    // Progress covers the whole disk; only data crossed the wire (zero runs went as WRITE_ZEROES).
    expect(t.progress.bytes).toBe(disk.length);
    expect(t.result?.bytesOnWire).toBeGreaterThan(0);
    expect(t.result?.bytesOnWire).toBeLessThan(disk.length - 8 * CHUNK);
    const back = path.join(dir, 'pc-back.raw');
    const r2 = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', (await app.core.nbd!.createUrl({ image: 'pc1', write: false })).uri, back]);
    expect(r2.code, r2.stderr).toBe(0);
    expect((await readFile(back)).equals(disk)).toBe(true);
  });

  it('does not commit when the client reports failure, and the image keeps its old version', async () => {
    const mac = '52:54:00:00:c0:02';
    const t = (await runCommand(app.core.commands, TEST_OPERATOR, 'task.create', { kind: 'capture', mac, image: 'golden' }, () => undefined)) as TaskRecord;
    const tok = tokenOf(await bootScript(mac));
    const start = await api('/api/client/v1/start', tok, { disk: { name: 'sda', size: 8 * CHUNK, logicalSectorSize: 512 } });
    expect(start.status).toBe(200);
    const res = await api('/api/client/v1/result', tok, { ok: false, message: 'disk read error on sda' });
    expect(res.json).toMatchObject({ state: 'failed' });
    expect(t.reason).toBe('disk read error on sda');
    const info = await app.core.store.show('golden');
    expect(info.latestVersion).toBe(1);
    expect(info.size).toBe(source.length);
  });
});

describe('a PC that stops responding mid-task', () => {
  it('fails the task after client-timeout of silence, revokes its NBD export and frees the PC', async () => {
    const mac = '52:54:00:00:d0:05';
    const { task, token } = await queuedDeploy(mac);
    expect((await api(`/api/client/v1/task?mac=${mac}`, token)).status).toBe(200);
    const start = await api('/api/client/v1/start', token, { disk: { name: 'sda', size: 64 * CHUNK, logicalSectorSize: 512 } });
    const uri = String(start.json.nbd);
    expect((await run('nbdinfo', ['--size', uri])).code).toBe(0);
    expect(task.state).toBe('running');

    expect(await twoMinutesOfSilence()).toEqual([task]);
    expect(task.state).toBe('failed');
    expect(task.reason).toMatch(/^the PC stopped responding/);
    const info = await run('nbdinfo', ['--size', uri]);
    expect(info.code).not.toBe(0);
    expect((await api(`/api/client/v1/task?mac=${mac}`, token)).status).toBe(403);
    const next = (await runCommand(app.core.commands, TEST_OPERATOR, 'task.create', { kind: 'deploy', mac, image: 'golden' }, () => undefined)) as TaskRecord;
    expect(next.state).toBe('queued');
    await app.core.tasks.cancel(next.id);
  });

  it('never sends the PC to its half-written disk: its boot script says what happened and offers the deploy again', async () => {
    const mac = '52:54:00:00:d0:0a';
    const { task, token } = await queuedDeploy(mac);
    expect((await api('/api/client/v1/start', token, { disk: { name: 'sda', size: 64 * CHUNK, logicalSectorSize: 512 } })).status).toBe(200);
    expect(await twoMinutesOfSilence()).toEqual([task]);
    const script = await bootScript(mac);
    expect(script).toContain('The deploy of image golden onto this PC did not finish (failed)');
    expect(script).toContain('the PC stopped responding');
    expect(script).toMatch(/item retry +Deploy golden again/);
    expect(script).toContain('choose --default local selected || goto local');
    expect(script).not.toContain('--timeout');
    // The disk is reachable only through its own menu item.
    const lines = script.split('\n');
    expect(lines.slice(0, lines.indexOf(':disk')).some((l) => /^(exit|sanboot)\b/.test(l))).toBe(false);
  });
});
