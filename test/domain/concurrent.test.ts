/**
 * Four PCs at once on one appliance: two capture and two deploy through the client API and their
 * task exports, with real nbdcopy, all transfers in flight together. Each deploy must get exactly its
 * image, each capture must commit exactly its disk, and no task may see another's bytes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
import { run } from '../nbd/helpers.js';
import type { TaskRecord } from '../../src/domain/database.js';

const CHUNK = 1024 * 1024;
let dir: string;
let app: RunningAppliance;
let base: string;

/** A disk of its own: random data, a zero run, text, and a marker that names it. */
function makeDisk(tag: string, chunks: number): Buffer {
  const d = Buffer.alloc(chunks * CHUNK + 512 * 3);
  randomBytes(4 * CHUNK).copy(d, 0);
  d.fill(`${tag} text `, 8 * CHUNK, 12 * CHUNK);
  randomBytes(2 * CHUNK).copy(d, (chunks - 2) * CHUNK);
  d.write(tag, d.length - 64);
  return d;
}

async function api(pathname: string, token: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${pathname}`, { method: body === undefined ? 'GET' : 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function tokenFor(mac: string): Promise<string> {
  // What our DHCP service records when the PC network-boots: the address it uses.
  app.core.hosts.bootAddresses.note(mac, '127.0.0.1');
  const res = await fetch(`${base}/boot/ipxe?mac=${mac}&platform=efi&arch=x86_64&chip=undionly`);
  const m = /netclone\.token=([A-Za-z0-9_-]+)/.exec(await res.text());
  if (!m) throw new Error(`no token for ${mac}`);
  return m[1];
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-concurrent-'));
  app = await startAppliance(loopbackConfig(dir), nullLogger());
  base = `http://127.0.0.1:${app.ports.http}`;
});

afterAll(async () => {
  await app?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('two captures and two deploys at once through the client API', () => {
  it('every PC gets (or gives) exactly its own bytes, and all four tasks end done', async () => {
    const images = { 'golden-a': makeDisk('golden-a', 20), 'golden-b': makeDisk('golden-b', 28) };
    for (const [name, disk] of Object.entries(images)) {
      const file = path.join(dir, `${name}.raw`);
      await writeFile(file, disk);
      await app.core.commands.importImage(TEST_OPERATOR, name, createReadStream(file), disk.length, 'test', () => undefined);
    }
    const pcs = [
      { mac: '52:54:00:00:aa:01', kind: 'deploy' as const, image: 'golden-a', disk: images['golden-a'] },
      { mac: '52:54:00:00:aa:02', kind: 'deploy' as const, image: 'golden-b', disk: images['golden-b'] },
      { mac: '52:54:00:00:aa:03', kind: 'capture' as const, image: 'pc-3', disk: makeDisk('pc-3', 24) },
      { mac: '52:54:00:00:aa:04', kind: 'capture' as const, image: 'pc-4', disk: makeDisk('pc-4', 32) },
    ];
    const tasks: TaskRecord[] = [];
    const tokens: string[] = [];
    for (const pc of pcs) {
      tasks.push((await runCommand(app.core.commands, TEST_OPERATOR, 'task.create', { kind: pc.kind, mac: pc.mac, image: pc.image }, () => undefined)) as TaskRecord);
      tokens.push(await tokenFor(pc.mac));
    }
    const uris = await Promise.all(
      pcs.map(async (pc, i) => {
        // Deploy targets are bigger than their image, as a new disk usually is.
        const size = pc.kind === 'deploy' ? pc.disk.length + 8 * CHUNK : pc.disk.length;
        const start = await api('/api/client/v1/start', tokens[i], { disk: { name: 'sda', size, logicalSectorSize: 512 } });
        expect(start.status, JSON.stringify(start.json)).toBe(200);
        return String(start.json.nbd);
      }),
    );
    // All four transfers in flight together.
    const results = await Promise.all(
      pcs.map(async (pc, i) => {
        const file = path.join(dir, `${pc.mac.replace(/:/g, '')}.raw`);
        if (pc.kind === 'capture') await writeFile(file, pc.disk);
        const r = await run('nbdcopy', ['--connections=2', '--flush', ...(pc.kind === 'deploy' ? [uris[i], file] : [file, uris[i]])]);
        return { r, file };
      }),
    );
    results.forEach(({ r }, i) => expect(r.code, `${pcs[i].mac}: ${r.stderr}`).toBe(0));
    for (let i = 0; i < pcs.length; i++) {
      const pc = pcs[i];
      let digest: string | null = null;
      if (pc.kind === 'deploy') {
        const got = await readFile(results[i].file);
        expect(got.subarray(0, pc.disk.length).equals(pc.disk), `${pc.mac} got another image's bytes`).toBe(true);
        digest = diskDigest(got, pc.disk.length, CHUNK);
        expect((await api('/api/client/v1/progress', tokens[i], { phase: 'verifying' })).status).toBe(200);
      }
      const done = await api('/api/client/v1/result', tokens[i], { ok: true, message: 'ok', digest });
      expect(done.json, `${pc.mac}: ${JSON.stringify(done.json)}`).toMatchObject({ state: 'done' });
      expect(tasks[i].state).toBe('done');
    }
    for (const pc of pcs.filter((p) => p.kind === 'capture')) {
      const back = path.join(dir, `${pc.image}-back.raw`);
      const url = (await app.core.nbd!.createUrl({ image: pc.image, write: false })).uri;
      const r = await run('nbdcopy', [url, back]);
      expect(r.code, r.stderr).toBe(0);
      expect((await readFile(back)).equals(pc.disk), `${pc.image} holds other bytes than its PC's disk`).toBe(true);
      expect((await app.core.store.show(pc.image)).latestVersion).toBe(1);
    }
    // The deployed images were not touched by the captures.
    for (const name of ['golden-a', 'golden-b']) expect((await app.core.store.show(name)).latestVersion).toBe(1);
  });
});
