/**
 * The imaging agent against a real appliance on loopback, as the thin client runs it: the boot script
 * hands out the task token, the agent (a child process) does start, the chunk transfer and the deploy
 * read-back, and the test then posts the result the way the thin client does. Disks are files.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, unlink, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { loopbackConfig } from '../lib/appliance-config.js';
import { resolveConfig } from '../../src/domain/config.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { runCommand } from '../../src/domain/command-table.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { nullLogger } from '../../src/lib/log.js';
import type { TaskRecord } from '../../src/domain/database.js';
import { maxChunkFileSize } from '../../src/imaging/chunk-format.js';
import { noise } from '../lib/prng.js';
import type { RunResult } from '../lib/run.js';
import { agentLine, agentReason, chunkList, distinctChunks, makeDisk, runAgentCli, scatterChanges, startAgentCli } from './disks.js';
import { stopProcess } from '../lib/run.js';
import { postAgentResult, queueChunkTask } from './appliance-tasks.js';
import { waitFor } from '../lib/wait.js';

const CHUNK = 1024 * 1024;
const CHUNKS = 24;

let dir: string;
let app: RunningAppliance;
let base: string;
let macs = 0;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-agent-app-'));
  app = await startAppliance(loopbackConfig(dir), nullLogger());
  base = `http://127.0.0.1:${app.ports.http}`;
});

afterAll(async () => {
  await app?.stop();
  await rm(dir, { recursive: true, force: true });
});

afterEach(async () => {
  for (const t of app.core.tasks.list({ active: true })) await app.core.tasks.cancel(t.id);
});

function nextMac(): string {
  macs++;
  return `52:54:00:00:a1:${macs.toString(16).padStart(2, '0')}`;
}

/** A chunk-transport task for a fresh PC, and the token its boot script carries. */
async function queue(kind: 'capture' | 'deploy', image: string): Promise<{ task: TaskRecord; token: string }> {
  return queueChunkTask(app, kind, nextMac(), image);
}

function agent(mode: 'capture' | 'deploy', token: string, disk: string): Promise<RunResult> {
  return runAgentCli([mode, '--server', base, '--token', token, '--disk', disk, '--disk-name', 'sda', '--serial', 'D1']);
}

/** What the thin client does after the agent: post the task's result from the agent's outcome. */
async function postResult(token: string, r: RunResult): Promise<{ state: string; reason: string | null }> {
  return postAgentResult(app, token, r);
}

/** Captures `disk` into `image` through the agent; the task ends done. */
async function capture(image: string, disk: Buffer, name: string): Promise<{ task: TaskRecord; r: RunResult }> {
  const file = path.join(dir, name);
  await writeFile(file, disk);
  const { task, token } = await queue('capture', image);
  const r = await agent('capture', token, file);
  expect(r.code, r.stderr).toBe(0);
  expect(await postResult(token, r)).toMatchObject({ state: 'done' });
  return { task, r };
}

/** The newest version's chunk list as the store holds it, in the wire form. */
async function storedList(image: string): Promise<Buffer> {
  const reader = await app.core.store.openVersion(image);
  try {
    const out = Buffer.alloc(reader.chunkCount * 32);
    for (let i = 0; i < reader.chunkCount; i++) {
      const h = reader.chunkHash(i);
      if (h !== null) out.write(h, i * 32, 32, 'hex');
    }
    return out;
  } finally {
    reader.close();
  }
}

async function findChunkFile(hash: string): Promise<string> {
  const found = (await readdir(dir, { recursive: true })).find((p) => path.basename(p) === hash);
  if (!found) throw new Error(`chunk file ${hash} not found under ${dir}`);
  return path.join(dir, found);
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('capture with the agent', () => {
  it('commits the disk as a new version, sending each distinct chunk once', async () => {
    const disk = makeDisk(21, CHUNK, CHUNKS);
    const { task, r } = await capture('office1', disk, 'office1-v1.raw');
    expect(task.result?.version).toBe(1);
    expect((await storedList('office1')).equals(chunkList(disk, CHUNK))).toBe(true);
    const line = agentLine(r);
    expect(line).toMatchObject({ ok: true, digest: null, examined: disk.length, sentChunks: distinctChunks(disk, CHUNK).size });
    // The agent's last progress report reached the task: its counters and the line the task page shows.
    expect(task.progress.chunks).toEqual({ reused: line.reusedChunks, sent: line.sentChunks, zero: CHUNKS + 1 - line.reusedChunks - line.sentChunks, total: CHUNKS + 1 });
    expect(task.progress.bytes).toBe(disk.length);
    expect(task.progress.summary).toMatch(/^examined .*, sent .*, [\d.]+ % reused/);
    // Compressed chunk files: less crossed than the non-zero data (text chunks compress).
    expect(task.result?.bytesOnWire).toBeGreaterThan(0);
    expect(task.result?.bytesOnWire).toBeLessThan(distinctChunks(disk, CHUNK).size * CHUNK);
  });

  it('re-capture after scattered changes sends only the changed chunks', async () => {
    const v1 = makeDisk(22, CHUNK, CHUNKS);
    await capture('office2', v1, 'office2-v1.raw');
    const v2 = Buffer.from(v1);
    const changed = scatterChanges(v2, 5, CHUNK, 3);
    const { task, r } = await capture('office2', v2, 'office2-v2.raw');
    expect(task.result?.version).toBe(2);
    expect((await storedList('office2')).equals(chunkList(v2, CHUNK))).toBe(true);
    const line = agentLine(r);
    expect(line.sentChunks).toBe(changed.length);
    // The wire carried those chunk files, the known() calls and the list: not the disk.
    const listBytes = Math.ceil(v2.length / CHUNK) * 32;
    expect(task.result?.bytesOnWire).toBeLessThanOrEqual(changed.length * maxChunkFileSize(CHUNK) + listBytes + 64 * 1024);
  });

  it('uploads again a chunk the server counted as known but lacks at commit, and commits', async () => {
    const v1 = makeDisk(23, CHUNK, CHUNKS);
    await capture('office3', v1, 'office3-v1.raw');
    // The previous version names this chunk, so known() counts it; its file is gone (a damaged store), so the commit asks for it.
    const lost = createHash('sha256').update(v1.subarray(0, CHUNK)).digest('hex');
    await unlink(await findChunkFile(lost));
    const { task, r } = await capture('office3', v1, 'office3-v2.raw');
    expect(task.result?.version).toBe(2);
    expect(agentLine(r).sentChunks).toBe(1);
    expect((await storedList('office3')).equals(chunkList(v1, CHUNK))).toBe(true);
    await findChunkFile(lost);
  });

  it('two agents capturing different images that share chunks, at the same time', async () => {
    const a = makeDisk(24, CHUNK, CHUNKS);
    const b = Buffer.from(a);
    scatterChanges(b, 9, CHUNK, 6);
    const fa = path.join(dir, 'pair-a.raw');
    const fb = path.join(dir, 'pair-b.raw');
    await writeFile(fa, a);
    await writeFile(fb, b);
    const ta = await queue('capture', 'pair-a');
    const tb = await queue('capture', 'pair-b');
    const [ra, rb] = await Promise.all([agent('capture', ta.token, fa), agent('capture', tb.token, fb)]);
    expect(ra.code, ra.stderr).toBe(0);
    expect(rb.code, rb.stderr).toBe(0);
    expect(await postResult(ta.token, ra)).toMatchObject({ state: 'done' });
    expect(await postResult(tb.token, rb)).toMatchObject({ state: 'done' });
    expect((await storedList('pair-a')).equals(chunkList(a, CHUNK))).toBe(true);
    expect((await storedList('pair-b')).equals(chunkList(b, CHUNK))).toBe(true);
    const verified = await app.core.store.verify('pair-b');
    expect(verified).toMatchObject({ ok: true });
  });

  it('refuses a wrong token: the agent says so and stores nothing', async () => {
    const file = path.join(dir, 'wrong.raw');
    await writeFile(file, makeDisk(25, CHUNK, 4));
    const { task } = await queue('capture', 'wrongtoken');
    const r = await agent('capture', 'X'.repeat(32), file);
    expect(r.code).toBe(1);
    expect(agentReason(r)).toMatch(/start: the server answered 403: this task token is not valid/);
    expect(task.state).toBe('booting');
    expect(r.stdout).toBe('');
  });
});

describe('a transfer cut midway', () => {
  it('a capture whose agent was killed resumes in a retried task without sending again what had arrived', async () => {
    // All data, so every chunk is an upload and the agent is still sending when it is killed.
    const disk = noise(51, 48 * CHUNK + 999);
    const file = path.join(dir, 'killed.raw');
    await writeFile(file, disk);
    const first = await queue('capture', 'killed');
    const running = startAgentCli(['capture', '--server', base, '--token', first.token, '--disk', file, '--disk-name', 'sda', '--jobs', '1']);
    const journal = await waitFor('the server to journal some uploaded chunks', async () => {
      const found = (await readdir(dir, { recursive: true })).find((p) => path.basename(p) === 'killed.journal');
      if (!found) return false;
      const lines = (await readFile(path.join(dir, found), 'utf8')).split('\n').filter((l) => l.length > 0).length;
      return lines >= 3 ? lines : false;
    }, { context: () => running.stderr() });
    expect(running.exited(), 'the agent finished before it could be killed').toBe(false);
    await stopProcess(running.proc, 'SIGKILL');
    await app.core.tasks.cancel(first.task.id);

    const { task, token } = await queue('capture', 'killed');
    const r = await agent('capture', token, file);
    expect(r.code, r.stderr).toBe(0);
    expect(await postResult(token, r)).toMatchObject({ state: 'done' });
    const line = agentLine(r);
    expect(line.sentChunks).toBeLessThanOrEqual(distinctChunks(disk, CHUNK).size - journal);
    expect(line.sentChunks + line.reusedChunks).toBe(distinctChunks(disk, CHUNK).size);
    expect(task.result?.version).toBe(1);
    expect((await storedList('killed')).equals(chunkList(disk, CHUNK))).toBe(true);
  });
});

describe('a server restarted under a capture', () => {
  it('the agent stops with the server\'s reason, and the retried task sends only what had not arrived', async () => {
    // An appliance of its own, on a fixed port so the agent's retries reach the restarted one.
    const own = await mkdtemp(path.join(tmpdir(), 'nc-agent-restart-'));
    let server = await startAppliance(loopbackConfig(own), nullLogger());
    const port = server.ports.http;
    const config = (): ReturnType<typeof loopbackConfig> => resolveConfig({ data: own, listen: '127.0.0.1', 'http-port': String(port), 'nbd-port': '0', 'tftp-port': '0', dhcp: 'off', 'boot-dir': path.join(own, 'boot') });
    const url = `http://127.0.0.1:${port}`;
    const token = async (): Promise<string> => {
      const mac = '52:54:00:00:a2:01';
      await runCommand(server.core.commands, TEST_OPERATOR, 'task.create', { kind: 'capture', mac, image: 'restarted', transport: 'chunks' }, () => undefined);
      server.core.hosts.bootAddresses.note(mac, '127.0.0.1');
      const script = await (await fetch(`${url}/boot/ipxe?mac=${mac}&platform=efi&arch=x86_64&chip=undionly`)).text();
      return (/netclone\.token=([A-Za-z0-9_-]+)/.exec(script) as RegExpExecArray)[1];
    };
    try {
      const disk = noise(71, 48 * CHUNK + 5);
      const file = path.join(own, 'restarted.raw');
      await writeFile(file, disk);
      const running = startAgentCli(['capture', '--server', url, '--token', await token(), '--disk', file, '--disk-name', 'sda', '--jobs', '1']);
      const journal = await waitFor('the server to journal some uploaded chunks', async () => {
        const found = (await readdir(own, { recursive: true })).find((p) => path.basename(p) === 'restarted.journal');
        if (!found) return false;
        const lines = (await readFile(path.join(own, found), 'utf8')).split('\n').filter((l) => l.length > 0).length;
        return lines >= 3 ? lines : false;
      }, { context: () => running.stderr() });
      expect(running.exited(), 'the agent finished before the server could be restarted').toBe(false);
      await server.stop();
      server = await startAppliance(config(), nullLogger());
      const cut = await running.result;
      expect(cut.code).toBe(1);
      expect(agentReason(cut)).toMatch(/this task token is not valid \(wrong, or its task has ended\)/);

      const again = await token();
      const r = await runAgentCli(['capture', '--server', url, '--token', again, '--disk', file, '--disk-name', 'sda']);
      expect(r.code, r.stderr).toBe(0);
      const line = agentLine(r);
      expect(line.sentChunks).toBeLessThanOrEqual(distinctChunks(disk, CHUNK).size - journal);
      expect(line.sentChunks + line.reusedChunks).toBe(distinctChunks(disk, CHUNK).size);
    } finally {
      await server.stop();
      await rm(own, { recursive: true, force: true });
    }
  });
});

describe('deploy with the agent', () => {
  let v1: Buffer;
  let v2: Buffer;
  let changed: number[];
  beforeAll(async () => {
    v1 = makeDisk(31, CHUNK, CHUNKS);
    await capture('golden', v1, 'golden-v1.raw');
    v2 = Buffer.from(v1);
    changed = scatterChanges(v2, 13, CHUNK, 4);
    await capture('golden', v2, 'golden-v2.raw');
  });

  async function deployOnto(target: Buffer, name: string): Promise<{ task: TaskRecord; r: RunResult; token: string; after: Buffer }> {
    const file = path.join(dir, name);
    await writeFile(file, target);
    const { task, token } = await queue('deploy', 'golden');
    const r = await agent('deploy', token, file);
    return { task, r, token, after: await readFile(file) };
  }

  it('onto a disk holding the previous version: fetches only the changed chunks, and the task is done', async () => {
    const { task, r, token, after } = await deployOnto(v1, 'stale.raw');
    expect(r.code, r.stderr).toBe(0);
    expect(sha(after)).toBe(sha(v2));
    const line = agentLine(r);
    expect(line.sentChunks).toBe(changed.length);
    const nonZero = distinctOrRepeatedNonZero(v2);
    expect(line.reusedChunks).toBe(nonZero - changed.length);
    expect(await postResult(token, r)).toMatchObject({ state: 'done' });
    expect(task.result?.bytesOnWire).toBeLessThanOrEqual(changed.length * maxChunkFileSize(CHUNK) + Math.ceil(v2.length / CHUNK) * 32);
  });

  it('onto a random-filled disk: every chunk written, holes zeroed, the rest of the disk untouched', async () => {
    const target = noise(4242, v2.length + 2 * CHUNK);
    const { r, token, after } = await deployOnto(target, 'random.raw');
    expect(r.code, r.stderr).toBe(0);
    expect(sha(after.subarray(0, v2.length))).toBe(sha(v2));
    expect(after.subarray(v2.length).equals(target.subarray(v2.length))).toBe(true);
    expect(agentLine(r)).toMatchObject({ reusedChunks: 0, sentChunks: distinctOrRepeatedNonZero(v2), examined: v2.length });
    expect(await postResult(token, r)).toMatchObject({ state: 'done' });
  });

  it('refuses a chunk damaged in the store, and the task fails saying why', async () => {
    // A chunk only v2 has, so the other deploys above did not depend on it staying intact.
    const i = changed[0];
    const hash = sha(v2.subarray(i * CHUNK, Math.min((i + 1) * CHUNK, v2.length)));
    const stored = await findChunkFile(hash);
    const original = await readFile(stored);
    const damaged = Buffer.from(original);
    damaged[damaged.length - 10] ^= 0x55;
    await writeFile(stored, damaged);
    try {
      const target = noise(777, v2.length);
      const { task, r, token, after } = await deployOnto(target, 'damaged.raw');
      expect(r.code).toBe(1);
      expect(agentReason(r)).toMatch(new RegExp(`chunk ${hash} \\(image chunk ${i}, disk byte ${i * CHUNK}\\) came from the server damaged`));
      expect(after.subarray(i * CHUNK, (i + 1) * CHUNK).equals(target.subarray(i * CHUNK, (i + 1) * CHUNK))).toBe(true);
      expect(await postResult(token, r)).toMatchObject({ state: 'failed' });
      expect(task.reason).toMatch(/came from the server damaged/);
    } finally {
      await writeFile(stored, original);
    }
  });
});

describe('deploy retried after a failure midway', () => {
  it('re-checks the disk in place: what the failed run wrote is reused, the rest is fetched', async () => {
    const image = noise(61, 16 * CHUNK + 333);
    await capture('midway', image, 'midway-src.raw');
    const victim = 10;
    const hash = sha(image.subarray(victim * CHUNK, (victim + 1) * CHUNK));
    const stored = await findChunkFile(hash);
    const original = await readFile(stored);
    const damaged = Buffer.from(original);
    damaged[damaged.length - 10] ^= 0x55;
    await writeFile(stored, damaged);
    const file = path.join(dir, 'midway.raw');
    await writeFile(file, noise(62, image.length));
    const first = await queue('deploy', 'midway');
    const failed = await agent('deploy', first.token, file);
    expect(failed.code).toBe(1);
    expect(await postResult(first.token, failed)).toMatchObject({ state: 'failed' });
    await writeFile(stored, original);

    const again = await queue('deploy', 'midway');
    const r = await agent('deploy', again.token, file);
    expect(r.code, r.stderr).toBe(0);
    expect(sha(await readFile(file))).toBe(sha(image));
    // Chunks 0-9 were fetched before the damaged one and are all written before the agent gives up.
    expect(agentLine(r).reusedChunks).toBeGreaterThanOrEqual(victim);
    expect(agentLine(r).sentChunks + agentLine(r).reusedChunks).toBe(17);
    expect(await postResult(again.token, r)).toMatchObject({ state: 'done' });
  });
});

function distinctOrRepeatedNonZero(disk: Buffer): number {
  let n = 0;
  for (let off = 0; off < disk.length; off += CHUNK) if (!disk.subarray(off, Math.min(off + CHUNK, disk.length)).every((b) => b === 0)) n++;
  return n;
}
