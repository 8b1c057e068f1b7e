/**
 * The agent against a stand-in server that keeps to the chunk contract and logs every call: what it
 * uploads, what it asks for, how it answers a commit naming missing chunks, a cut connection, a
 * damaged download, a refused token. The agent runs as the thin client runs it, a child process.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { FakeServer } from './fake-server.js';
import { agentLine, agentReason, chunkFiles, chunkList, distinctChunks, makeDisk, runAgentCli, scatterChanges } from './disks.js';
import { diskDigest } from '../lib/disk-digest.js';
import { noise } from '../lib/prng.js';
import { ChunkCodecContext, chunkName } from '../../src/imaging/chunk-format.js';
import { runAgent } from '../../src/agent/run.js';
import { parseArgs } from '../../src/agent/args.js';
import { sleep } from '../lib/wait.js';

const CHUNK = 64 * 1024;
const CHUNKS = 40;
const TOKEN = 'T'.repeat(32);

let dir: string;
let servers: FakeServer[] = [];
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-agent-proto-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
afterEach(async () => {
  for (const s of servers) await s.close();
  servers = [];
});

async function serve(setup: ConstructorParameters<typeof FakeServer>[0]): Promise<FakeServer> {
  const s = await new FakeServer(setup).listen();
  servers.push(s);
  return s;
}

function args(mode: 'capture' | 'deploy', server: FakeServer, disk: string, token = TOKEN): string[] {
  return [mode, '--server', server.url, '--token', token, '--disk', disk, '--disk-name', 'sda', '--jobs', '4'];
}

/** The decoded bytes of every chunk the server holds, checked against their names. */
function decodedFiles(server: FakeServer): Map<string, Buffer> {
  const codec = new ChunkCodecContext();
  return new Map([...server.files].map(([h, f]) => [h, Buffer.from(codec.decodeChecked(f, h, 'full'))]));
}

/** A format-1 raw chunk file, as stores before issue 11 wrote them. */
function formatOneRaw(data: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.writeUInt32BE(0x4e43434b, 0);
  h.writeUInt8(1, 4);
  h.writeUInt8(0, 5);
  h.writeUInt32BE(data.length, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

describe('capture', () => {
  it('uploads each distinct non-zero chunk once, compressed, and commits the ordered list', async () => {
    const disk = makeDisk(1, CHUNK, CHUNKS);
    const file = path.join(dir, 'cap1.raw');
    await writeFile(file, disk);
    const server = await serve({ token: TOKEN, kind: 'capture', chunkSize: CHUNK, size: disk.length, knownBatch: 7 });
    const r = await runAgentCli(args('capture', server, file));
    expect(r.code, r.stderr).toBe(0);
    const distinct = distinctChunks(disk, CHUNK);
    expect(server.committed?.equals(chunkList(disk, CHUNK))).toBe(true);
    expect(server.count('PUT', '/api/client/v1/chunks/')).toBe(distinct.size);
    const files = decodedFiles(server);
    expect([...files.keys()].sort()).toEqual([...distinct].sort());
    // Compressed: the text chunks cross as a small fraction of their size.
    const textChunk = disk.subarray(4 * CHUNK, 5 * CHUNK);
    expect(server.files.get(chunkName(textChunk))!.length).toBeLessThan(CHUNK / 10);
    // Batches keep to the server's knownBatch.
    expect(server.count('POST', '/api/client/v1/chunks/known')).toBeGreaterThanOrEqual(Math.ceil(distinct.size / 7));
    const line = agentLine(r);
    expect(line).toEqual({ ok: true, digest: null, examined: disk.length, sentChunks: distinct.size, reusedChunks: CHUNKS + 1 - zeroCount(disk) - distinct.size, readBytes: disk.length, freeChunks: 0, zeroedOut: 0 });
  });

  it('re-capture after scattered changes uploads only the changed chunks', async () => {
    const before = makeDisk(2, CHUNK, CHUNKS);
    const after = Buffer.from(before);
    const changed = scatterChanges(after, 77, CHUNK, 4);
    const file = path.join(dir, 'cap2.raw');
    await writeFile(file, after);
    const server = await serve({ token: TOKEN, kind: 'capture', chunkSize: CHUNK, size: after.length, files: chunkFiles(before, CHUNK) });
    const had = new Set(server.files.keys());
    const r = await runAgentCli(args('capture', server, file));
    expect(r.code, r.stderr).toBe(0);
    const expected = new Set(changed.map((i) => chunkName(after.subarray(i * CHUNK, Math.min((i + 1) * CHUNK, after.length)))));
    const put = server.calls.filter((c) => c.method === 'PUT').map((c) => c.path.split('/').pop());
    expect(new Set(put)).toEqual(expected);
    expect(put.length).toBe(expected.size);
    expect([...expected].some((h) => had.has(h))).toBe(false);
    expect(server.committed?.equals(chunkList(after, CHUNK))).toBe(true);
    expect(agentLine(r).sentChunks).toBe(expected.size);
  });

  it('uploads the chunks a commit names as missing, read again from the disk, and commits again', async () => {
    const disk = makeDisk(3, CHUNK, CHUNKS);
    const file = path.join(dir, 'cap3.raw');
    await writeFile(file, disk);
    const server = await serve({ token: TOKEN, kind: 'capture', chunkSize: CHUNK, size: disk.length });
    const lost = [chunkName(disk.subarray(0, CHUNK)), chunkName(disk.subarray(CHUNKS * CHUNK))];
    server.loseAtCommit = new Set(lost);
    const r = await runAgentCli(args('capture', server, file));
    expect(r.code, r.stderr).toBe(0);
    expect(server.calls.filter((c) => c.path.endsWith('/commit')).map((c) => c.status)).toEqual([409, 200]);
    const commitAt = server.calls.findIndex((c) => c.path.endsWith('/commit'));
    expect(server.calls.slice(commitAt).filter((c) => c.method === 'PUT').map((c) => c.path.split('/').pop()).sort()).toEqual([...lost].sort());
    expect(server.committed?.equals(chunkList(disk, CHUNK))).toBe(true);
  });

  it('repeats an upload whose connection was cut, and the capture completes', async () => {
    const disk = makeDisk(4, CHUNK, 12);
    const file = path.join(dir, 'cap4.raw');
    await writeFile(file, disk);
    const server = await serve({ token: TOKEN, kind: 'capture', chunkSize: CHUNK, size: disk.length });
    server.cutNext = 2;
    const r = await runAgentCli(args('capture', server, file));
    expect(r.code, r.stderr).toBe(0);
    expect(server.calls.filter((c) => c.status === 0)).toHaveLength(2);
    expect(r.stderr).toMatch(/trying again/);
    expect(server.committed?.equals(chunkList(disk, CHUNK))).toBe(true);
  });

  it('refuses a wrong token with the server\'s words and exits 1', async () => {
    const disk = makeDisk(5, CHUNK, 4);
    const file = path.join(dir, 'cap5.raw');
    await writeFile(file, disk);
    const server = await serve({ token: TOKEN, kind: 'capture', chunkSize: CHUNK, size: disk.length });
    const r = await runAgentCli(args('capture', server, file, 'W'.repeat(32)));
    expect(r.code).toBe(1);
    expect(agentReason(r)).toMatch(/start: the server answered 403: this task token is not valid/);
    expect(r.stdout).toBe('');
    expect(server.files.size).toBe(0);
  });

  it('says which of capture and deploy the task is when asked the other', async () => {
    const disk = makeDisk(5, CHUNK, 4);
    const file = path.join(dir, 'cap6.raw');
    await writeFile(file, disk);
    const server = await serve({ token: TOKEN, kind: 'capture', chunkSize: CHUNK, size: disk.length });
    const r = await runAgentCli(args('deploy', server, file));
    expect(r.code).toBe(1);
    expect(agentReason(r)).toMatch(/this task is a capture, but the agent was asked to deploy/);
  });
});

describe('deploy', () => {
  async function deployOnto(target: Buffer, image: Buffer, name: string, files = chunkFiles(image, CHUNK)): Promise<{ server: FakeServer; r: Awaited<ReturnType<typeof runAgentCli>>; after: Buffer }> {
    const file = path.join(dir, name);
    await writeFile(file, target);
    const server = await serve({ token: TOKEN, kind: 'deploy', chunkSize: CHUNK, size: image.length, list: chunkList(image, CHUNK), digest: diskDigest(image, image.length, CHUNK), files });
    const r = await runAgentCli(args('deploy', server, file));
    return { server, r, after: await readFile(file) };
  }

  it('onto a random-filled disk: writes every chunk, zeroes the holes, and the read-back digest is the image\'s', async () => {
    const image = makeDisk(6, CHUNK, CHUNKS);
    const target = noise(66, image.length + 3 * CHUNK);
    const { server, r, after } = await deployOnto(target, image, 'dep1.raw');
    expect(r.code, r.stderr).toBe(0);
    expect(after.subarray(0, image.length).equals(image)).toBe(true);
    // Past the image the disk is left as it was.
    expect(after.subarray(image.length).equals(target.subarray(image.length))).toBe(true);
    const line = agentLine(r);
    expect(line.digest).toBe(diskDigest(image, image.length, CHUNK));
    const nonZero = chunkList(image, CHUNK).length / 32 - zeroCount(image);
    // Each distinct chunk is downloaded once; the image's repeated chunk is copied on the disk.
    const distinct = distinctChunks(image, CHUNK);
    const got = server.calls.filter((c) => c.method === 'GET' && /chunks\/[0-9a-f]{64}$/.test(c.path)).map((c) => c.path.split('/').pop());
    expect(got.sort()).toEqual([...distinct].sort());
    expect(distinct.size).toBeLessThan(nonZero);
    expect(line).toMatchObject({ examined: image.length, reusedChunks: nonZero - distinct.size, sentChunks: distinct.size });
    expect(server.progress.some((p) => p.phase === 'verifying')).toBe(true);
  });

  it('onto a disk holding the previous version: downloads only the chunks that differ', async () => {
    const before = makeDisk(7, CHUNK, CHUNKS);
    const image = Buffer.from(before);
    const changed = scatterChanges(image, 99, CHUNK, 3);
    const { server, r, after } = await deployOnto(before, image, 'dep2.raw');
    expect(r.code, r.stderr).toBe(0);
    expect(createHash('sha256').update(after).digest('hex')).toBe(createHash('sha256').update(image).digest('hex'));
    const got = server.calls.filter((c) => c.method === 'GET' && /chunks\/[0-9a-f]{64}$/.test(c.path)).map((c) => c.path.split('/').pop());
    expect(new Set(got)).toEqual(new Set(changed.map((i) => chunkName(image.subarray(i * CHUNK, Math.min((i + 1) * CHUNK, image.length))))));
    const line = agentLine(r);
    expect(line.sentChunks).toBe(changed.length);
    expect(line.reusedChunks).toBe(chunkList(image, CHUNK).length / 32 - zeroCount(image) - changed.length);
  });

  it('decodes format-1 chunk files of a migrated store', async () => {
    const image = makeDisk(8, CHUNK, 10);
    const files = new Map<string, Buffer>();
    for (let off = 0; off < image.length; off += CHUNK) {
      const piece = image.subarray(off, Math.min(off + CHUNK, image.length));
      if (!piece.every((b) => b === 0)) files.set(chunkName(piece), formatOneRaw(piece));
    }
    const { r, after } = await deployOnto(noise(88, image.length), image, 'dep3.raw', files);
    expect(r.code, r.stderr).toBe(0);
    expect(after.equals(image)).toBe(true);
  });

  it('refuses a damaged chunk from the server, writes none of it, and says what to do', async () => {
    const image = makeDisk(9, CHUNK, 10);
    const files = chunkFiles(image, CHUNK);
    const victim = chunkName(image.subarray(0, CHUNK));
    // A format-1 raw file with one flipped byte: nothing in the file itself can tell, only its name.
    const raw = formatOneRaw(image.subarray(0, CHUNK));
    raw[100] ^= 0xff;
    files.set(victim, raw);
    const target = noise(99, image.length);
    const { r, after } = await deployOnto(target, image, 'dep4.raw', files);
    expect(r.code).toBe(1);
    expect(agentReason(r)).toMatch(new RegExp(`chunk ${victim} \\(image chunk 0, disk byte 0\\) came from the server damaged: content hash [0-9a-f]{64} does not match chunk name.*netclone image verify`));
    expect(after.subarray(0, CHUNK).equals(target.subarray(0, CHUNK))).toBe(true);
    expect(r.stdout).toBe('');
  });

  it('fails the read-back when the version\'s digest is not what the disk holds', async () => {
    const image = makeDisk(10, CHUNK, 6);
    const file = path.join(dir, 'dep5.raw');
    await writeFile(file, image);
    const server = await serve({ token: TOKEN, kind: 'deploy', chunkSize: CHUNK, size: image.length, list: chunkList(image, CHUNK), digest: '0'.repeat(64), files: chunkFiles(image, CHUNK) });
    const r = await runAgentCli(args('deploy', server, file));
    expect(r.code).toBe(1);
    expect(agentReason(r)).toMatch(/read-back check failed: the disk's digest [0-9a-f]{64} differs from version 1's 0{64}/);
  });
});

describe('progress', () => {
  it('posts the counters while it works and none after it is done', async () => {
    const disk = makeDisk(11, CHUNK, 20);
    const file = path.join(dir, 'prog.raw');
    await writeFile(file, disk);
    const server = await serve({ token: TOKEN, kind: 'capture', chunkSize: CHUNK, size: disk.length });
    const result = await runAgent(parseArgs(args('capture', server, file)), { warn: () => undefined, progressMs: 5 });
    expect(result.sentChunks).toBe(distinctChunks(disk, CHUNK).size);
    const posted = server.progress.length;
    expect(posted).toBeGreaterThan(0);
    const last = server.progress[posted - 1];
    expect(last).toEqual({ phase: 'transferring', examined: disk.length, reusedChunks: result.reusedChunks, sentChunks: result.sentChunks, zeroChunks: zeroCount(disk), totalChunks: 21 });
    await sleep(100);
    expect(server.progress.length).toBe(posted);
  });
});

function zeroCount(disk: Buffer): number {
  let n = 0;
  for (let off = 0; off < disk.length; off += CHUNK) if (disk.subarray(off, Math.min(off + CHUNK, disk.length)).every((b) => b === 0)) n++;
  return n;
}
