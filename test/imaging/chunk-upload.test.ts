/**
 * Chunk uploads (the store side of the imaging agent's capture) and chunk files for deploy, against a
 * real store in a temp dir. The "client" here is a few lines that do what the agent will: cut the disk
 * into chunks, skip zero ones, ask known(), encode and put the rest in the store's chunk format, commit
 * the list.
 */
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { readdir, readFile, rm, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { ImageStore } from '../../src/imaging/image-store.js';
import { ChunkUploadError, MissingChunksError, type ChunkUpload } from '../../src/imaging/chunk-upload.js';
import { CHUNK_HEADER_SIZE, ChunkCodecContext, maxChunkFileSize } from '../../src/imaging/chunk-format.js';
import { RESUME_WINDOW_MS } from '../../src/imaging/upload-journal.js';
import { nullLogger } from '../../src/lib/log.js';
import { tempDir, compressible, sha256, readAll, chunkPaths } from './helpers.js';

const CHUNK = 64 * 1024;
const codec = new ChunkCodecContext();

/** The chunk file the agent would send for `data` (format 2, zstd with its content checksum). */
function encodeChunk(data: Buffer, level = 3): Buffer {
  const [header, payload] = codec.encode(data, level, Buffer.allocUnsafe(maxChunkFileSize(data.length) - CHUNK_HEADER_SIZE));
  return Buffer.concat([header, payload]);
}

/** A format-1 raw chunk file, as stores up to issue 10 wrote them. */
function formatOneChunk(data: Buffer): Buffer {
  const h = Buffer.alloc(CHUNK_HEADER_SIZE);
  h.write('NCCK', 0, 'latin1');
  h.writeUInt8(1, 4);
  h.writeUInt8(0, 5);
  h.writeUInt32BE(data.length, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

function chunksOf(disk: Buffer): (Buffer | null)[] {
  const out: (Buffer | null)[] = [];
  for (let o = 0; o < disk.length; o += CHUNK) {
    const c = disk.subarray(o, Math.min(disk.length, o + CHUNK));
    out.push(c.every((b) => b === 0) ? null : c);
  }
  return out;
}

/** What the agent does for a capture; returns the hashes it had to send. */
async function uploadDisk(up: ChunkUpload, disk: Buffer): Promise<{ sent: string[]; list: (string | null)[] }> {
  const chunks = chunksOf(disk);
  const list = chunks.map((c) => (c === null ? null : sha256(c)));
  const known = await up.known(list.filter((h): h is string => h !== null));
  const sent: string[] = [];
  await Promise.all(
    chunks.map(async (c, i) => {
      const h = list[i];
      if (c === null || h === null || known.has(h) || sent.includes(h)) return;
      sent.push(h);
      await up.put(h, encodeChunk(c));
    }),
  );
  return { sent, list };
}

/** 5 chunks and a short one: random, text, zeroes, random, text, short random tail. */
function sampleDisk(seed = 1): Buffer {
  return Buffer.concat([randomBytes(CHUNK), compressible(CHUNK, seed), Buffer.alloc(CHUNK), randomBytes(CHUNK), compressible(CHUNK, seed + 1), randomBytes(1000)]);
}

/** Makes every upload journal of the store older than the resume window, as a week without retries would. */
async function ageJournals(storeDir: string): Promise<void> {
  const dir = join(storeDir, 'uploads');
  const past = new Date(Date.now() - RESUME_WINDOW_MS - 60_000);
  for (const f of await readdir(dir)) await utimes(join(dir, f), past, past);
}

async function readStream(s: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of s) parts.push(p as Buffer);
  return Buffer.concat(parts);
}

/** Chunk file paths every committed version of `names` uses. */
async function namedPaths(store: ImageStore, names: string[]): Promise<string[]> {
  const out = new Set<string>();
  for (const n of names) {
    for (const v of await store.versions(n)) {
      const r = await store.openVersion(n, v);
      for (const e of r.entries()) out.add(store.chunks.pathOf(e.hash.toString('hex')));
      r.close();
    }
  }
  return [...out].sort();
}

describe('chunk uploads', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  const storeDir = (): string => join(dir, 'store');
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('upload'));
    store = await ImageStore.open(storeDir(), { logger: nullLogger(), chunkSize: CHUNK });
  });
  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('upload and commit read back byte-exact, with zero chunks and a short last chunk', async () => {
    const disk = sampleDisk();
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect(up.chunkCount).toBe(6);
    expect(up.chunkSize).toBe(CHUNK);
    const { sent, list } = await uploadDisk(up, disk);
    expect(sent).toHaveLength(5);
    expect(list[2]).toBeNull();
    const info = await up.commit(list);
    expect(info.version).toBe(1);
    expect(info.size).toBe(disk.length);
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
    expect((await store.verify('pc')).ok).toBe(true);
    expect(await chunkPaths(storeDir())).toEqual(await namedPaths(store, ['pc']));
    expect(up.status).toBe('committed');
    // The image is free again.
    store.beginUpload('pc', { size: disk.length, source: 'agent' }).abort('test');
  });

  it('the digest of an uploaded version equals a capture of the same disk', async () => {
    const disk = sampleDisk(3);
    const up = store.beginUpload('up', { size: disk.length, source: 'agent' });
    const info = await up.commit((await uploadDisk(up, disk)).list);
    const cap = store.beginCapture('cap', { size: disk.length, source: 'nbd' });
    await cap.write(0, disk);
    const capInfo = await cap.commit();
    expect(info.digest).toBe(capInfo.digest);
    expect(info.dataBytes).toBe(capInfo.dataBytes);
  });

  it('a re-capture sends only the changed chunks, using the previous version for the rest', async () => {
    const disk = sampleDisk();
    const up1 = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    await up1.commit((await uploadDisk(up1, disk)).list);
    const changed = Buffer.from(disk);
    randomBytes(100).copy(changed, CHUNK + 500); // chunk 1
    changed.fill(0, 3 * CHUNK, 4 * CHUNK); // chunk 3 becomes zero
    compressible(CHUNK, 99).copy(changed, 2 * CHUNK); // the zero chunk gets data
    const up2 = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    const { sent, list } = await uploadDisk(up2, changed);
    expect(sent.sort()).toEqual([sha256(changed.subarray(CHUNK, 2 * CHUNK)), sha256(changed.subarray(2 * CHUNK, 3 * CHUNK))].sort());
    const info = await up2.commit(list);
    expect(info.version).toBe(2);
    expect((await readAll(store, 'pc', 2)).equals(changed)).toBe(true);
    expect((await readAll(store, 'pc', 1)).equals(disk)).toBe(true);
    expect((await store.verify('pc')).ok).toBe(true);
    await store.gc();
    expect(await chunkPaths(storeDir())).toEqual(await namedPaths(store, ['pc']));
  });

  it('a same-size disk uploaded with an identical chunk sends it once, existed on a repeat', async () => {
    const c = randomBytes(CHUNK);
    const disk = Buffer.concat([c, c, c]);
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    const first = await up.put(sha256(c), encodeChunk(c));
    expect(first.existed).toBe(false);
    const again = await up.put(sha256(c), encodeChunk(c));
    expect(again.existed).toBe(true);
    expect(again.stored).toBe(first.stored);
    await up.commit([sha256(c), sha256(c), sha256(c)]);
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
    // One count for the session, however often it was sent: gc keeps it, nothing is left provisional.
    expect(store.chunks.provisionalCount).toBe(0);
  });

  describe('refuses a corrupted upload, storing nothing', () => {
    const data = compressible(CHUNK, 5);
    const good = (): Buffer => encodeChunk(data);
    const cases: [string, () => { hash: string; file: Buffer }, RegExp][] = [
      ['a sha256 that is not the content', () => ({ hash: sha256(randomBytes(16)), file: good() }), /does not match chunk name/],
      [
        'a flipped payload byte',
        () => {
          const f = good();
          f[CHUNK_HEADER_SIZE + Math.floor((f.length - CHUNK_HEADER_SIZE) / 2)] ^= 0x40;
          return { hash: sha256(data), file: f };
        },
        /checksum|does not decode|does not match/,
      ],
      ['a format-1 file', () => ({ hash: sha256(data), file: formatOneChunk(data) }), /format 1; uploads must be format 2/],
      [
        'a decoded length over the chunk size',
        () => {
          const big = compressible(CHUNK + 4096, 6);
          return { hash: sha256(big), file: encodeChunk(big) };
        },
        /more than the 65536-byte chunk size/,
      ],
      ['a garbage header', () => ({ hash: sha256(data), file: randomBytes(2000) }), /bad magic/],
      ['a truncated file', () => ({ hash: sha256(data), file: good().subarray(0, good().length - 10) }), /truncated/],
      ['a file shorter than a header', () => ({ hash: sha256(data), file: good().subarray(0, 9) }), /shorter than its/],
      ['a padded file', () => ({ hash: sha256(data), file: Buffer.concat([good(), Buffer.alloc(3)]) }), /truncated or padded/],
      ['an oversized file', () => ({ hash: sha256(data), file: Buffer.alloc(maxChunkFileSize(CHUNK) + 1) }), /larger than any/],
      ['a name that is not a hash', () => ({ hash: 'ABC', file: good() }), /not a lowercase hex sha256/],
    ];
    for (const [what, make, reason] of cases) {
      it(what, async () => {
        const up = store.beginUpload('pc', { size: 2 * CHUNK, source: 'agent' });
        const { hash, file } = make();
        const err = await up.put(hash, file).then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(ChunkUploadError);
        expect((err as Error).message).toMatch(reason);
        expect(await chunkPaths(storeDir())).toEqual([]);
        expect(await readdir(join(storeDir(), 'tmp'))).toEqual([]);
        // The session stays usable: a good chunk after a refused one is stored.
        await up.put(sha256(data), good());
        expect(await chunkPaths(storeDir())).toHaveLength(1);
        await up.abort('test');
        // The good one is kept for the next upload of the image (its journal), until the journal expires.
        expect(await chunkPaths(storeDir())).toEqual([store.chunks.pathOf(sha256(data))]);
        await ageJournals(storeDir());
        await store.gc();
        expect(await chunkPaths(storeDir())).toEqual([]);
      });
    }
  });

  it('commit names a missing chunk; after it is uploaded the same session commits', async () => {
    const disk = sampleDisk();
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    const chunks = chunksOf(disk);
    const list = chunks.map((c) => (c === null ? null : sha256(c)));
    for (let i = 0; i < chunks.length; i++) if (i !== 4 && chunks[i] !== null) await up.put(list[i] as string, encodeChunk(chunks[i] as Buffer));
    const err = await up.commit(list).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MissingChunksError);
    expect((err as MissingChunksError).missing).toEqual([list[4]]);
    expect((err as Error).message).toContain(list[4] as string);
    expect(up.status).toBe('open');
    await up.put(list[4] as string, encodeChunk(chunks[4] as Buffer));
    await up.commit(list);
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
  });

  it('commit refuses a chunk of the wrong length at its position and a list of the wrong length; the session stays open', async () => {
    const disk = sampleDisk();
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    const { list } = await uploadDisk(up, disk);
    const wrongTail = [...list];
    wrongTail[5] = list[0]; // a full chunk where the 1000-byte tail belongs
    await expect(up.commit(wrongTail)).rejects.toThrow(/decodes to 65536 bytes; chunk 5 .* is 1000 bytes/);
    const shortInMiddle = [...list];
    shortInMiddle[0] = list[5];
    await expect(up.commit(shortInMiddle)).rejects.toThrow(/decodes to 1000 bytes; chunk 0 .* is 65536 bytes/);
    await expect(up.commit(list.slice(1))).rejects.toThrow(/chunk list has 5 entries/);
    await expect(up.commit(list.map((h, i) => (i === 1 ? 'x' : h)))).rejects.toThrow(/entry 1 is neither null nor/);
    expect(up.status).toBe('open');
    await up.commit(list);
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
  });

  it("known() does not reveal chunks of other images, and commit does not accept them unsent", async () => {
    const disk = sampleDisk();
    const a = store.beginUpload('a', { size: disk.length, source: 'agent' });
    const { list } = await uploadDisk(a, disk);
    await a.commit(list);
    const data = list.filter((h): h is string => h !== null);
    const b = store.beginUpload('b', { size: disk.length, source: 'agent' });
    expect(await b.known(data)).toEqual(new Set());
    const err = await b.commit(list).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MissingChunksError);
    expect([...(err as MissingChunksError).missing].sort()).toEqual([...new Set(data)].sort());
    // Sending them anyway works (they exist: nothing is written again).
    const { sent } = await uploadDisk(b, disk);
    expect(sent).toHaveLength(5);
    await b.commit(list);
    expect((await readAll(store, 'b')).equals(disk)).toBe(true);
    // And a's own next session knows them.
    const a2 = store.beginUpload('a', { size: disk.length, source: 'agent' });
    expect(await a2.known(data)).toEqual(new Set(data));
    await a2.abort('test');
    expect(await chunkPaths(storeDir())).toEqual(await namedPaths(store, ['a', 'b']));
  });

  it('gc during an open session keeps its uploaded chunks; after abort they stay until the journal expires', async () => {
    const shared = randomBytes(CHUNK);
    const base = Buffer.concat([shared, randomBytes(CHUNK)]);
    const a = store.beginUpload('a', { size: base.length, source: 'agent' });
    await a.commit((await uploadDisk(a, base)).list);
    const committed = await chunkPaths(storeDir());
    const disk = Buffer.concat([shared, randomBytes(CHUNK), compressible(CHUNK, 8)]);
    const up = store.beginUpload('b', { size: disk.length, source: 'agent' });
    const { list } = await uploadDisk(up, disk);
    const before = await chunkPaths(storeDir());
    expect(before).toHaveLength(4);
    const g = await store.gc();
    expect(g.removedChunks).toBe(0);
    expect(await chunkPaths(storeDir())).toEqual(before);
    await up.abort('client went away');
    expect(up.status).toBe('aborted');
    await expect(up.commit(list)).rejects.toThrow(/aborted \(client went away\)/);
    expect(await chunkPaths(storeDir())).toEqual(before);
    expect((await store.gc()).removedChunks).toBe(0);
    expect(await chunkPaths(storeDir())).toEqual(before);
    await ageJournals(storeDir());
    expect((await store.gc()).removedChunks).toBe(2);
    expect(await chunkPaths(storeDir())).toEqual(committed);
    expect(await chunkPaths(storeDir())).toEqual(await namedPaths(store, ['a', 'b']));
    expect(store.chunks.provisionalCount).toBe(0);
    expect((await readAll(store, 'a')).equals(base)).toBe(true);
  });

  it('gc while puts are in flight and before commit loses nothing', async () => {
    const disk = Buffer.concat(Array.from({ length: 12 }, (_, i) => (i % 3 === 0 ? randomBytes(CHUNK) : compressible(CHUNK, i))));
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    const [uploaded] = await Promise.all([uploadDisk(up, disk), store.gc(), store.gc()]);
    await store.gc();
    await up.commit(uploaded.list);
    await store.gc();
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
    expect(await chunkPaths(storeDir())).toEqual(await namedPaths(store, ['pc']));
  });

  it('chunks only the previous version names stay until commit even if that version is removed and gc runs', async () => {
    const disk = sampleDisk();
    const up1 = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    await up1.commit((await uploadDisk(up1, disk)).list);
    const second = Buffer.from(disk);
    randomBytes(10).copy(second, 0);
    const up2 = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    const { sent, list } = await uploadDisk(up2, second);
    expect(sent).toHaveLength(1);
    await store.removeVersion('pc', 1);
    expect((await store.gc()).removedChunks).toBe(0);
    await up2.commit(list);
    expect((await readAll(store, 'pc')).equals(second)).toBe(true);
    await store.gc();
    expect(await chunkPaths(storeDir())).toEqual(await namedPaths(store, ['pc']));
  });

  it('the previous version pruned by another commit meanwhile still serves as known', async () => {
    const s2 = await ImageStore.open(join(dir, 'store2'), { logger: nullLogger(), chunkSize: CHUNK, keepVersions: 1 });
    try {
      const disk = sampleDisk();
      const up1 = s2.beginUpload('pc', { size: disk.length, source: 'agent' });
      await up1.commit((await uploadDisk(up1, disk)).list);
      const up2 = s2.beginUpload('pc', { size: disk.length, source: 'agent' });
      const second = Buffer.from(disk);
      second.fill(7, 0, 100);
      const { list } = await uploadDisk(up2, second);
      await s2.gc();
      const info = await up2.commit(list);
      expect(await s2.versions('pc')).toEqual([info.version]);
      expect((await readAll(s2, 'pc')).equals(second)).toBe(true);
      await s2.gc();
      expect((await s2.verify('pc')).ok).toBe(true);
    } finally {
      await s2.close();
    }
  });

  it('two sessions for two images share chunks; one aborting keeps what the other committed', async () => {
    const shared = [randomBytes(CHUNK), compressible(CHUNK, 11)];
    const diskA = Buffer.concat([shared[0], shared[1], randomBytes(CHUNK)]);
    const diskB = Buffer.concat([shared[1], shared[0], randomBytes(CHUNK), randomBytes(500)]);
    const a = store.beginUpload('a', { size: diskA.length, source: 'agent' });
    const b = store.beginUpload('b', { size: diskB.length, source: 'agent' });
    const [ua, ub] = await Promise.all([uploadDisk(a, diskA), uploadDisk(b, diskB)]);
    expect(ua.sent).toHaveLength(3);
    expect(ub.sent).toHaveLength(4);
    await a.commit(ua.list);
    await store.gc();
    await b.abort('test');
    // b's own chunks wait for b's next upload; once that journal expires only a's are left.
    expect(await chunkPaths(storeDir())).toHaveLength(5);
    await ageJournals(storeDir());
    await store.gc();
    expect(await chunkPaths(storeDir())).toEqual(await namedPaths(store, ['a', 'b']));
    expect((await readAll(store, 'a')).equals(diskA)).toBe(true);
    // And both committing.
    const b2 = store.beginUpload('b', { size: diskB.length, source: 'agent' });
    const c = store.beginUpload('c', { size: diskA.length, source: 'agent' });
    const [ub2, uc] = await Promise.all([uploadDisk(b2, diskB), uploadDisk(c, diskA)]);
    await Promise.all([b2.commit(ub2.list), c.commit(uc.list), store.gc()]);
    expect((await readAll(store, 'b')).equals(diskB)).toBe(true);
    expect((await readAll(store, 'c')).equals(diskA)).toBe(true);
    await store.gc();
    expect(await chunkPaths(storeDir())).toEqual(await namedPaths(store, ['a', 'b', 'c']));
    expect(store.chunks.provisionalCount).toBe(0);
  });

  it('a second upload or capture of the same image is refused while one is open', async () => {
    const up = store.beginUpload('pc', { size: CHUNK, source: 'agent' });
    expect(() => store.beginUpload('pc', { size: CHUNK, source: 'agent' })).toThrow(/already being captured by a chunk upload/);
    expect(() => store.beginCapture('pc', { size: CHUNK, source: 'nbd' })).toThrow(/already being captured by a chunk upload/);
    await up.abort('test');
    const cap = store.beginCapture('pc', { size: CHUNK, source: 'nbd' });
    expect(() => store.beginUpload('pc', { size: CHUNK, source: 'agent' })).toThrow(/already being captured/);
    await cap.abort('test');
    expect(() => store.beginUpload('bad/name', { size: CHUNK, source: 'agent' })).toThrow();
    expect(() => store.beginUpload('pc', { size: 0, source: 'agent' })).toThrow(/out of range/);
    expect(() => store.beginUpload('pc', { size: CHUNK, sectorSize: 1024 as 512, source: 'agent' })).toThrow(/sector size/);
  });

  it('an image with an open upload cannot be removed; closing the store aborts the upload, which the next upload resumes', async () => {
    const disk = sampleDisk();
    const up1 = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    await up1.commit((await uploadDisk(up1, disk)).list);
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    await up.put(sha256(Buffer.alloc(CHUNK, 9)), encodeChunk(Buffer.alloc(CHUNK, 9)));
    await expect(store.remove('pc')).rejects.toThrow(/is being captured/);
    await store.close();
    expect(up.status).toBe('aborted');
    store = await ImageStore.open(storeDir(), { logger: nullLogger(), chunkSize: CHUNK });
    await store.gc();
    const extra = store.chunks.pathOf(sha256(Buffer.alloc(CHUNK, 9)));
    expect(await chunkPaths(storeDir())).toEqual([...(await namedPaths(store, ['pc'])), extra].sort());
    const again = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect(await again.known([sha256(Buffer.alloc(CHUNK, 9))])).toEqual(new Set([sha256(Buffer.alloc(CHUNK, 9))]));
    await again.abort('test');
    await ageJournals(storeDir());
    await store.gc();
    expect(await chunkPaths(storeDir())).toEqual(await namedPaths(store, ['pc']));
  });

  it('a commit under way refuses new puts and known(); an abort meanwhile waits and leaves the commit standing', async () => {
    const disk = sampleDisk();
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    const { list } = await uploadDisk(up, disk);
    const committing = up.commit(list);
    expect(up.status).toBe('committing');
    await expect(up.put(sha256(Buffer.alloc(CHUNK, 1)), encodeChunk(Buffer.alloc(CHUNK, 1)))).rejects.toThrow(/is committing/);
    await expect(up.known([list[0] as string])).rejects.toThrow(/is committing/);
    await expect(up.commit(list)).rejects.toThrow(/is committing/);
    await up.abort('too late');
    expect(up.status).toBe('committed');
    expect((await committing).version).toBe(1);
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
  });

  it('puts in flight when commit starts are waited for and count', async () => {
    const disk = sampleDisk();
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    const chunks = chunksOf(disk);
    const list = chunks.map((c) => (c === null ? null : sha256(c)));
    const puts = chunks.map((c, i) => (c === null ? Promise.resolve() : up.put(list[i] as string, encodeChunk(c))));
    const info = await up.commit(list);
    await Promise.all(puts);
    expect(info.version).toBe(1);
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
    expect(store.chunks.provisionalCount).toBe(0);
  });

  it('commit asks again for a known chunk that vanished from disk', async () => {
    const disk = sampleDisk();
    const up1 = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    const { list } = await uploadDisk(up1, disk);
    await up1.commit(list);
    const up2 = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    expect((await uploadDisk(up2, disk)).sent).toEqual([]);
    await unlink(store.chunks.pathOf(list[0] as string));
    await expect(up2.commit(list)).rejects.toThrow(MissingChunksError);
    expect(await up2.known([list[0] as string])).toEqual(new Set());
    await up2.put(list[0] as string, encodeChunk(disk.subarray(0, CHUNK)));
    await up2.commit(list);
    expect((await readAll(store, 'pc')).equals(disk)).toBe(true);
  });
});

describe('chunk files for deploy', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('chunkfile'));
    store = await ImageStore.open(join(dir, 'store'), { logger: nullLogger(), chunkSize: CHUNK });
  });
  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('streams the exact stored file, which decodes to the chunk', async () => {
    const disk = sampleDisk();
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    await up.commit((await uploadDisk(up, disk)).list);
    const r = await store.openVersion('pc');
    try {
      expect(r.chunkCount).toBe(6);
      let data = 0;
      for (let i = 0; i < r.chunkCount; i++) {
        const h = r.chunkHash(i);
        const want = disk.subarray(i * CHUNK, Math.min(disk.length, (i + 1) * CHUNK));
        if (h === null) {
          expect(want.every((b) => b === 0)).toBe(true);
          continue;
        }
        data++;
        const f = await store.chunkFile(h, r);
        const got = await readStream(f.stream());
        expect(got.length).toBe(f.size);
        expect(got.equals(await readFile(store.chunks.pathOf(h)))).toBe(true);
        expect(codec.decodeChecked(got, h, 'full').equals(want)).toBe(true);
        // The stream can be opened again.
        expect((await readStream(f.stream())).equals(got)).toBe(true);
      }
      expect(data).toBe(5);
    } finally {
      r.close();
    }
  });

  it("refuses a chunk the version does not name, and a closed reader's", async () => {
    const disk = sampleDisk();
    const other = randomBytes(CHUNK);
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    await up.commit((await uploadDisk(up, disk)).list);
    const up2 = store.beginUpload('other', { size: CHUNK, source: 'agent' });
    await up2.commit((await uploadDisk(up2, other)).list);
    const r = await store.openVersion('pc');
    await expect(store.chunkFile(sha256(other), r)).rejects.toThrow(/has no chunk/);
    await expect(store.chunkFile('../../etc/passwd', r)).rejects.toThrow(/has no chunk/);
    const h = r.chunkHash(0) as string;
    r.close();
    await expect(store.chunkFile(h, r)).rejects.toThrow(/closed/);
  });

  it('a chunk file of a pinned version survives its removal and gc', async () => {
    const disk = sampleDisk();
    const up = store.beginUpload('pc', { size: disk.length, source: 'agent' });
    await up.commit((await uploadDisk(up, disk)).list);
    const r = await store.openVersion('pc');
    try {
      await store.remove('pc');
      await store.gc();
      const h = r.chunkHash(0) as string;
      const f = await store.chunkFile(h, r);
      expect(codec.decodeChecked(await readStream(f.stream()), h, 'full').equals(disk.subarray(0, CHUNK))).toBe(true);
    } finally {
      r.close();
    }
    await store.gc();
    expect(await chunkPaths(join(dir, 'store'))).toEqual([]);
    await rm(join(dir, 'store', 'tmp'), { recursive: true, force: true });
  });
});
