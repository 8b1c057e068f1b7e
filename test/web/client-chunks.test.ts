/**
 * The chunk transport of the client API (issue 11), end to end over loopback on a real appliance:
 * the test plays the imaging agent with chunk files it encodes itself (ChunkCodecContext), and the
 * tasks end with the right versions, digests and counters. The NBD transport is left as it was.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { loopbackConfig } from '../lib/appliance-config.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { runCommand } from '../../src/domain/command-table.js';
import { resolveConfig } from '../../src/domain/config.js';
import { progressLine } from '../../src/domain/tasks.js';
import { migrate, type TaskRecord } from '../../src/domain/database.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { diskDigest } from '../lib/disk-digest.js';
import { nullLogger } from '../../src/lib/log.js';
import { ChunkCodecContext, maxChunkFileSize } from '../../src/imaging/chunk-format.js';
import { taskDetail, taskProgress } from '../../src/web/pages/tasks.js';

const CHUNK = 1024 * 1024;
const codec = new ChunkCodecContext();
const scratch = Buffer.alloc(maxChunkFileSize(CHUNK));
let dir: string;
let app: RunningAppliance;
let base: string;
let golden: Buffer;

/** 6 MiB + a partial chunk: random data, a zero run, text, and a short last chunk. */
function makeDisk(): Buffer {
  const d = Buffer.alloc(6 * CHUNK + 8192);
  randomBytes(2 * CHUNK).copy(d, 0);
  d.fill('netclone chunk transport ', 3 * CHUNK, 5 * CHUNK);
  randomBytes(8192).copy(d, 6 * CHUNK);
  return d;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

interface Piece {
  readonly index: number;
  readonly data: Buffer;
  readonly hash: string | null;
}

/** The disk as the agent sees it: chunk-sized pieces, all-zero ones with no hash. */
function piecesOf(disk: Buffer): Piece[] {
  const out: Piece[] = [];
  for (let i = 0, o = 0; o < disk.length; i++, o += CHUNK) {
    const data = disk.subarray(o, Math.min(o + CHUNK, disk.length));
    out.push({ index: i, data, hash: data.every((b) => b === 0) ? null : sha(data) });
  }
  return out;
}

function encode(data: Buffer): Buffer {
  const [h, p] = codec.encode(data, 3, scratch);
  return Buffer.concat([h, p]);
}

function listOf(pieces: readonly Piece[]): Buffer {
  const b = Buffer.alloc(pieces.length * 32);
  for (const p of pieces) if (p.hash) b.write(p.hash, p.index * 32, 32, 'hex');
  return b;
}

async function bootScript(mac: string): Promise<string> {
  app.core.hosts.bootAddresses.note(mac, '127.0.0.1');
  const res = await fetch(`${base}/boot/ipxe?mac=${mac}&platform=efi&arch=x86_64&chip=undionly`);
  expect(res.status).toBe(200);
  return res.text();
}

function tokenOf(script: string): string {
  const m = /netclone\.token=([A-Za-z0-9_-]+)/.exec(script);
  if (!m) throw new Error(`no token in script:\n${script}`);
  return m[1];
}

interface Answer {
  readonly status: number;
  readonly json: Record<string, unknown>;
  /** Body bytes both ways: what the server should count on the wire for a chunk route. */
  readonly bytes: number;
}

async function call(method: string, pathname: string, token: string | null, body?: unknown): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  let payload: string | Uint8Array<ArrayBuffer> | undefined;
  if (Buffer.isBuffer(body)) {
    headers['content-type'] = 'application/octet-stream';
    payload = new Uint8Array(body);
  } else if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const res = await fetch(`${base}${pathname}`, { method, headers, body: payload });
  const text = await res.text();
  const bytes = (payload === undefined ? 0 : typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length) + Buffer.byteLength(text);
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {}, bytes };
}

async function download(pathname: string, token: string): Promise<{ status: number; body: Buffer; length: string | null }> {
  const res = await fetch(`${base}${pathname}`, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), length: res.headers.get('content-length') };
}

/** A task of `kind` for `mac` over `transport`, its PC booted: the task and its token. */
async function bootedTask(kind: 'capture' | 'deploy', mac: string, image: string, transport: 'chunks' | 'nbd' = 'chunks'): Promise<{ task: TaskRecord; token: string }> {
  const task = (await runCommand(app.core.commands, TEST_OPERATOR, 'task.create', { kind, mac, image, transport }, () => undefined)) as TaskRecord;
  return { task, token: tokenOf(await bootScript(mac)) };
}

const diskFor = (size: number) => ({ disk: { name: 'sda', size, logicalSectorSize: 512, serial: 'S1' } });

/** What a well-behaved agent does for a capture: ask, upload what is asked for, commit. Returns the hashes it sent and the body bytes. */
async function agentCapture(token: string, disk: Buffer): Promise<{ sent: string[]; commit: Answer; bytes: number }> {
  const pieces = piecesOf(disk);
  const hashes = [...new Set(pieces.flatMap((p) => (p.hash ? [p.hash] : [])))];
  const known = await call('POST', '/api/client/v1/chunks/known', token, { hashes });
  expect(known.status).toBe(200);
  const have = new Set(known.json.known as string[]);
  const sent: string[] = [];
  const puts: Promise<Answer>[] = [];
  for (const h of hashes) {
    if (have.has(h)) continue;
    const piece = pieces.find((p) => p.hash === h) as Piece;
    sent.push(h);
    puts.push(call('PUT', `/api/client/v1/chunks/${h}`, token, encode(piece.data)));
  }
  // All in flight at once, as the agent does with its --jobs.
  let bytes = known.bytes;
  for (const r of await Promise.all(puts)) {
    expect(r.status, JSON.stringify(r.json)).toBe(201);
    bytes += r.bytes;
  }
  const commit = await call('POST', '/api/client/v1/chunks/commit', token, listOf(pieces));
  return { sent, commit, bytes: bytes + commit.bytes };
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-chunks-'));
  app = await startAppliance(loopbackConfig(dir), nullLogger());
  base = `http://127.0.0.1:${app.ports.http}`;
  golden = makeDisk();
  const file = path.join(dir, 'golden.raw');
  await writeFile(file, golden);
  await app.core.commands.importImage(TEST_OPERATOR, 'golden', createReadStream(file), golden.length, 'test', () => undefined);
});

afterAll(async () => {
  await app?.stop();
  await rm(dir, { recursive: true, force: true });
});

afterEach(async () => {
  for (const t of app.core.tasks.list({ active: true })) await app.core.tasks.cancel(t.id);
});

describe('transport choice', () => {
  it('defaults to chunks in the config, reads old task records as nbd, and refuses other values', async () => {
    expect(resolveConfig({}).transport).toBe('chunks');
    expect(() => resolveConfig({ transport: 'ftp' })).toThrow(/transport/);
    const old = migrate({ schemaVersion: 1, hosts: [], tasks: [{ id: 'x', kind: 'capture' }], events: [], users: [], apiTokens: [], settings: {} });
    expect(old.tasks[0].transport).toBe('nbd');
    await expect(runCommand(app.core.commands, TEST_OPERATOR, 'task.create', { kind: 'capture', mac: '52:54:00:00:c0:01', image: 'x', transport: 'ftp' }, () => undefined)).rejects.toThrow(/transport/);
  });

  it('tells the client its transport in the task and in the start answer', async () => {
    const mac = '52:54:00:00:c0:02';
    const { token } = await bootedTask('deploy', mac, 'golden');
    const t = await call('GET', `/api/client/v1/task?mac=${mac}`, token);
    expect(t.json.transport).toBe('chunks');
    const start = await call('POST', '/api/client/v1/start', token, diskFor(golden.length));
    expect(start.status).toBe(200);
    expect(start.json).toEqual({
      transport: 'chunks', kind: 'deploy', size: golden.length, sectorSize: 512, chunkSize: CHUNK, chunkCount: 7, version: 1,
      digest: diskDigest(golden, golden.length, CHUNK), layout: null, mainPartition: null,
    });
  });
});

describe('the disk layout of a chunk capture (issue 12)', () => {
  /** A layout for makeDisk()'s disk: one partition, and chunk 5 (all zeros there) free space. */
  const layoutFor = (size: number, free: [number, number][]): Record<string, unknown> => ({
    scheme: 'gpt', sectorSize: 512, diskSize: size, diskGuid: '11111111-2222-3333-4444-555555555555', chunkSize: CHUNK, freeChunks: free,
    partitions: [{ index: 1, typeId: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7', guid: 'AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE', name: 'data', attributes: '0', startBytes: CHUNK, sizeBytes: 4 * CHUNK, filesystem: 'ntfs', label: 'Data', uuid: '0123456789ABCDEF', usedBytes: 3 * CHUNK, minSizeBytes: 3 * CHUNK, mode: 'used-blocks', note: null }],
  });

  it('keeps the layout sent before the commit beside the version, and hands it to a deploy', async () => {
    const disk = makeDisk();
    const zeroChunk = piecesOf(disk).find((p) => p.hash === null && p.index < 6)?.index as number;
    const { token } = await bootedTask('capture', '52:54:00:00:c1:31', 'laid-out');
    await call('POST', '/api/client/v1/start', token, diskFor(disk.length));
    const sent = await call('POST', '/api/client/v1/chunks/layout', token, layoutFor(disk.length, [[zeroChunk, 1]]));
    expect(sent.status, JSON.stringify(sent.json)).toBe(204);
    const { commit } = await agentCapture(token, disk);
    expect(commit.status, JSON.stringify(commit.json)).toBe(200);
    expect(await app.core.store.layout('laid-out')).toEqual(layoutFor(disk.length, [[zeroChunk, 1]]));

    const deploy = await bootedTask('deploy', '52:54:00:00:c1:32', 'laid-out');
    const start = await call('POST', '/api/client/v1/start', deploy.token, diskFor(disk.length));
    expect(start.json).toMatchObject({ kind: 'deploy', layout: layoutFor(disk.length, [[zeroChunk, 1]]) });
  });

  it('takes the partition a deploy grows in the API, checks it against the layout, shows it and tells the agent at start', async () => {
    const disk = makeDisk();
    const { token } = await bootedTask('capture', '52:54:00:00:c1:35', 'laid-out-main');
    await call('POST', '/api/client/v1/start', token, diskFor(disk.length));
    expect((await call('POST', '/api/client/v1/chunks/layout', token, layoutFor(disk.length, []))).status).toBe(204);
    expect((await agentCapture(token, disk)).commit.status).toBe(200);

    const admin = { authorization: `Bearer ${(await app.core.commands.createApiToken(TEST_OPERATOR, 'main-partition')).token}`, 'content-type': 'application/json' };
    const mac = '52:54:00:00:c1:36';
    const create = async (body: Record<string, unknown>): Promise<{ status: number; json: Record<string, unknown> }> => {
      const res = await fetch(`${base}/api/v1/tasks`, { method: 'POST', headers: admin, body: JSON.stringify({ mac, transport: 'chunks', ...body }) });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };
    const missing = await create({ kind: 'deploy', image: 'laid-out-main', mainPartition: 2 });
    expect(missing.status).toBe(400);
    expect(String(missing.json.message)).toMatch(/partition 2 is not in the image \(it has 1\)/);
    const capture = await create({ kind: 'capture', image: 'laid-out-main', mainPartition: 1 });
    expect(capture.status).toBe(400);
    expect(String(capture.json.message)).toMatch(/deploys only/);
    expect((await create({ kind: 'deploy', image: 'laid-out-main', mainPartition: 0 })).status).toBe(400);

    const created = await create({ kind: 'deploy', image: 'laid-out-main', mainPartition: 1 });
    expect(created.status, JSON.stringify(created.json)).toBe(201);
    const task = created.json.task as TaskRecord;
    expect(task.mainPartition).toBe(1);
    const shown = (await (await fetch(`${base}/api/v1/tasks/${task.id}`, { headers: admin })).json()) as TaskRecord;
    expect(shown.mainPartition).toBe(1);
    expect(taskDetail(shown, 'csrf', '').value).toMatch(/<dt>Partition to resize<\/dt><dd>1<\/dd>/);

    const deployToken = tokenOf(await bootScript(mac));
    const start = await call('POST', '/api/client/v1/start', deployToken, diskFor(disk.length));
    expect(start.status, JSON.stringify(start.json)).toBe(200);
    expect(start.json).toMatchObject({ kind: 'deploy', layout: layoutFor(disk.length, []), mainPartition: 1 });
  });

  it('refuses a layout of another disk, a malformed one, and a commit listing data in a chunk the layout calls free', async () => {
    const disk = makeDisk();
    const { token } = await bootedTask('capture', '52:54:00:00:c1:33', 'laid-out-bad');
    await call('POST', '/api/client/v1/start', token, diskFor(disk.length));
    const other = await call('POST', '/api/client/v1/chunks/layout', token, layoutFor(disk.length + 512, []));
    expect(other.status).toBe(400);
    expect(other.json.error).toMatch(/describes a \d+-byte disk/);
    const malformed = await call('POST', '/api/client/v1/chunks/layout', token, { ...layoutFor(disk.length, []), freeChunks: [[3, 0]] });
    expect(malformed.status).toBe(400);
    expect(malformed.json.error).toMatch(/free run/);
    // Chunk 0 holds data, yet the layout says it is free space.
    expect((await call('POST', '/api/client/v1/chunks/layout', token, layoutFor(disk.length, [[0, 1]]))).status).toBe(204);
    const { commit } = await agentCapture(token, disk);
    expect(commit.status).toBe(400);
    expect(commit.json.error).toMatch(/chunk 0 holds data, but the disk layout .* says it is free space/);
    expect(await app.core.store.versions('laid-out-bad')).toEqual([]);
  });
});

describe('chunk capture', () => {
  it('stores a capture from uploaded chunk files, then a re-capture sends only the changed chunks', async () => {
    const mac = '52:54:00:00:c1:01';
    const disk = makeDisk();
    const first = await bootedTask('capture', mac, 'office');
    const start = await call('POST', '/api/client/v1/start', first.token, diskFor(disk.length));
    expect(start.json).toEqual({ transport: 'chunks', kind: 'capture', size: disk.length, sectorSize: 512, chunkSize: CHUNK, knownBatch: 1024 });
    expect(first.task.state).toBe('running');
    const { sent, commit, bytes } = await agentCapture(first.token, disk);
    expect(commit.status, JSON.stringify(commit.json)).toBe(200);
    const digest = diskDigest(disk, disk.length, CHUNK);
    expect(commit.json).toMatchObject({ version: 1, digest });
    // Data chunks: two random, two of text, one partial random; two all-zero chunks are holes.
    expect(sent.length).toBe(5);
    const progress = await call('POST', '/api/client/v1/progress', first.token, { phase: 'transferring', examined: disk.length, reusedChunks: 0, sentChunks: 5, zeroChunks: 2, totalChunks: 7 });
    expect(progress.status).toBe(200);
    expect(first.task.progress.chunks).toEqual({ reused: 0, sent: 5, zero: 2, total: 7 });
    expect(first.task.progress.bytes).toBe(disk.length);
    const done = await call('POST', '/api/client/v1/result', first.token, { ok: true, digest: null });
    expect(done.json).toMatchObject({ state: 'done' });
    expect(first.task.result).toMatchObject({ version: 1, digest });
    // The server's own count: the chunk files and lists that crossed, not the disk.
    expect(first.task.result?.bytesOnWire).toBe(bytes);
    expect(first.task.result?.bytesOnWire).toBe(first.task.progress.wireBytes);
    expect(progressLine(first.task)).toMatch(/^examined 6\.3 MB, sent [\d.]+ [KM]B, 0 % reused$/);
    expect((await app.core.commands.showImage(TEST_OPERATOR, 'office')).versions.at(-1)?.digest).toBe(digest);

    // One chunk changes: only it crosses.
    const changed = Buffer.from(disk);
    changed.write('changed', 3 * CHUNK + 100);
    const second = await bootedTask('capture', mac, 'office');
    expect((await call('POST', '/api/client/v1/start', second.token, diskFor(changed.length))).status).toBe(200);
    const again = await agentCapture(second.token, changed);
    expect(again.commit.status, JSON.stringify(again.commit.json)).toBe(200);
    expect(again.sent).toEqual([sha(changed.subarray(3 * CHUNK, 4 * CHUNK))]);
    expect(second.task.progress.wireBytes).toBe(again.bytes);
    expect(again.commit.json).toMatchObject({ version: 2, digest: diskDigest(changed, changed.length, CHUNK) });
    await call('POST', '/api/client/v1/progress', second.token, { phase: 'transferring', examined: changed.length, reusedChunks: 4, sentChunks: 1, zeroChunks: 2, totalChunks: 7 });
    expect(progressLine(second.task)).toMatch(/^examined 6\.3 MB, sent [\d.]+ [KM]B, 80 % reused$/);
    expect((await call('POST', '/api/client/v1/result', second.token, { ok: true, digest: null })).json).toMatchObject({ state: 'done' });
    expect(second.task.result?.bytesOnWire).toBeLessThan(first.task.result?.bytesOnWire ?? 0);
  });

  it('refuses corrupted, misnamed and oversized uploads, and commits nothing from them', async () => {
    const mac = '52:54:00:00:c1:02';
    const disk = makeDisk();
    const { task, token } = await bootedTask('capture', mac, 'poisoned');
    expect((await call('POST', '/api/client/v1/start', token, diskFor(disk.length))).status).toBe(200);
    const piece = piecesOf(disk)[0];
    const file = encode(piece.data);

    const flipped = Buffer.from(file);
    flipped[flipped.length - 10] ^= 0x40;
    const bad = await call('PUT', `/api/client/v1/chunks/${piece.hash}`, token, flipped);
    expect(bad.status).toBe(400);
    expect(String(bad.json.error)).toMatch(new RegExp(`^chunk ${piece.hash} refused: `));

    // A valid file under another chunk's name: the decoded bytes do not hash to the name.
    const other = piecesOf(disk)[1];
    const misnamed = await call('PUT', `/api/client/v1/chunks/${other.hash}`, token, file);
    expect(misnamed.status).toBe(400);
    expect(String(misnamed.json.error)).toMatch(/refused/);

    const notAName = await call('PUT', '/api/client/v1/chunks/NOTAHASH', token, file);
    expect(notAName.status).toBe(400);

    const huge = Buffer.concat([file, Buffer.alloc(maxChunkFileSize(CHUNK))]);
    const tooBig = await call('PUT', `/api/client/v1/chunks/${piece.hash}`, token, huge);
    expect(tooBig.status).toBe(413);
    expect(typeof tooBig.json.error).toBe('string');

    const notBinary = await call('PUT', `/api/client/v1/chunks/${piece.hash}`, token, { file: 'x' });
    expect(notBinary.status).toBe(400);
    expect(String(notBinary.json.error)).toMatch(/application\/octet-stream/);

    // Nothing of that counts: the chunk is still missing at commit.
    const list = listOf(piecesOf(disk));
    const commit = await call('POST', '/api/client/v1/chunks/commit', token, list);
    expect(commit.status).toBe(409);
    expect(commit.json.missing).toContain(piece.hash);
    const known = await call('POST', '/api/client/v1/chunks/known', token, { hashes: [piece.hash, other.hash] });
    expect(known.json).toEqual({ known: [] });
    expect(await app.core.commands.listImages(TEST_OPERATOR)).not.toContainEqual(expect.objectContaining({ name: 'poisoned' }));
    expect(task.state).toBe('running');
  });

  it('bounds a chunk file sent without a length (chunked) as it arrives', async () => {
    const { token } = await bootedTask('capture', '52:54:00:00:c1:09', 'streamed');
    expect((await call('POST', '/api/client/v1/start', token, diskFor(4 * CHUNK))).status).toBe(200);
    const piece = randomBytes(CHUNK);
    const file = encode(piece);
    const send = async (body: Buffer): Promise<Response> => {
      const parts = [body.subarray(0, 1000), body.subarray(1000)];
      const stream = new ReadableStream<Uint8Array>({
        pull(c) {
          const next = parts.shift();
          if (next) c.enqueue(new Uint8Array(next));
          else c.close();
        },
      });
      return fetch(`${base}/api/client/v1/chunks/${sha(piece)}`, {
        method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' }, body: stream, duplex: 'half',
      } as RequestInit);
    };
    const tooBig = await send(Buffer.concat([file, Buffer.alloc(maxChunkFileSize(CHUNK))]));
    expect(tooBig.status).toBe(413);
    expect(((await tooBig.json()) as { error: string }).error).toMatch(/larger than/);
    const ok = await send(file);
    expect(ok.status).toBe(201);
  });

  it('names the chunks missing at commit, and commits once they are uploaded', async () => {
    const mac = '52:54:00:00:c1:03';
    const disk = makeDisk();
    const { task, token } = await bootedTask('capture', mac, 'partial');
    expect((await call('POST', '/api/client/v1/start', token, diskFor(disk.length))).status).toBe(200);
    const pieces = piecesOf(disk);
    const data = [...new Map(pieces.filter((p) => p.hash).map((p) => [p.hash as string, p])).values()];
    const [held, ...rest] = data;
    for (const p of rest) expect((await call('PUT', `/api/client/v1/chunks/${p.hash}`, token, encode(p.data))).status).toBe(201);

    const first = await call('POST', '/api/client/v1/chunks/commit', token, listOf(pieces));
    expect(first.status).toBe(409);
    expect(first.json.missing).toEqual([held.hash]);
    expect(String(first.json.error)).toMatch(/upload/);

    // A list of the wrong length cannot be this disk's.
    const short = await call('POST', '/api/client/v1/chunks/commit', token, listOf(pieces).subarray(32));
    expect(short.status).toBe(400);
    expect(String(short.json.error)).toMatch(/chunk list is .* bytes/);
    const long = await call('POST', '/api/client/v1/chunks/commit', token, Buffer.concat([listOf(pieces), Buffer.alloc(32)]));
    expect(long.status).toBe(413);

    expect((await call('PUT', `/api/client/v1/chunks/${held.hash}`, token, encode(held.data))).json).toMatchObject({ existed: false });
    const second = await call('POST', '/api/client/v1/chunks/commit', token, listOf(pieces));
    expect(second.status, JSON.stringify(second.json)).toBe(200);
    expect(second.json).toMatchObject({ version: 1, digest: diskDigest(disk, disk.length, CHUNK) });
    const again = await call('POST', '/api/client/v1/chunks/commit', token, listOf(pieces));
    expect(again.status).toBe(409);
    expect((await call('POST', '/api/client/v1/result', token, { ok: true, digest: null })).json).toMatchObject({ state: 'done' });
    expect(task.result?.version).toBe(1);
  });

  it('checks known() requests: 1 to 1024 lowercase hashes', async () => {
    const { token } = await bootedTask('capture', '52:54:00:00:c1:04', 'asks');
    expect((await call('POST', '/api/client/v1/start', token, diskFor(4 * CHUNK))).status).toBe(200);
    expect((await call('POST', '/api/client/v1/chunks/known', token, { hashes: [] })).status).toBe(400);
    expect((await call('POST', '/api/client/v1/chunks/known', token, { hashes: ['A'.repeat(64)] })).status).toBe(400);
    const many = Array.from({ length: 1025 }, (_, i) => sha(Buffer.from(String(i))));
    expect((await call('POST', '/api/client/v1/chunks/known', token, { hashes: many })).status).toBe(400);
    const ok = await call('POST', '/api/client/v1/chunks/known', token, { hashes: many.slice(0, 1024) });
    expect(ok).toMatchObject({ status: 200, json: { known: [] } });
  });

  it('aborts the upload when the task is cancelled: the image is free and nothing was committed', async () => {
    const mac = '52:54:00:00:c1:05';
    const disk = makeDisk();
    const first = await bootedTask('capture', mac, 'dropped');
    expect((await call('POST', '/api/client/v1/start', first.token, diskFor(disk.length))).status).toBe(200);
    const p = piecesOf(disk)[0];
    expect((await call('PUT', `/api/client/v1/chunks/${p.hash}`, first.token, encode(p.data))).status).toBe(201);
    await app.core.tasks.cancel(first.task.id);
    expect((await call('PUT', `/api/client/v1/chunks/${p.hash}`, first.token, encode(p.data))).status).toBe(403);
    // A second capture of the same image can start: the first upload session ended.
    const second = await bootedTask('capture', mac, 'dropped');
    const again = await call('POST', '/api/client/v1/start', second.token, diskFor(disk.length));
    expect(again.status, JSON.stringify(again.json)).toBe(200);
    expect(await app.core.commands.listImages(TEST_OPERATOR)).not.toContainEqual(expect.objectContaining({ name: 'dropped' }));
  });

  it('refuses a second capture of an image while one is open, and the refused task says why', async () => {
    const first = await bootedTask('capture', '52:54:00:00:c1:07', 'contested');
    expect((await call('POST', '/api/client/v1/start', first.token, diskFor(4 * CHUNK))).status).toBe(200);
    const second = await bootedTask('capture', '52:54:00:00:c1:08', 'contested');
    const refused = await call('POST', '/api/client/v1/start', second.token, diskFor(4 * CHUNK));
    expect(refused.status).toBe(409);
    expect(String(refused.json.error)).toMatch(/already being captured/);
    expect(second.task.state).toBe('failed');
    expect(first.task.state).toBe('running');
  });

  it('fails a capture whose agent says ok without committing', async () => {
    const { task, token } = await bootedTask('capture', '52:54:00:00:c1:06', 'never');
    expect((await call('POST', '/api/client/v1/start', token, diskFor(4 * CHUNK))).status).toBe(200);
    expect((await call('POST', '/api/client/v1/result', token, { ok: true, digest: null })).json).toMatchObject({ state: 'failed' });
    expect(task.reason).toMatch(/never committed/);
  });
});

describe('progress and the admin API', () => {
  it('takes the transport in the API\'s task create and shows it, the counters and the summary line', async () => {
    const admin = { authorization: `Bearer ${(await app.core.commands.createApiToken(TEST_OPERATOR, 'chunks-test')).token}`, 'content-type': 'application/json' };
    const mac = '52:54:00:00:c4:01';
    const created = await fetch(`${base}/api/v1/tasks`, { method: 'POST', headers: admin, body: JSON.stringify({ kind: 'capture', mac, image: 'viaapi', transport: 'chunks' }) });
    expect(created.status).toBe(201);
    const { task } = (await created.json()) as { task: TaskRecord };
    expect(task.transport).toBe('chunks');
    const bad = await fetch(`${base}/api/v1/tasks`, { method: 'POST', headers: admin, body: JSON.stringify({ kind: 'capture', mac: '52:54:00:00:c4:02', image: 'x', transport: 'ftp' }) });
    expect(bad.status).toBe(400);

    const token = tokenOf(await bootScript(mac));
    const disk = makeDisk();
    expect((await call('POST', '/api/client/v1/start', token, diskFor(disk.length))).status).toBe(200);
    expect((await agentCapture(token, disk)).commit.status).toBe(200);
    await call('POST', '/api/client/v1/progress', token, { phase: 'transferring', examined: 3_000_000, reusedChunks: 1, sentChunks: 3, zeroChunks: 1, totalChunks: 7 });
    const shown = (await (await fetch(`${base}/api/v1/tasks/${task.id}`, { headers: admin })).json()) as TaskRecord;
    expect(shown.transport).toBe('chunks');
    expect(shown.progress).toMatchObject({ bytes: 3_000_000, total: disk.length, chunks: { reused: 1, sent: 3, zero: 1, total: 7 } });
    expect(shown.progress.wireBytes).toBeGreaterThan(0);
    expect(shown.progress.summary).toMatch(/^examined 3 MB, sent [\d.]+ [KM]B, 25 % reused$/);

    // The page counts what the PC sees: the disk covered and the bytes on the wire, and how much was already there.
    const page = taskProgress(await app.core.commands.showTask(TEST_OPERATOR, task.id)).value;
    expect(page).toMatch(/covered 2\.9 MiB of 6\.0 MiB of the disk, [\d.]+ [KM]i?B on the wire/);
    expect(page).toContain('25 % of the data already stored');
  });

  it('takes many PUTs at once, the same chunk twice among them, and commits from them', async () => {
    const { token } = await bootedTask('capture', '52:54:00:00:c4:03', 'busy');
    const disk = Buffer.alloc(8 * CHUNK);
    for (let i = 0; i < 8; i++) randomBytes(1024).copy(disk, i * CHUNK);
    expect((await call('POST', '/api/client/v1/start', token, diskFor(disk.length))).status).toBe(200);
    const pieces = piecesOf(disk);
    const puts = [...pieces, pieces[0], pieces[5]].map((p) => call('PUT', `/api/client/v1/chunks/${p.hash}`, token, encode(p.data)));
    const answers = await Promise.all(puts);
    for (const a of answers) expect(a.status, JSON.stringify(a.json)).toBe(201);
    const known = await call('POST', '/api/client/v1/chunks/known', token, { hashes: pieces.map((p) => p.hash as string) });
    expect(known.json.known).toEqual(pieces.map((p) => p.hash));
    const commit = await call('POST', '/api/client/v1/chunks/commit', token, listOf(pieces));
    expect(commit.status, JSON.stringify(commit.json)).toBe(200);
    expect(commit.json.digest).toBe(diskDigest(disk, disk.length, CHUNK));
  });
});

describe('chunk deploy', () => {
  it('serves the chunk list and the stored chunk files, which decode to the image', async () => {
    const mac = '52:54:00:00:c2:01';
    const { task, token } = await bootedTask('deploy', mac, 'golden');
    const start = await call('POST', '/api/client/v1/start', token, diskFor(golden.length + CHUNK));
    expect(start.status).toBe(200);
    const list = await download('/api/client/v1/chunks/list', token);
    expect(list.status).toBe(200);
    expect(list.body.length).toBe(7 * 32);
    const disk = Buffer.alloc(golden.length);
    const fetched = new Map<string, Promise<Buffer>>();
    let fileBytes = 0;
    for (let i = 0; i < 7; i++) {
      const entry = list.body.subarray(i * 32, i * 32 + 32);
      if (entry.every((b) => b === 0)) continue;
      const hash = entry.toString('hex');
      if (!fetched.has(hash)) {
        fetched.set(hash, download(`/api/client/v1/chunks/${hash}`, token).then((r) => {
          expect(r.status).toBe(200);
          expect(r.length).toBe(String(r.body.length));
          fileBytes += r.body.length;
          return codec.decodeChecked(r.body, hash, 'full');
        }));
      }
      (await (fetched.get(hash) as Promise<Buffer>)).copy(disk, i * CHUNK);
    }
    expect(disk.equals(golden)).toBe(true);
    expect((await call('POST', '/api/client/v1/progress', token, { phase: 'verifying', examined: golden.length, reusedChunks: 0, sentChunks: 4, zeroChunks: 2, totalChunks: 7 })).status).toBe(200);
    expect(task.state).toBe('verifying');
    const done = await call('POST', '/api/client/v1/result', token, { ok: true, digest: diskDigest(disk, golden.length, CHUNK) });
    expect(done.json).toMatchObject({ state: 'done' });
    // The server's count: the list and each chunk file it sent, as stored.
    expect(task.result?.bytesOnWire).toBe(7 * 32 + fileBytes);
    expect(progressLine(task)).toMatch(/^examined 6\.3 MB, fetched [\d.]+ [KM]B, 0 % reused$/);
  });

  it('serves only chunks the task\'s version names, and ends the transfer with the task', async () => {
    const mac = '52:54:00:00:c2:02';
    // A chunk that exists in the store, but in another image only.
    const other = Buffer.alloc(2 * CHUNK, 0x5a);
    const cap = await bootedTask('capture', '52:54:00:00:c2:03', 'elsewhere');
    expect((await call('POST', '/api/client/v1/start', cap.token, diskFor(other.length))).status).toBe(200);
    expect((await agentCapture(cap.token, other)).commit.status).toBe(200);
    expect((await call('POST', '/api/client/v1/result', cap.token, { ok: true, digest: null })).json).toMatchObject({ state: 'done' });

    const { task, token } = await bootedTask('deploy', mac, 'golden');
    expect((await call('POST', '/api/client/v1/start', token, diskFor(golden.length))).status).toBe(200);
    const foreign = await download(`/api/client/v1/chunks/${sha(other.subarray(0, CHUNK))}`, token);
    expect(foreign.status).toBe(404);
    expect((await download(`/api/client/v1/chunks/${'0'.repeat(64)}`, token)).status).toBe(404);
    expect((await download('/api/client/v1/chunks/..%2F..%2Fetc%2Fpasswd', token)).status).toBe(404);
    const mine = sha(golden.subarray(0, CHUNK));
    expect((await download(`/api/client/v1/chunks/${mine}`, token)).status).toBe(200);
    await app.core.tasks.cancel(task.id);
    expect((await download(`/api/client/v1/chunks/${mine}`, token)).status).toBe(403);
  });

  it('refuses a disk smaller than the image or with other sectors, as over NBD', async () => {
    const small = await bootedTask('deploy', '52:54:00:00:c2:05', 'golden');
    const res = await call('POST', '/api/client/v1/start', small.token, diskFor(4 * CHUNK));
    expect(res.status).toBe(409);
    expect(String(res.json.error)).toMatch(/smaller than image golden .*captured without a disk layout .* re-capture it with the imaging agent/);
    expect(small.task.state).toBe('failed');
    const odd = await bootedTask('deploy', '52:54:00:00:c2:06', 'golden');
    const sectors = await call('POST', '/api/client/v1/start', odd.token, { disk: { name: 'sda', size: golden.length, logicalSectorSize: 4096 } });
    expect(sectors.status).toBe(409);
    expect(String(sectors.json.error)).toMatch(/4096-byte sectors, image golden has 512-byte sectors: a restore between 512-byte and 4K-native sector disks is not possible/);
  });

  it('fails a deploy whose read-back differs from the version it deployed', async () => {
    const { task, token } = await bootedTask('deploy', '52:54:00:00:c2:04', 'golden');
    expect((await call('POST', '/api/client/v1/start', token, diskFor(golden.length))).status).toBe(200);
    expect((await call('POST', '/api/client/v1/result', token, { ok: true, digest: '1'.repeat(64) })).json).toMatchObject({ state: 'failed' });
    expect(task.reason).toMatch(/read-back check failed/);
  });
});

describe('who may call what', () => {
  it('refuses chunk calls without a token, with a wrong one, and before start', async () => {
    const { token } = await bootedTask('capture', '52:54:00:00:c3:01', 'guarded');
    const h = sha(Buffer.from('x'));
    expect((await call('POST', '/api/client/v1/chunks/known', null, { hashes: [h] })).status).toBe(401);
    expect((await call('POST', '/api/client/v1/chunks/known', 'B'.repeat(32), { hashes: [h] })).status).toBe(403);
    expect((await call('PUT', `/api/client/v1/chunks/${h}`, 'B'.repeat(32), encode(Buffer.from('x')))).status).toBe(403);
    const early = await call('POST', '/api/client/v1/chunks/known', token, { hashes: [h] });
    expect(early.status).toBe(409);
    expect(early.json.error).toBe('no chunk transfer is open for this task; POST start first');
  });

  it('a deploy token cannot upload or commit, a capture token cannot download', async () => {
    const dep = await bootedTask('deploy', '52:54:00:00:c3:02', 'golden');
    expect((await call('POST', '/api/client/v1/start', dep.token, diskFor(golden.length))).status).toBe(200);
    const data = golden.subarray(0, CHUNK);
    const put = await call('PUT', `/api/client/v1/chunks/${sha(data)}`, dep.token, encode(data));
    expect(put.status).toBe(403);
    expect(String(put.json.error)).toMatch(/cannot upload/);
    expect((await call('POST', '/api/client/v1/chunks/commit', dep.token, Buffer.alloc(7 * 32))).status).toBe(403);
    expect((await call('POST', '/api/client/v1/chunks/known', dep.token, { hashes: [sha(data)] })).status).toBe(403);

    const cap = await bootedTask('capture', '52:54:00:00:c3:03', 'golden');
    expect((await call('POST', '/api/client/v1/start', cap.token, diskFor(golden.length))).status).toBe(200);
    expect((await download(`/api/client/v1/chunks/${sha(data)}`, cap.token)).status).toBe(403);
    expect((await download('/api/client/v1/chunks/list', cap.token)).status).toBe(403);
  });

  it('leaves NBD tasks as they were: an nbd:// answer, and no chunk routes', async () => {
    const { token } = await bootedTask('deploy', '52:54:00:00:c3:04', 'golden', 'nbd');
    const t = await call('GET', '/api/client/v1/task?mac=52:54:00:00:c3:04', token);
    expect(t.json.transport).toBe('nbd');
    const start = await call('POST', '/api/client/v1/start', token, diskFor(golden.length));
    expect(start.status).toBe(200);
    expect(start.json.transport).toBe('nbd');
    expect(String(start.json.nbd)).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/d-/);
    expect((await download('/api/client/v1/chunks/list', token)).status).toBe(409);
  });
});
