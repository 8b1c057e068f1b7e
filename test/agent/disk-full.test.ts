/**
 * A full disk during a capture over the chunk transport (issue 11: "faults are normal"). The data
 * directory's images/ sits on a small tmpfs this test mounts (it needs root), and the imaging agent
 * (a child process) captures through a real appliance on loopback. A full store fails the one call
 * that hit it (a chunk PUT's file write, a commit's manifest write) with a 507 that says so; the agent
 * stops with that reason instead of retrying, the task fails with it, the server keeps answering and
 * the committed version stays intact. Once there is room, a retried task commits, sending only what
 * the upload journal did not record. The journal on a full disk of its own: its appends fail, the
 * chunks whose line could not be written are not counted by the next upload, and known() never
 * reports a chunk the store lacks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loopbackConfig } from '../lib/appliance-config.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { nullLogger } from '../../src/lib/log.js';
import type { TaskRecord } from '../../src/domain/database.js';
import { chunkName } from '../../src/imaging/chunk-format.js';
import { journalLine, parseJournal, type JournalEntry } from '../../src/imaging/upload-journal.js';
import { noise } from '../lib/prng.js';
import type { RunResult } from '../lib/run.js';
import { postAgentResult, queueChunkTask } from './appliance-tasks.js';
import { diskDigest } from '../lib/disk-digest.js';
import { fill, makeRoom, mountTmpfs, unmountAll } from '../lib/full-disk.js';
import { agentLine, agentReason, chunkList, distinctChunks, runAgentCli } from './disks.js';

const CHUNK = 1024 * 1024;
const MiB = 1024 * 1024;
/** What the agent and the task must say when the store's disk is full. */
const FULL = /the server answered 507: the appliance's image store is full \([^)]*(ENOSPC|no space left on device)[^)]*\): free space/;

let dir: string;
let data: string;
let images: string;
let app: RunningAppliance | undefined;
let base: string;
const mounts: string[] = [];
let macs = 0;

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('this test mounts tmpfs file systems: run it as root');
  dir = await mkdtemp(path.join(tmpdir(), 'nc-disk-full-'));
  data = path.join(dir, 'data');
  images = path.join(data, 'images');
  await mountTmpfs(images, '32m', mounts);
  app = await startAppliance(loopbackConfig(data), nullLogger());
  base = `http://127.0.0.1:${app.ports.http}`;
});

afterAll(async () => {
  try {
    await app?.stop();
  } finally {
    await unmountAll(mounts);
    if (dir) await rm(dir, { recursive: true, force: true });
  }
});

function appliance(): RunningAppliance {
  if (!app) throw new Error('the appliance did not start');
  return app;
}

/** A chunk-transport capture task for a fresh PC, and the token its boot script carries. */
async function queue(image: string): Promise<{ task: TaskRecord; token: string }> {
  return queueChunkTask(appliance(), 'capture', `52:54:00:00:d5:${(++macs).toString(16).padStart(2, '0')}`, image);
}

/** The agent as the thin client runs it; one upload at a time, so chunks land in disk order. */
async function agentCapture(image: string, disk: Buffer, name: string): Promise<{ task: TaskRecord; token: string; r: RunResult }> {
  const file = path.join(dir, name);
  await writeFile(file, disk);
  const { task, token } = await queue(image);
  const r = await runAgentCli(['capture', '--server', base, '--token', token, '--disk', file, '--disk-name', 'sda', '--jobs', '1']);
  return { task, token, r };
}

/** What the thin client does after the agent: post the task's result from the agent's outcome. */
async function postResult(token: string, r: RunResult): Promise<{ state: string; reason: string | null }> {
  const { status, ...answer } = await postAgentResult(appliance(), token, r);
  expect(status).toBe(200);
  return answer;
}

/** The agent stopped on the full store: once, with the server's words, and the task failed saying so. */
async function expectFailedFull(token: string, r: RunResult, call: RegExp): Promise<void> {
  expect(r.code, r.stderr).toBe(1);
  expect(agentReason(r)).toMatch(call);
  expect(agentReason(r)).toMatch(FULL);
  // A full disk is not "try again in a moment": the agent does not repeat the call.
  expect(r.stderr).not.toMatch(/trying again/);
  const result = await postResult(token, r);
  expect(result.state).toBe('failed');
  expect(result.reason).toMatch(FULL);
}

/** The server still answers HTTP. */
async function expectServing(): Promise<void> {
  const page = await fetch(`${base}/login`);
  expect(page.status).toBe(200);
}

/** The image's only version is `disk`: its chunk list, its digest, and every chunk checked against its name. */
async function expectOnlyVersion(image: string, disk: Buffer): Promise<void> {
  const store = appliance().core.store;
  expect(await store.versions(image)).toEqual([1]);
  await expectNewest(image, disk);
}

async function expectNewest(image: string, disk: Buffer): Promise<void> {
  const store = appliance().core.store;
  const reader = await store.openVersion(image);
  try {
    const list = Buffer.alloc(reader.chunkCount * 32);
    for (let i = 0; i < reader.chunkCount; i++) {
      const h = reader.chunkHash(i);
      if (h !== null) list.write(h, i * 32, 32, 'hex');
    }
    expect(list.equals(chunkList(disk, CHUNK))).toBe(true);
    expect(reader.size).toBe(disk.length);
    expect(reader.digest).toBe(diskDigest(disk, disk.length, CHUNK));
  } finally {
    reader.close();
  }
  expect(await store.verify(image)).toMatchObject({ ok: true });
}

function chunkPath(hash: string): string {
  return path.join(images, 'chunks', hash.slice(0, 2), hash);
}

async function fileSize(p: string): Promise<number | null> {
  try {
    return (await stat(p)).size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

async function journalOf(image: string): Promise<{ entries: Map<string, JournalEntry>; torn: boolean }> {
  try {
    return parseJournal(await readFile(path.join(images, 'uploads', `${image}.journal`), 'latin1'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { entries: new Map(), torn: false };
    throw e;
  }
}

/** Journal entries among `hashes` whose chunk file is on disk with the recorded size: what a next upload may count. */
async function usableJournaled(image: string, hashes: ReadonlySet<string>): Promise<Set<string>> {
  const out = new Set<string>();
  for (const [h, e] of (await journalOf(image)).entries) if (hashes.has(h) && (await fileSize(chunkPath(h))) === e.stored) out.add(h);
  return out;
}

/**
 * What a new upload session of `image` answers to known() for `hashes`, asked through the client API
 * like the agent does; the task is cancelled afterwards (nothing uploaded, nothing committed).
 */
async function knownNow(image: string, disk: Buffer, hashes: readonly string[]): Promise<Set<string>> {
  const { task, token } = await queue(image);
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  try {
    const start = await fetch(`${base}/api/client/v1/start`, { method: 'POST', headers, body: JSON.stringify({ disk: { name: 'sda', size: disk.length, logicalSectorSize: 512 } }) });
    expect(start.status, await start.clone().text()).toBe(200);
    const res = await fetch(`${base}/api/client/v1/chunks/known`, { method: 'POST', headers, body: JSON.stringify({ hashes }) });
    expect(res.status, await res.clone().text()).toBe(200);
    return new Set(((await res.json()) as { known: string[] }).known);
  } finally {
    await appliance().core.tasks.cancel(task.id);
  }
}

/** Non-zero chunk hashes of a disk, in disk order, each once. */
function hashesInOrder(disk: Buffer): string[] {
  const out = new Set<string>();
  for (let off = 0; off < disk.length; off += CHUNK) {
    const piece = disk.subarray(off, Math.min(off + CHUNK, disk.length));
    if (!piece.every((b) => b === 0)) out.add(chunkName(piece));
  }
  return [...out];
}

describe('the image store fills up under a chunk capture', () => {
  // Incompressible, so each chunk file takes a whole MiB of the tmpfs.
  const v1 = noise(41, 8 * CHUNK + 777);
  // Chunks 1-6 new: six uploads, the rest known from v1.
  const v2 = Buffer.from(v1);
  for (let i = 1; i <= 6; i++) noise(4200 + i, CHUNK).copy(v2, i * CHUNK);
  const newInV2 = new Set([...distinctChunks(v2, CHUNK)].filter((h) => !distinctChunks(v1, CHUNK).has(h)));
  let filler: string;
  /** Chunks of v2 the failed capture left, journaled and on disk. */
  let landed: Set<string>;

  it('captures v1 while there is room', async () => {
    const { token, r } = await agentCapture('office', v1, 'v1.raw');
    expect(r.code, r.stderr).toBe(0);
    expect(await postResult(token, r)).toMatchObject({ state: 'done' });
    await expectOnlyVersion('office', v1);
  });

  it('a commit whose manifest does not fit fails with 507; v1 is untouched', async () => {
    filler = await fill(images);
    // The same chunks in another order: nothing to upload, only the new version's manifest to write.
    const swapped = Buffer.from(v1);
    v1.copy(swapped, 2 * CHUNK, 5 * CHUNK, 6 * CHUNK);
    v1.copy(swapped, 5 * CHUNK, 2 * CHUNK, 3 * CHUNK);
    const { token, r } = await agentCapture('office', swapped, 'swapped.raw');
    await expectFailedFull(token, r, /^agent: commit: /);
    await expectServing();
    await expectOnlyVersion('office', v1);
    expect(await readdir(path.join(images, 'tmp'))).toEqual([]);
  });

  it('a chunk PUT that does not fit fails with 507; the chunks before it stay journaled, v1 is untouched', async () => {
    // Room for two of the six new chunk files and the journal's first page, not for the third file.
    await makeRoom(filler, 2.5 * MiB);
    const { token, r } = await agentCapture('office', v2, 'v2.raw');
    await expectFailedFull(token, r, /^agent: upload of chunk [0-9a-f]{64}: /);
    await expectServing();
    await expectOnlyVersion('office', v1);
    // The file being written when the disk filled is gone, not left to take space.
    expect(await readdir(path.join(images, 'tmp'))).toEqual([]);

    landed = await usableJournaled('office', newInV2);
    expect(landed.size).toBeGreaterThan(0);
    expect(landed.size).toBeLessThan(newInV2.size);
    // known() counts exactly v1's chunks and the journaled ones whose files are in place, nothing the store lacks.
    const all = hashesInOrder(v2);
    const known = await knownNow('office', v2, all);
    expect(known).toEqual(new Set(all.filter((h) => !newInV2.has(h) || landed.has(h))));
    for (const h of known) expect(await fileSize(chunkPath(h)), h).not.toBeNull();
  });

  it('with room again, a retried task commits v2, sending only what had not arrived', async () => {
    await rm(filler);
    const { task, token, r } = await agentCapture('office', v2, 'v2-again.raw');
    expect(r.code, r.stderr).toBe(0);
    expect(await postResult(token, r)).toMatchObject({ state: 'done' });
    expect(task.result?.version).toBe(2);
    const line = agentLine(r);
    // Not one more: a chunk the server had counted but lacked would be sent again at the commit (409).
    expect(line.sentChunks).toBe(newInV2.size - landed.size);
    expect(line.sentChunks + line.reusedChunks).toBe(distinctChunks(v2, CHUNK).size);
    expect(await appliance().core.store.versions('office')).toEqual([1, 2]);
    await expectNewest('office', v2);
    expect(await appliance().core.store.verify('office', { version: 1 })).toMatchObject({ ok: true });
  });
});

describe('the upload journal on a full disk', () => {
  it('a torn journal line is not counted, and known() never reports a chunk the store lacks', async () => {
    const uploads = path.join(images, 'uploads');
    await mountTmpfs(uploads, '16k', mounts);
    const disk = noise(77, 8 * CHUNK);
    const order = hashesInOrder(disk);
    // A line an earlier upload left for a chunk whose file is not there (a line whose append failed
    // after it was written whole, its chunk then dropped with the session): it must not count.
    const stale = order[5];
    const staleLine = journalLine(stale, { length: CHUNK, stored: CHUNK + 24 });
    // The journal's first page then takes two and a half lines of this disk (each "<hash> 1048576 <size>\n",
    // 81 bytes for an incompressible chunk): the third append is cut midway, later ones find no room.
    expect(staleLine.length).toBe(81);
    const padding = `${'#'.repeat(4096 - 3 * 81 - 40 - 1)}\n`;
    await writeFile(path.join(uploads, 'lab.journal'), padding + staleLine);
    const journalFiller = await fill(uploads);
    // The store has room for four chunk files: the fifth PUT fails, so the task is cut after the journal's fault.
    const storeFiller = await fill(images);
    await makeRoom(storeFiller, 4.5 * MiB);

    const { token, r } = await agentCapture('lab', disk, 'lab.raw');
    // The PUTs whose journal line failed still stored their chunk; the one that failed is the store's.
    await expectFailedFull(token, r, new RegExp(`^agent: upload of chunk (${order.slice(3).join('|')}): `));
    await expectServing();
    expect(await appliance().core.store.versions('lab')).toEqual([]);

    const journal = await journalOf('lab');
    expect(journal.torn).toBe(true);
    expect([...journal.entries.keys()]).toEqual([stale, ...order.slice(0, 2)]);
    expect(await fileSize(chunkPath(stale))).toBeNull();
    const known = await knownNow('lab', disk, order);
    expect(known).toEqual(new Set(order.slice(0, 2)));
    expect(known).toEqual(await usableJournaled('lab', new Set(order)));
    for (const h of known) expect(await fileSize(chunkPath(h)), h).toBe(journal.entries.get(h)?.stored);

    await rm(journalFiller);
    await rm(storeFiller);
    const again = await agentCapture('lab', disk, 'lab-again.raw');
    expect(again.r.code, again.r.stderr).toBe(0);
    expect(await postResult(again.token, again.r)).toMatchObject({ state: 'done' });
    expect(agentLine(again.r).sentChunks).toBe(order.length - known.size);
    expect(await appliance().core.store.versions('lab')).toEqual([1]);
    await expectNewest('lab', disk);
  });
});
