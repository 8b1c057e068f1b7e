/**
 * Resuming chunk uploads (issue 11: "a transfer cut midway resumes when the task is retried; chunks
 * already uploaded are not sent again"): what one upload of an image received stays usable by the
 * next upload of the same image, after an abort, a store reopened, or a server killed with SIGKILL,
 * until a commit of the image or the journal's expiry; never by another image's upload.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { spawn } from 'node:child_process';
import { appendFile, readFile, stat, truncate, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImageStore } from '../../src/imaging/image-store.js';
import { MissingChunksError, type ChunkUpload } from '../../src/imaging/chunk-upload.js';
import { RESUME_WINDOW_MS, parseJournal } from '../../src/imaging/upload-journal.js';
import { nullLogger } from '../../src/lib/log.js';
import { tempDir, readAll, chunkPaths } from './helpers.js';
import { RESUME_CHUNK, resumeDisk, resumeChunks, encodeResumeChunk } from './fixtures/resume-disk.js';
import { noise } from '../lib/prng.js';

const CHILD = fileURLToPath(new URL('./fixtures/upload-child.ts', import.meta.url));
const disk = resumeDisk();
const chunks = resumeChunks(disk);
const list: (string | null)[] = Array.from({ length: Math.ceil(disk.length / RESUME_CHUNK) }, () => null);
for (const c of chunks) list[c.index] = c.hash;
const all = chunks.map((c) => c.hash);
const fileOf = new Map(chunks.map((c) => [c.hash, encodeResumeChunk(c.data)]));

/** Puts the data chunks the upload does not know; returns their hashes. */
async function sendMissing(up: ChunkUpload): Promise<string[]> {
  const known = await up.known(all);
  const sent = all.filter((h) => !known.has(h));
  await Promise.all(sent.map((h) => up.put(h, fileOf.get(h) as Buffer)));
  return sent;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

describe('resumed chunk uploads', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  const storeDir = (): string => join(dir, 'store');
  const journal = (image: string): string => join(storeDir(), 'uploads', `${image}.journal`);
  const open = (): Promise<ImageStore> => ImageStore.open(storeDir(), { logger: nullLogger(), chunkSize: RESUME_CHUNK });
  /** Chunk files every committed version names. */
  const named = async (): Promise<string[]> => {
    const out = new Set<string>();
    for (const s of await store.list()) {
      for (const v of await store.versions(s.name)) {
        const r = await store.openVersion(s.name, v);
        for (const e of r.entries()) out.add(store.chunks.pathOf(e.hash.toString('hex')));
        r.close();
      }
    }
    return [...out].sort();
  };
  /** An upload of "pc" that put the first `n` data chunks and was aborted. */
  const cutUpload = async (n: number, image = 'pc'): Promise<string[]> => {
    const up = store.beginUpload(image, { size: disk.length, source: 'agent' });
    const put = all.slice(0, n);
    for (const h of put) await up.put(h, fileOf.get(h) as Buffer);
    await up.abort('cable pulled');
    return put;
  };
  const age = async (image: string): Promise<void> => {
    const past = new Date(Date.now() - RESUME_WINDOW_MS - 60_000);
    await utimes(journal(image), past, past);
  };

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('resume'));
    store = await open();
  });
  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('the next upload of the image knows what an aborted one sent, gc in between, and commits without it being sent again', async () => {
    const put = await cutUpload(5);
    expect((await store.gc()).removedChunks).toBe(0);
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect(await up.known(all)).toEqual(new Set(put));
    const sent = await sendMissing(up);
    expect(sent).toEqual(all.slice(5));
    expect(up.bytesUploaded).toBe(sent.reduce((n, h) => n + (fileOf.get(h) as Buffer).length, 0));
    await up.commit(list);
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
    expect((await store.verify('pc')).ok).toBe(true);
    // The commit made them part of a version: the journal is gone, and nothing is left over.
    expect(await exists(journal('pc'))).toBe(false);
    await store.gc();
    expect(await chunkPaths(storeDir())).toEqual(await named());
    expect(store.chunks.provisionalCount).toBe(0);
  });

  it('commit accepts journaled chunks even when the client never asked known()', async () => {
    await cutUpload(5);
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    for (const h of all.slice(5)) await up.put(h, fileOf.get(h) as Buffer);
    await up.commit(list);
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
  });

  it('a store reopened (a restarted server) still knows them, past a torn last journal line, and appends after it', async () => {
    const put = await cutUpload(3);
    await store.close();
    // A crash mid-append: half a line, and zeros where a length was.
    await appendFile(journal('pc'), `${all[6]} 65536 6`);
    store = await open();
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect(await up.known(all)).toEqual(new Set(put));
    await up.put(all[3], fileOf.get(all[3]) as Buffer);
    await up.abort('cut again');
    await store.close();
    await appendFile(journal('pc'), '\0\0\0\0');
    store = await open();
    await store.gc();
    const up2 = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect(await up2.known(all)).toEqual(new Set([...put, all[3]]));
    expect(await sendMissing(up2)).toEqual(all.slice(4));
    await up2.commit(list);
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
  });

  it('a server killed with SIGKILL mid-upload: the next upload knows every chunk whose put was answered', async () => {
    await store.close();
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, storeDir(), '5'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const answered: string[] = [];
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        const lines = buf.split('\n');
        buf = lines.pop() ?? '';
        for (const l of lines) {
          if (l.startsWith('put ')) answered.push(l.slice(4));
          if (l === 'ready') resolve();
        }
      });
      child.on('exit', (code) => reject(new Error(`upload child exited ${code} before it was killed: ${err}`)));
    });
    const exited = new Promise((r) => child.on('exit', r));
    process.kill(child.pid as number, 'SIGKILL');
    await exited;
    expect(answered).toEqual(all.slice(0, 5));
    store = await open();
    await store.gc();
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect(await up.known(all)).toEqual(new Set(answered));
    expect(await sendMissing(up)).toEqual(all.slice(5));
    await up.commit(list);
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
    expect((await store.verify('pc')).ok).toBe(true);
  }, 60_000);

  it('an expired journal: gc removes it and its chunks, and the next upload sends everything', async () => {
    await cutUpload(5);
    await age('pc');
    expect((await store.gc()).removedChunks).toBe(5);
    expect(await exists(journal('pc'))).toBe(false);
    expect(await chunkPaths(storeDir())).toEqual([]);
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect(await up.known(all)).toEqual(new Set());
    await up.abort('test');
  });

  it('an upload that finds its journal expired does not count it, and its own lines do not revive the old ones', async () => {
    await cutUpload(5);
    await age('pc');
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect(await up.known(all)).toEqual(new Set());
    await up.put(all[7], fileOf.get(all[7]) as Buffer);
    await up.abort('test');
    expect([...parseJournal(await readFile(journal('pc'), 'latin1')).entries.keys()]).toEqual([all[7]]);
    await store.gc();
    expect(await chunkPaths(storeDir())).toEqual([store.chunks.pathOf(all[7])]);
  });

  it("another image's upload does not see them, and cannot commit them unsent", async () => {
    await cutUpload(5);
    const other = store.beginUpload('other', { size: disk.length, source: 'agent' });
    expect(await other.known(all)).toEqual(new Set());
    const err = await other.commit(list).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MissingChunksError);
    expect([...(err as MissingChunksError).missing].sort()).toEqual([...all].sort());
    await other.abort('test');
    // And pc's own next upload still does.
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect(await up.known(all)).toEqual(new Set(all.slice(0, 5)));
    await up.abort('test');
  });

  it('a journaled chunk whose file is missing or damaged is not known, and commit asks the client for it', async () => {
    const put = await cutUpload(5);
    await unlink(store.chunks.pathOf(put[1]));
    await truncate(store.chunks.pathOf(put[3]), 100);
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect(await up.known(all)).toEqual(new Set([put[0], put[2], put[4]]));
    const err = await up.commit(list).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MissingChunksError);
    expect([...(err as MissingChunksError).missing].sort()).toEqual([put[1], put[3], ...all.slice(5)].sort());
    expect(up.status).toBe('open');
    expect(await sendMissing(up)).toEqual([put[1], put[3], ...all.slice(5)]);
    await up.commit(list);
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
    expect((await store.verify('pc')).ok).toBe(true);
  });

  it('a journaled chunk removed between known() and commit is asked for at commit', async () => {
    const put = await cutUpload(5);
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect(await sendMissing(up)).toEqual(all.slice(5));
    await unlink(store.chunks.pathOf(put[0]));
    await expect(up.commit(list)).rejects.toThrow(MissingChunksError);
    await up.put(put[0], fileOf.get(put[0]) as Buffer);
    await up.commit(list);
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
  });

  it('a commit drops journal entries it does not list: gc removes their files', async () => {
    const stray = noise(4242, RESUME_CHUNK);
    const strayHash = resumeChunks(stray)[0].hash;
    const up1 = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    await up1.put(strayHash, encodeResumeChunk(stray));
    await up1.put(all[0], fileOf.get(all[0]) as Buffer);
    await up1.abort('test');
    const up2 = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect(await sendMissing(up2)).toEqual(all.slice(1));
    await up2.commit(list);
    expect(await exists(store.chunks.pathOf(strayHash))).toBe(true);
    expect((await store.gc()).removedChunks).toBe(1);
    expect(await chunkPaths(storeDir())).toEqual(await named());
    const up3 = store.beginUpload('pc', { size: RESUME_CHUNK, source: 'agent' });
    expect(await up3.known([strayHash])).toEqual(new Set());
    await up3.abort('test');
  });

  it('renaming the image moves its journal (a stale one under the new name is dropped); removing it drops it', async () => {
    const first = await (async () => {
      const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
      await sendMissing(up);
      return up.commit(list);
    })();
    expect(first.version).toBe(1);
    // A cut second capture of pc with two new chunks.
    const changed = Buffer.from(disk);
    noise(77, RESUME_CHUNK).copy(changed, 0);
    noise(78, RESUME_CHUNK).copy(changed, 4 * RESUME_CHUNK);
    const fresh = resumeChunks(changed).filter((c) => !all.includes(c.hash));
    expect(fresh).toHaveLength(2);
    const cut = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    for (const c of fresh) await cut.put(c.hash, encodeResumeChunk(c.data));
    await cut.abort('test');
    // "desk" never committed, but a cut first upload left a journal.
    const stray = noise(555, RESUME_CHUNK);
    const strayHash = resumeChunks(stray)[0].hash;
    const ghost = store.beginUpload('desk', { size: RESUME_CHUNK, source: 'agent' });
    await ghost.put(strayHash, encodeResumeChunk(stray));
    await ghost.abort('test');
    await store.renameImage('pc', 'desk');
    expect(await exists(journal('pc'))).toBe(false);
    const desk = store.beginUpload('desk', { size: disk.length, source: 'agent' });
    expect(await desk.known([...fresh.map((c) => c.hash), strayHash])).toEqual(new Set(fresh.map((c) => c.hash)));
    await desk.abort('test');
    const pc = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect(await pc.known([...all, ...fresh.map((c) => c.hash)])).toEqual(new Set());
    await pc.abort('test');
    await store.gc();
    expect(await exists(store.chunks.pathOf(strayHash))).toBe(false);
    await store.remove('desk');
    expect(await exists(journal('desk'))).toBe(false);
    await store.gc();
    expect(await chunkPaths(storeDir())).toEqual([]);
  });
});

describe('upload journal lines', () => {
  const h = (c: string): string => c.repeat(64);
  it('counts whole, well-formed lines only: a torn last line, zeros and garbage are skipped', () => {
    const text = [`${h('a')} 65536 1200\n`, 'garbage\n', `${h('B')} 65536 1200\n`, `${h('c')} 0 12\n`, '\0\0\0\n', `${h('d')} 4096 4100\n`, `${h('e')} 65536 12`].join('');
    const { entries, torn } = parseJournal(text);
    expect([...entries]).toEqual([
      [h('a'), { length: 65536, stored: 1200 }],
      [h('d'), { length: 4096, stored: 4100 }],
    ]);
    expect(torn).toBe(true);
    expect(parseJournal(`${h('a')} 1 2\n`).torn).toBe(false);
    expect(parseJournal('').entries.size).toBe(0);
  });
});
