/**
 * The cheap per-read check and the store's format version (issue 11).
 * - Every read checks a chunk file's own content checksum (chunk format 2), for compressible and
 *   incompressible chunks alike; a flipped stored byte is EIO on the deploy export, never wrong bytes.
 * - sha256 stays the name: verify checks it, so a file forged with a matching checksum is caught there.
 * - A store written before store.json and chunk format 2 (issue 10's code) opens, reads byte for byte,
 *   and its format-1 chunks, which carry no checksum, are checked against their name on every read.
 * - A store or chunk of a newer format is refused with a message that says to upgrade.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import zstd from 'zstd-napi/binding.js';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importStream } from '../../src/imaging/image-import.js';
import { readBytes } from '../../src/imaging/image-export.js';
import { ChunkCorruptError, ChunkTooNewError } from '../../src/imaging/codec-pool.js';
import { CHUNK_FORMAT, CHUNK_HEADER_SIZE, ChunkCodecContext, chunkName } from '../../src/imaging/chunk-format.js';
import { encodeManifestFromEntries, imageDigestFromEntries, type TableEntry } from '../../src/imaging/manifest.js';
import { STORE_FORMAT, StoreFormatError } from '../../src/imaging/store-format.js';
import { DeployExport } from '../../src/transport/deploy-export.js';
import { ExportError } from '../../src/nbd/export.js';
import { nullLogger } from '../../src/lib/log.js';
import { compressible, readAll, tempDir } from './helpers.js';

const MiB = 1024 * 1024;

function chunkPath(storeDir: string, hash: string): string {
  return join(storeDir, 'chunks', hash.slice(0, 2), hash);
}

async function flipByte(path: string, fromEnd: number): Promise<void> {
  const f = await readFile(path);
  f[f.length - fromEnd] ^= 0x01;
  await writeFile(path, f);
}

async function readStoreJson(storeDir: string): Promise<unknown> {
  return JSON.parse(await readFile(join(storeDir, 'store.json'), 'utf8'));
}

/**
 * A chunk file as issue 10's code wrote it (chunk format 1): a 16-byte header with version byte 1,
 * then zstd without a content checksum if that saved anything, else the raw bytes.
 */
function formatOneChunk(data: Buffer): Buffer {
  const scratch = Buffer.alloc(zstd.compressBound(data.length));
  const n = zstd.compress(scratch, data, 1);
  const zstdWins = n + CHUNK_HEADER_SIZE < data.length;
  const h = Buffer.alloc(CHUNK_HEADER_SIZE);
  h.writeUInt32BE(0x4e43434b, 0);
  h.writeUInt8(1, 4);
  h.writeUInt8(zstdWins ? 1 : 0, 5);
  h.writeUInt32BE(data.length, 8);
  h.writeUInt32BE(zstdWins ? n : data.length, 12);
  return Buffer.concat([h, zstdWins ? scratch.subarray(0, n) : data]);
}

/** Writes image `name` version 1 into `storeDir` the way issue 10's store laid it out: no store.json, format-1 chunks. */
async function writeFormatOneStore(storeDir: string, name: string, disk: Buffer, chunkSize: number): Promise<string[]> {
  const entries: TableEntry[] = [];
  const hashes: string[] = [];
  for (let i = 0; i * chunkSize < disk.length; i++) {
    const data = disk.subarray(i * chunkSize, Math.min(disk.length, (i + 1) * chunkSize));
    if (data.every((b) => b === 0)) continue;
    const hash = chunkName(data);
    const file = formatOneChunk(data);
    await mkdir(join(storeDir, 'chunks', hash.slice(0, 2)), { recursive: true });
    await writeFile(chunkPath(storeDir, hash), file);
    entries.push({ index: i, hash: Buffer.from(hash, 'hex'), size: file.length });
    hashes.push(hash);
  }
  const digest = imageDigestFromEntries(disk.length, chunkSize, entries);
  const storedBytes = entries.reduce((s, e) => s + e.size, 0);
  const { bytes } = encodeManifestFromEntries({ version: 1, size: disk.length, sectorSize: 512, chunkSize, digest, created: new Date(0).toISOString(), source: 'issue 10 store', storedBytes }, () => entries);
  await mkdir(join(storeDir, 'images', name, 'versions'), { recursive: true });
  await writeFile(join(storeDir, 'images', name, 'versions', '1.manifest'), bytes);
  return hashes;
}

describe('the per-read content checksum (chunk format 2)', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore;
  const storeDir = (): string => join(dir, 'store');

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('chunkcheck'));
    // No decoded-chunk cache: every read goes to a worker and its file.
    store = await ImageStore.open(storeDir(), { logger: nullLogger(), workers: 2, cacheBytes: 0 });
  });

  afterEach(async () => {
    await store?.close();
    await cleanup();
  });

  it('new chunk files are format 2, compressible and incompressible alike, and a new store records its format', async () => {
    expect(await readStoreJson(storeDir())).toEqual({ format: STORE_FORMAT });
    const d = Buffer.concat([compressible(MiB, 2), randomBytes(MiB)]);
    await importStream(store, 'n', Readable.from([d]), d.length, { source: 't' });
    const r = await store.openVersion('n');
    try {
      for (const i of [0, 1]) {
        const f = await readFile(chunkPath(storeDir(), r.chunkHash(i) as string));
        expect(f[4]).toBe(CHUNK_FORMAT);
        expect(f[5]).toBe(1); // zstd: an incompressible chunk is a frame of zstd raw blocks
      }
      expect((await readBytes(r, 0, d.length)).equals(d)).toBe(true);
    } finally {
      r.close();
    }
  });

  it('a flipped byte in a compressible or an incompressible chunk fails the read (ChunkCorruptError) and the deploy export (EIO)', async () => {
    const parts = [compressible(MiB, 5), randomBytes(MiB), compressible(MiB, 6), randomBytes(MiB)];
    const d = Buffer.concat(parts);
    await importStream(store, 'flip', Readable.from([d]), d.length, { source: 't' });
    const r = await store.openVersion('flip');
    const exp = new DeployExport(r, { logger: nullLogger() });
    try {
      const h = parts.map((_, i) => r.chunkHash(i) as string);
      // Chunk 0: a byte inside the compressed data; chunk 1: a byte of the stored (raw-block) data,
      // which zstd copies out as it is, so only the content checksum can tell.
      await flipByte(chunkPath(storeDir(), h[0]), 200);
      await flipByte(chunkPath(storeDir(), h[1]), 200);
      await expect(r.readChunk(0)).rejects.toThrow(ChunkCorruptError);
      await expect(r.readChunk(0)).rejects.toThrow(new RegExp(`chunk ${h[0]} is damaged: .*(checksum|does not decode)`));
      await expect(r.readChunk(1)).rejects.toThrow(new RegExp(`chunk ${h[1]} is damaged: content checksum of the decoded bytes does not match`));
      for (const i of [0, 1]) {
        const err = await exp.read(i * MiB + 4096, 4096).then(
          () => null,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(ExportError);
        expect((err as ExportError).errno).toBe('EIO');
      }
      // The chunks next to them still read.
      expect((await r.readChunk(2))?.equals(parts[2])).toBe(true);
      expect((await r.readChunk(3))?.equals(parts[3])).toBe(true);
      const v = await store.verify('flip');
      expect(v.damaged.map((x) => x.hash)).toEqual(h.slice(0, 2));
    } finally {
      exp.close(); // closes the reader too
    }
  });

  it('a clear checksum flag in the zstd frame is refused, not read unchecked', async () => {
    const d = compressible(MiB, 8);
    await importStream(store, 'flag', Readable.from([d]), d.length, { source: 't' });
    const r = await store.openVersion('flag');
    try {
      const p = chunkPath(storeDir(), r.chunkHash(0) as string);
      const f = await readFile(p);
      f[CHUNK_HEADER_SIZE + 4] &= ~0x04; // zstd frame header descriptor: Content_Checksum_flag
      await writeFile(p, f);
      await expect(r.readChunk(0)).rejects.toThrow(/has no content checksum/);
    } finally {
      r.close();
    }
  });

  it('reads rely on the content checksum; verify checks sha256 and catches a file forged with a matching checksum', async () => {
    const parts = [compressible(MiB, 9), randomBytes(MiB)];
    const d = Buffer.concat(parts);
    await importStream(store, 'forged', Readable.from([d]), d.length, { source: 't' });
    const r = await store.openVersion('forged');
    try {
      const victim = r.chunkHash(1) as string;
      // Other bytes, validly encoded (so their content checksum is right), under the victim's name.
      const other = randomBytes(MiB);
      const [header, payload] = new ChunkCodecContext().encode(other, 1, Buffer.alloc(zstd.compressBound(MiB)));
      await writeFile(chunkPath(storeDir(), victim), Buffer.concat([header, payload]));
      // The read path does not pay for sha256 (that is the point of the cheap check) ...
      expect((await r.readChunk(1))?.equals(other)).toBe(true);
      // ... verify does, and names the chunk.
      const v = await store.verify('forged');
      expect(v.ok).toBe(false);
      expect(v.damaged).toEqual([{ hash: victim, offset: MiB, reason: expect.stringMatching(/content hash [0-9a-f]{64} does not match chunk name/) }]);
    } finally {
      r.close();
    }
  });
});

describe('store format versions', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let store: ImageStore | undefined;
  const storeDir = (): string => join(dir, 'store');

  beforeEach(async () => {
    ({ dir, cleanup } = await tempDir('storeformat'));
    store = undefined;
  });

  afterEach(async () => {
    await store?.close();
    await cleanup();
  });

  it('a store written before store.json (format-1 chunks, raw and zstd) opens, is migrated, reads byte for byte and verifies', async () => {
    const chunkSize = 256 * 1024;
    const disk = Buffer.concat([compressible(chunkSize, 1), randomBytes(chunkSize), Buffer.alloc(chunkSize), compressible(chunkSize + 1000, 2), randomBytes(chunkSize - 1000 + 4096)]);
    const hashes = await writeFormatOneStore(storeDir(), 'old', disk, chunkSize);
    const before = await Promise.all(hashes.map((h) => readFile(chunkPath(storeDir(), h))));
    expect(new Set(before.map((f) => f[5]))).toEqual(new Set([0, 1])); // raw and zstd, as issue 10 wrote them
    store = await ImageStore.open(storeDir(), { logger: nullLogger(), workers: 2, cacheBytes: 0 });
    expect(await readStoreJson(storeDir())).toEqual({ format: STORE_FORMAT });
    expect((await readAll(store, 'old')).equals(disk)).toBe(true);
    expect((await store.verify('old')).ok).toBe(true);
    // Read as they are: not one chunk file was rewritten by opening, reading or verifying.
    const after = await Promise.all(hashes.map((h) => readFile(chunkPath(storeDir(), h))));
    after.forEach((f, i) => expect(f.equals(before[i])).toBe(true));
    // Opening it again is a format-2 store now, and reads the same.
    await store.close();
    store = await ImageStore.open(storeDir(), { logger: nullLogger(), workers: 2, cacheBytes: 0 });
    expect((await readAll(store, 'old')).equals(disk)).toBe(true);
  });

  it('format-1 chunks, which carry no checksum, are checked against their sha256 name on every read', async () => {
    const chunkSize = 256 * 1024;
    const disk = Buffer.concat([randomBytes(chunkSize), compressible(chunkSize, 4), randomBytes(chunkSize)]);
    const hashes = await writeFormatOneStore(storeDir(), 'old', disk, chunkSize);
    const files = await Promise.all(hashes.map((h) => readFile(chunkPath(storeDir(), h))));
    expect(files.map((f) => f[5])).toEqual([0, 1, 0]);
    store = await ImageStore.open(storeDir(), { logger: nullLogger(), workers: 2, cacheBytes: 0 });
    await flipByte(chunkPath(storeDir(), hashes[0]), 10); // raw: a flipped byte decodes "fine"
    const r = await store.openVersion('old');
    try {
      await expect(r.readChunk(0)).rejects.toThrow(new RegExp(`chunk ${hashes[0]} is damaged: content hash [0-9a-f]{64} does not match chunk name`));
      expect((await r.readChunk(1))?.equals(disk.subarray(chunkSize, 2 * chunkSize))).toBe(true);
      const exp = new DeployExport(r, { logger: nullLogger() });
      await expect(exp.read(100, 100)).rejects.toMatchObject({ errno: 'EIO' });
      exp.close(); // closes the reader too
    } finally {
      r.close();
    }
  });

  it('capturing the same bytes again rewrites an intact format-1 chunk in format 2, under the same name', async () => {
    const chunkSize = 256 * 1024;
    const disk = Buffer.concat([randomBytes(chunkSize), compressible(chunkSize, 4)]);
    const hashes = await writeFormatOneStore(storeDir(), 'old', disk, chunkSize);
    store = await ImageStore.open(storeDir(), { logger: nullLogger(), workers: 2, cacheBytes: 0, chunkSize });
    await importStream(store, 'again', Readable.from([disk]), disk.length, { source: 't' });
    for (const h of hashes) expect((await readFile(chunkPath(storeDir(), h)))[4]).toBe(CHUNK_FORMAT);
    expect((await readAll(store, 'old')).equals(disk)).toBe(true);
    expect((await store.verify('old')).ok).toBe(true);
    expect((await store.verify('again')).ok).toBe(true);
  });

  it('a store of a newer format is refused with what to do, and nothing in it is touched', async () => {
    await mkdir(join(storeDir(), 'tmp'), { recursive: true });
    await writeFile(join(storeDir(), 'tmp', 'newer-netclone-temp'), 'x');
    await writeFile(join(storeDir(), 'store.json'), JSON.stringify({ format: STORE_FORMAT + 1 }));
    const err = await ImageStore.open(storeDir(), { logger: nullLogger(), workers: 1 }).then(
      (s) => {
        store = s;
        return null;
      },
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StoreFormatError);
    expect((err as Error).message).toMatch(new RegExp(`is format ${STORE_FORMAT + 1}, written by a newer netclone.*Upgrade netclone`));
    expect(await readdir(join(storeDir(), 'tmp'))).toEqual(['newer-netclone-temp']);
    expect(await readdir(storeDir())).toEqual(['store.json', 'tmp']);
    expect(await readStoreJson(storeDir())).toEqual({ format: STORE_FORMAT + 1 });
  });

  it('a store.json that does not name a format is refused, saying how to fix it', async () => {
    await mkdir(storeDir(), { recursive: true });
    for (const text of ['{', '{}', '{"format": "2"}', '{"format": 0}', 'null']) {
      await writeFile(join(storeDir(), 'store.json'), text);
      await expect(ImageStore.open(storeDir(), { logger: nullLogger(), workers: 1 })).rejects.toThrow(/does not say which format.*write \{"format": 2\} into that file/);
    }
  });

  it('a chunk file of a newer chunk format fails reads and verify with an upgrade message, not as damage', async () => {
    store = await ImageStore.open(storeDir(), { logger: nullLogger(), workers: 2, cacheBytes: 0 });
    const d = Buffer.concat([compressible(MiB, 3), randomBytes(MiB)]);
    await importStream(store, 'n', Readable.from([d]), d.length, { source: 't' });
    const r = await store.openVersion('n');
    try {
      const h = r.chunkHash(0) as string;
      const f = await readFile(chunkPath(storeDir(), h));
      f[4] = CHUNK_FORMAT + 1;
      await writeFile(chunkPath(storeDir(), h), f);
      await expect(r.readChunk(0)).rejects.toThrow(ChunkTooNewError);
      await expect(r.readChunk(0)).rejects.toThrow(new RegExp(`chunk ${h} cannot be read: chunk file format ${CHUNK_FORMAT + 1} is newer than this netclone reads .*upgrade netclone`));
      const exp = new DeployExport(r, { logger: nullLogger() });
      await expect(exp.read(0, 4096)).rejects.toMatchObject({ errno: 'EIO' });
      exp.close(); // closes the reader too
      const v = await store.verify('n');
      expect(v.damaged).toEqual([{ hash: h, offset: 0, reason: expect.stringMatching(/newer than this netclone reads/) }]);
    } finally {
      r.close();
    }
  });
});
