/**
 * Model-based test of chunk uploads: seeded random streams of sessions over a few images at once,
 * against a real store. Disks are drawn from a small palette of chunk contents (so chunks deduplicate
 * within and across images and versions), sessions put chunks in random order and concurrently, send
 * some twice, send refused (corrupted) files, commit before everything is sent, abort (after their
 * puts or in the middle of them), and race gc, version removal and captures of other images; between
 * rounds the store is sometimes closed and reopened (a restarted server). known() must answer exactly
 * the image's newest version's chunks and what earlier, cut uploads of the same image sent since its
 * last commit (its upload journal): never less (a retried upload resumes), never more (no probing).
 * After each step the store must hold exactly: every committed version equal to its model disk byte
 * for byte, and once the sessions are over and gc ran, no chunk file that neither a committed version
 * nor an upload journal names; none past the journals' expiry.
 *
 * UPLOAD_MODEL_SEED=n replays one seed; UPLOAD_MODEL_SEEDS chooses how many.
 */
import { describe, it, expect } from 'vitest';
import { readdir, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageStore } from '../../src/imaging/image-store.js';
import { ChunkUploadError, MissingChunksError, type ChunkUpload } from '../../src/imaging/chunk-upload.js';
import { CHUNK_HEADER_SIZE, ChunkCodecContext, maxChunkFileSize } from '../../src/imaging/chunk-format.js';
import { RESUME_WINDOW_MS } from '../../src/imaging/upload-journal.js';
import { nullLogger } from '../../src/lib/log.js';
import { prng, noise } from '../lib/prng.js';
import { tempDir, compressible, sha256, readAll, chunkPaths } from './helpers.js';

const CHUNK = 64 * 1024;
const SEEDS = Number(process.env.UPLOAD_MODEL_SEEDS ?? 12);
const ONLY = process.env.UPLOAD_MODEL_SEED === undefined ? null : Number(process.env.UPLOAD_MODEL_SEED);
const IMAGES = ['a', 'b', 'c'];
const codec = new ChunkCodecContext();

function encodeChunk(data: Buffer): Buffer {
  const [h, p] = codec.encode(data, 1, Buffer.allocUnsafe(maxChunkFileSize(data.length) - CHUNK_HEADER_SIZE));
  return Buffer.concat([h, p]);
}

/** Full-size chunk contents shared by every disk of a seed; null is a zero chunk. */
function palette(rnd: () => number): (Buffer | null)[] {
  const out: (Buffer | null)[] = [null];
  for (let i = 0; i < 10; i++) out.push(rnd() < 0.5 ? noise(1 + Math.floor(rnd() * 2 ** 30), CHUNK) : compressible(CHUNK, 1 + Math.floor(rnd() * 1000)));
  return out;
}

function makeDisk(rnd: () => number, pal: (Buffer | null)[], size: number): Buffer {
  const disk = Buffer.alloc(size);
  for (let o = 0; o < size; o += CHUNK) {
    const c = pal[Math.floor(rnd() * pal.length)];
    if (c) c.copy(disk, o, 0, Math.min(CHUNK, size - o));
  }
  return disk;
}

/** A changed copy of `disk`: a few chunks replaced from the palette, a few bytes scribbled. */
function mutate(rnd: () => number, pal: (Buffer | null)[], disk: Buffer): Buffer {
  const out = Buffer.from(disk);
  const n = Math.ceil(disk.length / CHUNK);
  for (let k = Math.floor(rnd() * 3); k > 0; k--) {
    const i = Math.floor(rnd() * n);
    const c = pal[Math.floor(rnd() * pal.length)];
    const end = Math.min(disk.length, (i + 1) * CHUNK);
    if (c) c.copy(out, i * CHUNK, 0, end - i * CHUNK);
    else out.fill(0, i * CHUNK, end);
  }
  if (rnd() < 0.5) out[Math.floor(rnd() * out.length)] ^= 1 + Math.floor(rnd() * 255);
  return out;
}

function listOf(disk: Buffer): { list: (string | null)[]; chunks: Map<string, Buffer> } {
  const list: (string | null)[] = [];
  const chunks = new Map<string, Buffer>();
  for (let o = 0; o < disk.length; o += CHUNK) {
    const c = disk.subarray(o, Math.min(disk.length, o + CHUNK));
    if (c.every((b) => b === 0)) list.push(null);
    else {
      const h = sha256(c);
      list.push(h);
      chunks.set(h, c);
    }
  }
  return { list, chunks };
}

function shuffle<T>(rnd: () => number, xs: T[]): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** A refused upload: the right name with damaged bytes, or the wrong name. */
function poisoned(rnd: () => number, hash: string, data: Buffer): { hash: string; file: Buffer } {
  const f = encodeChunk(data);
  const r = rnd();
  if (r < 0.4) {
    f[CHUNK_HEADER_SIZE + Math.floor(rnd() * (f.length - CHUNK_HEADER_SIZE))] ^= 0x10;
    return { hash, file: f };
  }
  if (r < 0.7) return { hash: sha256(Buffer.concat([data, Buffer.from([1])])), file: f };
  return { hash, file: f.subarray(0, f.length - 1 - Math.floor(rnd() * 20)) };
}

interface Outcome {
  readonly committed: boolean;
  readonly disk: Buffer;
  /** Chunks whose put was answered. */
  readonly sent: Set<string>;
}

/** What known() may answer for an image: its newest version's chunks and what cut uploads of it sent since. */
interface Knowable {
  readonly previous: Set<string>;
  readonly resumable: Set<string>;
}

/** One session, the way a careless or unlucky agent might run it. */
async function session(store: ImageStore, rnd: () => number, up: ChunkUpload, disk: Buffer, may: Knowable, problems: string[], tag: string): Promise<Outcome> {
  const { list, chunks } = listOf(disk);
  const sent = new Set<string>();
  const known = await up.known([...chunks.keys()]);
  for (const h of chunks.keys()) {
    if (may.resumable.has(h) && !may.previous.has(h) && !known.has(h)) problems.push(`${tag}: a chunk a cut upload of this image sent is not known (${h})`);
    if (known.has(h) && !may.previous.has(h) && !may.resumable.has(h)) problems.push(`${tag}: known() answered a chunk neither the previous version nor a cut upload of this image has (${h})`);
  }
  const need = shuffle(rnd, [...chunks.keys()].filter((h) => !known.has(h)));
  // Some sends are held back to the first commit, which must name exactly them.
  const holdBack = new Set(need.filter(() => rnd() < 0.15));
  const width = 1 + Math.floor(rnd() * 6);
  for (let i = 0; i < need.length; i += width) {
    await Promise.all(
      need.slice(i, i + width).map(async (h) => {
        if (holdBack.has(h)) return;
        const data = chunks.get(h) as Buffer;
        if (rnd() < 0.1) {
          const bad = poisoned(rnd, h, data);
          const err = await up.put(bad.hash, bad.file).then(
            () => null,
            (e: unknown) => e,
          );
          if (!(err instanceof ChunkUploadError)) problems.push(`${tag}: a poisoned chunk was accepted (${String(err)})`);
        }
        await up.put(h, encodeChunk(data));
        sent.add(h);
        if (rnd() < 0.1) await up.put(h, encodeChunk(data));
      }),
    );
    if (rnd() < 0.1) await store.gc();
    if (rnd() < 0.05) {
      // Cut in the middle: the next upload of this image must not need what was sent so far.
      await up.abort('model cut');
      return { committed: false, disk, sent };
    }
  }
  if (rnd() < 0.2) {
    await up.abort('model abort');
    return { committed: false, disk, sent };
  }
  if (holdBack.size > 0) {
    const err = await up.commit(list).then(
      () => null,
      (e: unknown) => e,
    );
    if (!(err instanceof MissingChunksError)) problems.push(`${tag}: commit with ${holdBack.size} unsent chunks did not report them (${String(err)})`);
    else if ([...err.missing].sort().join() !== [...holdBack].sort().join()) problems.push(`${tag}: commit named ${err.missing.length} missing chunks, ${holdBack.size} were unsent`);
    await Promise.all([...holdBack].map((h) => up.put(h, encodeChunk(chunks.get(h) as Buffer))));
  }
  await up.commit(list);
  return { committed: true, disk, sent };
}

const hashesOf = (disk: Buffer | undefined): Set<string> => (disk === undefined ? new Set() : new Set(listOf(disk).chunks.keys()));

async function runSeed(seed: number, dir: string): Promise<string[]> {
  const rnd = prng(seed);
  const problems: string[] = [];
  const storeDir = join(dir, `s${seed}`);
  const opts = { logger: nullLogger(), chunkSize: CHUNK, keepVersions: 1 + Math.floor(rnd() * 3), workers: 2 };
  let store = await ImageStore.open(storeDir, opts);
  try {
    /** Per image: what its cut uploads sent since its last commit. */
    const resumable = new Map(IMAGES.map((n) => [n, new Set<string>()]));
    const pal = palette(rnd);
    const current = new Map<string, Buffer>();
    const sizes = new Map(IMAGES.map((n) => [n, (2 + Math.floor(rnd() * 10)) * CHUNK + (rnd() < 0.5 ? 1 + Math.floor(rnd() * (CHUNK - 1)) : 0)]));
    for (let round = 0; round < 4; round++) {
      const names = IMAGES.filter(() => rnd() < 0.8);
      // Each concurrent party draws from its own generator, so a seed replays the same choices whatever the timing.
      const runs = names.map(async (name, k) => {
        const own = prng(seed * 1009 + round * 31 + k + 1);
        const prev = current.get(name);
        const size = prev && rnd() < 0.85 ? prev.length : (sizes.get(name) as number);
        const disk = prev && prev.length === size ? mutate(rnd, pal, prev) : makeDisk(rnd, pal, size);
        const up = store.beginUpload(name, { size, source: `model ${seed}` });
        const cut = resumable.get(name) as Set<string>;
        const out = await session(store, own, up, disk, { previous: hashesOf(prev), resumable: cut }, problems, `seed ${seed} round ${round} ${name}`);
        if (out.committed) {
          current.set(name, out.disk);
          cut.clear();
        } else for (const h of out.sent) cut.add(h);
      });
      const sideRnd = prng(seed * 7919 + round);
      const side = (async () => {
        if (sideRnd() < 0.5) await store.gc();
        const victim = IMAGES[Math.floor(sideRnd() * IMAGES.length)];
        const vs = await store.versions(victim);
        // An old version removed under a live session: its chunks must stay as long as the session counts on them.
        if (vs.length > 1 && sideRnd() < 0.5) await store.removeVersion(victim, vs[0]);
      })();
      await Promise.all([...runs, side]);
      for (const [name, disk] of current) {
        const got = await readAll(store, name);
        if (!got.equals(disk)) problems.push(`seed ${seed} round ${round}: ${name} does not read back as committed`);
      }
      if (rnd() < 0.3) {
        // A restarted server: what it held in memory about provisional chunks is gone, the journals stay.
        await store.close();
        store = await ImageStore.open(storeDir, opts);
      }
    }
    await store.gc();
    const named = new Set<string>();
    for (const name of IMAGES) {
      for (const v of await store.versions(name)) {
        const r = await store.openVersion(name, v);
        for (const e of r.entries()) named.add(store.chunks.pathOf(e.hash.toString('hex')));
        r.close();
      }
      if (current.has(name) && !(await store.verify(name)).ok) problems.push(`seed ${seed}: ${name} does not verify`);
    }
    const journaled = new Set<string>();
    for (const cut of resumable.values()) for (const h of cut) if (!named.has(store.chunks.pathOf(h))) journaled.add(store.chunks.pathOf(h));
    const onDisk = await chunkPaths(storeDir);
    if (onDisk.join() !== [...named, ...journaled].sort().join()) problems.push(`seed ${seed}: ${onDisk.length} chunk files on disk, committed versions name ${named.size} and upload journals ${journaled.size} more`);
    // A week later the journals have expired: only what versions name is left.
    const past = new Date(Date.now() - RESUME_WINDOW_MS - 60_000);
    for (const f of await readdir(join(storeDir, 'uploads'))) await utimes(join(storeDir, 'uploads', f), past, past);
    await store.gc();
    const left = await chunkPaths(storeDir);
    if (left.join() !== [...named].sort().join()) problems.push(`seed ${seed}: ${left.length} chunk files on disk after the journals expired, committed versions name ${named.size}`);
    if ((await readdir(join(storeDir, 'uploads'))).length !== 0) problems.push(`seed ${seed}: expired upload journals were not removed`);
    if (store.chunks.provisionalCount !== 0) problems.push(`seed ${seed}: ${store.chunks.provisionalCount} chunks still provisional after every session ended`);
  } finally {
    await store.close();
  }
  return problems;
}

describe('chunk upload model', () => {
  it(`${ONLY === null ? SEEDS : 1} seeds of concurrent upload sessions commit exactly their disks and leave no chunk file over`, async () => {
    const { dir, cleanup } = await tempDir('upload-model');
    try {
      const seeds = ONLY === null ? Array.from({ length: SEEDS }, (_, i) => 1000 + i) : [ONLY];
      const problems: string[] = [];
      for (const seed of seeds) problems.push(...(await runSeed(seed, dir)));
      expect(problems).toEqual([]);
    } finally {
      await cleanup();
    }
  }, 240_000);
});
