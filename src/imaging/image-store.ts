/**
 * The deduplicating image store.
 *
 *   <dir>/chunks/ab/<sha256>                 chunk files (see chunk-format.ts), shared by every image
 *   <dir>/images/<name>/versions/<n>.manifest  one per committed version (see manifest.ts)
 *   <dir>/images/<name>/image.json           retention policy, protect flags and notes (image-meta.ts); absent when none
 *   <dir>/uploads/<name>.journal             chunks cut uploads of an image left for its next upload (upload-journal.ts)
 *   <dir>/tmp/                               temp files; emptied on open (leftovers of a crash)
 *   <dir>/store.json                         the store's format version (see store-format.ts)
 *
 * A version exists once its manifest is renamed into place, after every chunk it names is durable,
 * so a capture killed at any moment leaves the previous version intact and only orphan chunks,
 * which gc() removes. Commits, prunes, removals and gc run one at a time under one mutex; open
 * readers and live captures pin their chunk tables so gc keeps what they still need.
 *
 * This module is the store alone. Converting between outside formats and the store lives beside it:
 * image-import.ts (a raw stream or file into a new version), image-export.ts (a version out as a raw
 * image), image-details.ts (show() plus the partition table read from the disk's contents).
 */
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import type { Logger } from '../lib/log.js';
import { CodecPool, ChunkCorruptError, ChunkTooNewError } from './codec-pool.js';
import { Readable } from 'node:stream';
import { ChunkStore } from './chunk-store.js';
import { AsyncMutex } from './mutex.js';
import { ByteLru } from './lru.js';
import { fsyncDir, writeFileDurably } from '../lib/durable-write.js';
import { assertValidImageName, isValidImageName } from './names.js';
import { DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE } from './chunk-format.js';
import {
  MANIFEST_PREFIX_LENGTH,
  MAX_DISK_SIZE,
  ManifestError,
  encodeManifestFromEntries,
  expectedManifestLength,
  imageDigestFromEntries,
  manifestHeaderLength,
  parseManifest,
  parseManifestHeader,
  type Manifest,
  type ManifestHeader,
} from './manifest.js';
import { VersionReader } from './version-reader.js';
import { STORE_FORMAT, readStoreFormat, writeStoreFormat } from './store-format.js';
import { Capture, type CaptureOptions } from './capture.js';
import { ChunkUpload, type ChunkUploadOptions } from './chunk-upload.js';
import { UploadJournals } from './upload-journal.js';
import type { ChunkUse, HashPin, ImageSummary, NewVersion, StoreContext, VersionInfo } from './types.js';
import { freeChunkTest, parseDiskLayout, type DiskLayout } from './disk-layout.js';
import { EMPTY_META, parseImageMeta, sourceMacOf, versionMeta, withVersionMeta, withoutVersions, type ImageMeta, type VersionMeta } from './image-meta.js';
import { SpaceTally, type ImageSpace, type StoreSpace } from './store-space.js';
import type { RetentionPolicy } from './retention.js';

export interface ImageStoreOptions {
  readonly logger: Logger;
  /** Committed versions kept per image; older ones are pruned on commit (default 3). */
  readonly keepVersions?: number;
  /** Codec worker threads (default: number of cores). */
  readonly workers?: number;
  /** zstd level (default 1: see DEFAULT_COMPRESSION_LEVEL). */
  readonly compressionLevel?: number;
  /** Decoded-chunk cache for reads, in bytes (default 64 MiB). */
  readonly cacheBytes?: number;
  /**
   * Chunk size of new captures (default 1 MiB, which the imaging client's digest assumes). Smaller
   * sizes exist for tests that need many chunk edges in a small disk.
   */
  readonly chunkSize?: number;
}

/**
 * zstd level 1: on real binaries level 1 compresses ≈ 450 MB/s/core to 0.38, level 3 ≈ 285 MB/s/core to
 * 0.28–0.33. With two cores level 3 would cap capture of compressible data near the 1 GbE line rate of
 * several clients at once; level 1 keeps the store well ahead of the network.
 */
export const DEFAULT_COMPRESSION_LEVEL = 1;

export class ImageNotFoundError extends Error {
  constructor(name: string, version?: number) {
    super(version === undefined ? `image ${name} does not exist` : `image ${name} has no version ${version}`);
    this.name = 'ImageNotFoundError';
  }
}

export class VersionProtectedError extends Error {
  constructor(name: string, version: number) {
    super(`version ${version} of image ${name} is protected; unprotect it first ("netclone image unprotect ${name} ${version}") if it really should go`);
    this.name = 'VersionProtectedError';
  }
}

export interface VersionDetails extends VersionInfo {
  readonly manifestBytes: number;
  /** The version before it, or null for the image's first. */
  readonly previousVersion: number | null;
  /** Disk bytes of chunks the previous version does not hold (all data for the first version). */
  readonly changedBytes: number;
  /** Chunk file bytes those new chunks take, each once. */
  readonly changedStoredBytes: number;
  readonly protected: boolean;
  readonly note: string;
  /** The capturing PC's MAC, when the version's source names one. */
  readonly sourceMac: string | null;
  /** That PC's name, where the caller knows it (the command layer fills it in from the hosts). */
  readonly sourceName?: string | null;
}

/** Which committed versions of an image tasks still need, with why; the domain layer knows the tasks. */
export type VersionsInUse = (image: string) => ReadonlyMap<number, readonly string[]>;

/**
 * What the store itself records about an image: its versions, sizes and the space they take.
 * describeImage() in image-details.ts adds what only reading the disk's contents can tell.
 */
export interface StoredImage {
  readonly name: string;
  readonly versions: VersionDetails[];
  readonly latestVersion: number;
  readonly size: number;
  readonly sectorSize: number;
  /** Non-hole bytes of the latest version. */
  readonly dataBytes: number;
  /**
   * This image's share of the store's chunk bytes: a chunk other images also name is charged in equal
   * parts to each (store-space.ts), so the shares of all images add up to what the store holds.
   */
  readonly storedBytes: number;
  /** Chunk bytes no other image names: what removing this image would free. */
  readonly exclusiveBytes: number;
  /** Chunk bytes this image names that other images name too. */
  readonly sharedBytes: number;
  /** dataBytes / stored bytes of the latest version (2 = half the space). */
  readonly compressionRatio: number;
  /** Chunk bytes its versions name, counted per use, minus its share of the store: what sharing chunks saves, across versions and images. */
  readonly dedupSavings: number;
  /** The image's retention policy, or null (the store's keep-versions applies). */
  readonly retention: RetentionPolicy | null;
}

export interface ProgressFn {
  (done: number, total: number): void;
}

export interface VerifyResult {
  readonly ok: boolean;
  readonly version: number;
  readonly checkedChunks: number;
  readonly damaged: { hash: string; offset: number; reason: string }[];
}

const MANIFEST_RE = /^(\d{1,9})\.manifest$/;

/**
 * Removes from `candidates` every hash whose 32 binary bytes occur anywhere in `bytes`, at any
 * alignment: what a damaged manifest might still name. Indexed by each hash's first four bytes so
 * the scan is one map lookup per byte of the file.
 */
function keepNamedIn(bytes: Buffer, candidates: Set<string>): void {
  const byPrefix = new Map<number, Buffer[]>();
  for (const h of candidates) {
    const bin = Buffer.from(h, 'hex');
    const k = bin.readUInt32LE(0);
    const list = byPrefix.get(k);
    if (list) list.push(bin);
    else byPrefix.set(k, [bin]);
  }
  for (let o = 0; o + 32 <= bytes.length; o++) {
    const list = byPrefix.get(bytes.readUInt32LE(o));
    if (!list) continue;
    for (const bin of list) if (bytes.compare(bin, 0, 32, o, o + 32) === 0) candidates.delete(bin.toString('hex'));
  }
}

export class ImageStore implements StoreContext {
  readonly log: Logger;
  readonly pool: CodecPool;
  readonly chunks: ChunkStore;
  readonly tmpDir: string;
  readonly compressionLevel: number;
  readonly keepVersions: number;
  readonly chunkSize: number;
  private readonly imagesDir: string;
  private readonly journals: UploadJournals;
  private readonly mutex = new AsyncMutex();
  private readonly cache: ByteLru;
  /** Chunk files chunkFile() read lately, by hash, inode, size and mtime (see there). */
  private readonly servedChunkFiles = new ByteLru(32 * 1024 * 1024);
  private readonly loading = new Map<string, Promise<Buffer>>();
  private readonly pins = new Map<HashPin, number>();
  /** Open captures and chunk uploads, one per image: either makes the image's next version. */
  private readonly captures = new Map<string, Capture | ChunkUpload>();
  private closed = false;
  /** The last process using this store ended mid-write (its temp files were left): run gc() to drop its orphans. */
  crashed = false;
  /** Bumped by every change to the set of versions; space() recounts when it moved. */
  private generation = 0;
  private spaceCache: { generation: number; space: StoreSpace } | null = null;
  private spaceCounting: { generation: number; done: Promise<StoreSpace> } | null = null;
  private inUse: VersionsInUse = () => new Map();

  private constructor(
    readonly dir: string,
    opts: ImageStoreOptions,
  ) {
    this.log = opts.logger.child({ component: 'image-store' });
    this.tmpDir = join(dir, 'tmp');
    this.imagesDir = join(dir, 'images');
    this.journals = new UploadJournals(join(dir, 'uploads'));
    this.chunks = new ChunkStore(join(dir, 'chunks'), this.tmpDir);
    this.pool = new CodecPool(this.log, opts.workers ?? availableParallelism());
    this.compressionLevel = opts.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL;
    this.keepVersions = Math.max(1, opts.keepVersions ?? 3);
    this.cache = new ByteLru(opts.cacheBytes ?? 64 * 1024 * 1024);
    const cs = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
    if (!Number.isInteger(cs) || cs < MIN_CHUNK_SIZE || cs > DEFAULT_CHUNK_SIZE || cs % 4096 !== 0) throw new RangeError(`chunk size ${cs} must be a multiple of 4096 from ${MIN_CHUNK_SIZE} to ${DEFAULT_CHUNK_SIZE}`);
    this.chunkSize = cs;
  }

  /**
   * Opens (or creates) the store in `dir`. A store of a newer format, or with an unreadable
   * store.json, is refused (StoreFormatError) before anything in it is touched; a format-1 store (no
   * store.json) is migrated by writing one (see store-format.ts).
   */
  static async open(dir: string, opts: ImageStoreOptions): Promise<ImageStore> {
    const found = await readStoreFormat(dir);
    // Without store.json, a chunks directory means a store written up to issue 10 (format 1).
    const old = found === null ? await stat(join(dir, 'chunks')).then(() => true, () => false) : found < STORE_FORMAT;
    const s = new ImageStore(dir, opts);
    try {
      // Anything in tmp/ belongs to a process that died mid-write; nothing committed refers to it.
      // Its presence also says a capture may have died with chunk files no version names.
      s.crashed = (await readdir(s.tmpDir).catch(() => [])).length > 0;
      await rm(s.tmpDir, { recursive: true, force: true });
      await mkdir(s.tmpDir, { recursive: true });
      await mkdir(s.imagesDir, { recursive: true });
      // Journals are read when an upload starts or gc runs, and a torn last line is skipped then.
      await s.journals.init();
      await s.chunks.init();
      if (found !== STORE_FORMAT) {
        await writeStoreFormat(dir, s.tmpDir);
        if (old) s.log.info({ dir, from: found ?? 1, to: STORE_FORMAT }, 'image store migrated: its chunk files stay as they are and are checked against their sha256 name on every read; chunks written from now on carry a content checksum');
      }
    } catch (e) {
      await s.pool.close();
      throw e;
    }
    return s;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const c of [...this.captures.values()]) await c.abort('image store closing');
    await this.mutex.run(async () => undefined);
    await this.pool.close();
    this.cache.clear();
  }

  // --- StoreContext -------------------------------------------------------------------------

  addPin(pin: HashPin): void {
    this.pins.set(pin, (this.pins.get(pin) ?? 0) + 1);
  }

  removePin(pin: HashPin): void {
    const n = this.pins.get(pin) ?? 0;
    if (n <= 1) this.pins.delete(pin);
    else this.pins.set(pin, n - 1);
  }

  async loadChunk(hash: string, use: ChunkUse): Promise<Buffer> {
    const hit = this.cache.get(hash);
    if (hit) return hit;
    let p = this.loading.get(hash);
    if (!p) {
      p = (async () => {
        try {
          // The file's own content checksum, not sha256: the read path's cost is this check (chunk-format.ts).
          const data = await this.pool.load(this.chunks.pathOf(hash), hash, 'fast');
          this.cache.set(hash, data);
          return data;
        } finally {
          this.loading.delete(hash);
        }
      })();
      this.loading.set(hash, p);
    }
    try {
      return await p;
    } catch (e) {
      if (e instanceof ChunkCorruptError) this.log.error({ chunk: hash, image: use.image, offset: use.offset, reason: e.detail }, 'damaged chunk: refusing to serve it');
      if (e instanceof ChunkTooNewError) this.log.error({ chunk: hash, image: use.image, offset: use.offset, reason: e.detail }, 'chunk of a newer format: refusing to read it');
      throw e;
    }
  }

  // --- paths and manifests ------------------------------------------------------------------

  private imageDir(name: string): string {
    assertValidImageName(name);
    return join(this.imagesDir, name);
  }

  private versionsDir(name: string): string {
    return join(this.imageDir(name), 'versions');
  }

  private manifestPath(name: string, version: number): string {
    return join(this.versionsDir(name), `${version}.manifest`);
  }

  /** The version's disk layout (issue 12), beside its manifest: written before the manifest, so a committed version's is complete. */
  private layoutPath(name: string, version: number): string {
    return join(this.versionsDir(name), `${version}.layout.json`);
  }

  /** Removes a version's layout file, if it has one. */
  private async unlinkLayout(name: string, version: number): Promise<void> {
    await unlink(this.layoutPath(name, version)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }

  /**
   * What the capturing agent learnt of the version's disk (partition table, filesystems, free
   * chunks), or null for a version captured without it (over NBD, or before issue 12).
   */
  async layout(name: string, version?: number): Promise<DiskLayout | null> {
    const vs = await this.versions(name);
    const v = version ?? vs[vs.length - 1];
    if (v === undefined || !vs.includes(v)) throw new ImageNotFoundError(name, version);
    let text: string;
    try {
      text = await readFile(this.layoutPath(name, v), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    try {
      return parseDiskLayout(JSON.parse(text));
    } catch (e) {
      throw new Error(`${this.layoutPath(name, v)} is damaged (${(e as Error).message}); the version's data is intact, but it can only be restored at its own size: re-capture to get its layout back`, { cause: e });
    }
  }

  // --- image metadata: retention policy, protect flags, notes (issue 13) ----------------------

  private metaPath(name: string): string {
    return join(this.imageDir(name), 'image.json');
  }

  /** The image's policy, protect flags and notes; the defaults when it has none recorded. */
  async meta(name: string): Promise<ImageMeta> {
    let text: string;
    try {
      text = await readFile(this.metaPath(name), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY_META;
      throw e;
    }
    try {
      return parseImageMeta(JSON.parse(text));
    } catch (e) {
      // Guessing here could unprotect a version a prune then removes: refuse until a person looks.
      throw new Error(`${this.metaPath(name)} is damaged (${(e as Error).message}); its protect flags and retention policy cannot be trusted, so nothing of image ${name} is pruned: fix or remove the file, then protect the versions again`, { cause: e });
    }
  }

  private async writeMeta(name: string, meta: ImageMeta): Promise<void> {
    const empty = meta.retention === null && Object.keys(meta.versions).length === 0;
    if (empty) {
      await unlink(this.metaPath(name)).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw e;
      });
      return;
    }
    await writeFileDurably(this.metaPath(name), `${JSON.stringify(meta, null, 1)}\n`, { mode: 0o666, tempDir: this.tmpDir });
  }

  /** Tells the store which versions tasks use, so its own keep-versions prune at commit leaves them. */
  setVersionsInUse(fn: VersionsInUse): void {
    this.inUse = fn;
  }

  /** Stores (or, with null, clears) the image's retention policy. */
  async setRetention(name: string, policy: RetentionPolicy | null): Promise<void> {
    await this.mutex.run(async () => {
      if ((await this.versions(name)).length === 0) throw new ImageNotFoundError(name);
      await this.writeMeta(name, { ...(await this.meta(name)), retention: policy });
      this.log.info({ image: name, retention: policy }, 'retention policy set');
    });
  }

  /** Protects or unprotects a version, or sets its note. */
  async setVersionMeta(name: string, version: number, patch: Partial<VersionMeta>): Promise<VersionMeta> {
    return this.mutex.run(async () => {
      if (!(await this.versions(name)).includes(version)) throw new ImageNotFoundError(name, version);
      const next = withVersionMeta(await this.meta(name), version, patch);
      await this.writeMeta(name, next);
      this.log.info({ image: name, version, ...patch }, 'version metadata changed');
      return versionMeta(next, version);
    });
  }

  /**
   * Removes the given versions of an image (a retention prune), checked again under the store's
   * lock: a protected version, one a task uses and the newest are never removed, whatever the caller
   * decided before. Returns the versions removed, ascending; run gc() to free their chunks.
   */
  async removeVersions(name: string, versions: readonly number[]): Promise<number[]> {
    return this.mutex.run(async () => {
      const vs = await this.versions(name);
      const meta = await this.meta(name);
      const inUse = this.inUse(name);
      const newest = vs[vs.length - 1];
      const drop = vs.filter((v) => versions.includes(v) && v !== newest && !versionMeta(meta, v).protected && (inUse.get(v)?.length ?? 0) === 0);
      if (drop.length === 0) return [];
      for (const v of drop) {
        await unlink(this.manifestPath(name, v));
        await this.unlinkLayout(name, v);
      }
      this.generation++;
      await fsyncDir(this.versionsDir(name));
      await this.writeMeta(name, withoutVersions(meta, drop));
      this.log.info({ image: name, removed: drop }, 'versions removed by retention');
      return drop;
    });
  }

  /** Committed version numbers, ascending; [] if the image does not exist. */
  async versions(name: string): Promise<number[]> {
    let names: string[];
    try {
      names = await readdir(this.versionsDir(name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: number[] = [];
    for (const n of names) {
      const m = MANIFEST_RE.exec(n);
      if (m) out.push(Number(m[1]));
    }
    return out.sort((a, b) => a - b);
  }

  private async readHeader(name: string, version: number): Promise<{ header: ManifestHeader; bytes: number }> {
    const path = this.manifestPath(name, version);
    const fh = await open(path, 'r');
    try {
      const st = await fh.stat();
      const prefix = Buffer.alloc(MANIFEST_PREFIX_LENGTH);
      await fh.read(prefix, 0, prefix.length, 0);
      const hlen = manifestHeaderLength(prefix);
      const buf = Buffer.alloc(MANIFEST_PREFIX_LENGTH + hlen);
      const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
      const header = parseManifestHeader(buf.subarray(0, bytesRead));
      if (header.version !== version) throw new ManifestError(`file ${version}.manifest says it is version ${header.version}`);
      const expect = expectedManifestLength(hlen, header);
      if (st.size !== expect) throw new ManifestError(`file is ${st.size} bytes, expected ${expect} (truncated or padded chunk table)`);
      return { header, bytes: st.size };
    } catch (e) {
      if (e instanceof ManifestError) throw new ManifestError(`${path}: ${e.message.replace(/^invalid manifest: /, '')}`);
      throw e;
    }
    finally {
      await fh.close();
    }
  }

  private async readManifest(name: string, version: number): Promise<Manifest> {
    await this.readHeader(name, version); // validates size before reading a possibly huge file
    const path = this.manifestPath(name, version);
    try {
      const m = parseManifest(await readFile(path));
      if (m.header.version !== version) throw new ManifestError(`file says it is version ${m.header.version}`);
      return m;
    } catch (e) {
      if (e instanceof ManifestError) throw new ManifestError(`${path}: ${e.message.replace(/^invalid manifest: /, '')}`);
      throw e;
    }
  }

  private infoOf(name: string, h: ManifestHeader): VersionInfo {
    return {
      name,
      version: h.version,
      size: h.size,
      sectorSize: h.sectorSize,
      chunkSize: h.chunkSize,
      digest: h.digest,
      created: h.created,
      source: h.source,
      dataBytes: h.dataBytes,
      storedBytes: h.storedBytes,
    };
  }

  // --- queries ------------------------------------------------------------------------------

  async list(): Promise<ImageSummary[]> {
    const names = (await readdir(this.imagesDir)).filter(isValidImageName).sort();
    const out: ImageSummary[] = [];
    let space: StoreSpace | null = null;
    try {
      space = await this.space();
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'could not count the store\'s space; the images list shows each newest version\'s own chunk bytes instead');
    }
    const shares = new Map((space?.images ?? []).map((i) => [i.name, i]));
    for (const name of names) {
      const vs = await this.versions(name);
      if (vs.length === 0) continue;
      try {
        const { header } = await this.readHeader(name, vs[vs.length - 1]);
        const share = shares.get(name);
        out.push({
          name, latestVersion: header.version, size: header.size, storedBytes: share?.attributedBytes ?? header.storedBytes, exclusiveBytes: share?.exclusiveBytes ?? header.storedBytes,
          versions: vs.length, created: header.created,
        });
      } catch (e) {
        this.log.error({ image: name, err: (e as Error).message }, 'skipping image with an unreadable manifest');
      }
    }
    return out;
  }

  async exists(name: string): Promise<boolean> {
    return (await this.versions(name)).length > 0;
  }

  /** One committed version's facts, from its manifest header. */
  async versionInfo(name: string, version: number): Promise<VersionInfo> {
    const { header } = await this.readHeader(name, version);
    return this.infoOf(name, header);
  }

  async show(name: string): Promise<StoredImage> {
    const vs = await this.versions(name);
    if (vs.length === 0) throw new ImageNotFoundError(name);
    const meta = await this.meta(name);
    const space = (await this.space()).images.find((i) => i.name === name);
    const perVersion = new Map((space?.versions ?? []).map((v) => [v.version, v]));
    const versions: VersionDetails[] = [];
    for (const v of vs) {
      const { header, bytes } = await this.readHeader(name, v);
      const sp = perVersion.get(v);
      const vm = versionMeta(meta, v);
      versions.push({
        ...this.infoOf(name, header),
        manifestBytes: bytes,
        // A version committed after the count (a race with a capture) has none yet: all its data is new to the page.
        previousVersion: sp?.previousVersion ?? null,
        changedBytes: sp?.changedBytes ?? header.dataBytes,
        changedStoredBytes: sp?.changedStoredBytes ?? header.storedBytes,
        protected: vm.protected,
        note: vm.note,
        sourceMac: sourceMacOf(header.source),
      });
    }
    const latest = versions[versions.length - 1];
    const own = space ?? this.aloneSpace(name, versions);
    return {
      name,
      versions,
      latestVersion: latest.version,
      size: latest.size,
      sectorSize: latest.sectorSize,
      dataBytes: latest.dataBytes,
      storedBytes: own.attributedBytes,
      exclusiveBytes: own.exclusiveBytes,
      sharedBytes: own.sharedBytes,
      compressionRatio: latest.storedBytes > 0 ? latest.dataBytes / latest.storedBytes : 1,
      dedupSavings: own.dedupSavings,
      retention: meta.retention,
    };
  }

  /** Figures for an image the last count missed (committed meanwhile): its newest version's own bytes. */
  private aloneSpace(name: string, versions: readonly VersionDetails[]): ImageSpace {
    const latest = versions[versions.length - 1];
    return { name, versions: [], logicalBytes: latest.dataBytes, referencedBytes: latest.storedBytes, attributedBytes: latest.storedBytes, exclusiveBytes: latest.storedBytes, sharedBytes: 0, dedupSavings: 0 };
  }

  /**
   * The whole store's space (store-space.ts): what it holds on disk against the data of all versions,
   * each image's share, and each version's changed bytes. Counted from every manifest, and kept until
   * a version is added or removed. The count does not hold the store's lock (on a big store it reads
   * for seconds, and deploys and commits must not wait for a page): a version removed meanwhile is
   * left out, and a count that overlapped a change is returned but not kept. A damaged manifest is
   * left out too (gc and verify report it).
   */
  async space(): Promise<StoreSpace> {
    const cached = this.spaceCache;
    if (cached && cached.generation === this.generation) return cached.space;
    if (this.spaceCounting && this.spaceCounting.generation === this.generation) return this.spaceCounting.done;
    const generation = this.generation;
    const done = this.countSpace().then((space) => {
      if (this.generation === generation) this.spaceCache = { generation, space };
      return space;
    }).finally(() => {
      if (this.spaceCounting?.done === done) this.spaceCounting = null;
    });
    this.spaceCounting = { generation, done };
    return done;
  }

  private async countSpace(): Promise<StoreSpace> {
    const tally = new SpaceTally();
    for (const name of (await readdir(this.imagesDir)).filter(isValidImageName).sort()) {
      for (const v of await this.versions(name)) {
        try {
          tally.addVersion(name, await this.readManifest(name, v));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
          if (!(e instanceof ManifestError)) throw e;
          this.log.error({ image: name, version: v, err: e.message }, 'space count skipped a damaged manifest; verify that image');
        }
      }
    }
    return tally.result();
  }

  /**
   * Opens a version (newest if not given) for reading; close() it when done so gc can reclaim its
   * chunks. The manifest is read and pinned under the store's lock: a gc between reading it and
   * pinning it could otherwise delete chunks of a version that a prune just dropped.
   */
  async openVersion(name: string, version?: number): Promise<VersionReader> {
    return this.mutex.run(async () => {
      const vs = await this.versions(name);
      if (vs.length === 0) throw new ImageNotFoundError(name);
      const v = version ?? vs[vs.length - 1];
      if (!vs.includes(v)) throw new ImageNotFoundError(name, v);
      const m = await this.readManifest(name, v);
      return new VersionReader(this, name, m);
    });
  }

  // --- capture and commit -------------------------------------------------------------------

  beginCapture(name: string, opts: CaptureOptions): Capture {
    if (this.closed) throw new Error('image store is closed');
    assertValidImageName(name);
    if (!Number.isSafeInteger(opts.size) || opts.size <= 0 || opts.size > MAX_DISK_SIZE) throw new RangeError(`capture size ${opts.size} is out of range (1 byte to ${MAX_DISK_SIZE})`);
    const sectorSize = opts.sectorSize ?? 512;
    if (sectorSize !== 512 && sectorSize !== 4096) throw new RangeError(`sector size ${sectorSize} is not 512 or 4096`);
    this.checkNewVersion(name);
    const layout = opts.layout;
    if (layout && (layout.diskSize !== opts.size || layout.sectorSize !== sectorSize || layout.chunkSize !== this.chunkSize)) {
      throw new RangeError(`the disk layout describes a ${layout.diskSize}-byte disk of ${layout.sectorSize}-byte sectors in ${layout.chunkSize}-byte chunks; this capture is ${opts.size} bytes, ${sectorSize}-byte sectors, ${this.chunkSize}-byte chunks`);
    }
    const commit = (cap: Capture): Promise<VersionInfo> => {
      if (layout) {
        // As for a chunk upload: a chunk the layout calls free is never written by a deploy, so it must not hold data.
        const free = freeChunkTest(layout);
        for (const e of cap.table.entries()) if (free(e.index)) throw new Error(`chunk ${e.index} of the capture of ${name} holds data, but its disk layout says it is free space; the layout does not describe this disk`);
      }
      return this.commitVersion({ name, size: cap.size, sectorSize: cap.sectorSize, chunkSize: cap.chunkSize, source: cap.source, entries: () => cap.table.entries(), via: 'capture', ...(layout ? { layout } : {}) });
    };
    const c = new Capture(this, name, this.chunkSize, { ...opts, sectorSize }, commit, (cap) => {
      if (this.captures.get(name) === cap) this.captures.delete(name);
    });
    this.captures.set(name, c);
    this.log.info({ image: name, size: opts.size, source: opts.source }, 'capture started');
    return c;
  }

  /** Refuses a second capture or upload of an image (either would make its next version). */
  private checkNewVersion(name: string): void {
    const open = this.captures.get(name);
    if (open instanceof Capture) throw new Error(`image ${name} is already being captured; wait for that capture to finish or abort it`);
    if (open) throw new Error(`image ${name} is already being captured by a chunk upload; wait for it to finish or abort it`);
  }

  /**
   * Starts a chunk upload: the client sends the chunks the store lacks as chunk files, then the
   * ordered chunk list (see chunk-upload.ts). Refused like beginCapture.
   */
  beginUpload(name: string, opts: ChunkUploadOptions): ChunkUpload {
    if (this.closed) throw new Error('image store is closed');
    assertValidImageName(name);
    if (!Number.isSafeInteger(opts.size) || opts.size <= 0 || opts.size > MAX_DISK_SIZE) throw new RangeError(`upload size ${opts.size} is out of range (1 byte to ${MAX_DISK_SIZE})`);
    const sectorSize = opts.sectorSize ?? 512;
    if (sectorSize !== 512 && sectorSize !== 4096) throw new RangeError(`sector size ${sectorSize} is not 512 or 4096`);
    this.checkNewVersion(name);
    const u = new ChunkUpload(
      {
        ctx: this,
        chunkSize: this.chunkSize,
        openLatest: () => this.openLatest(name),
        commitVersion: (v) => this.commitVersion(v),
        journals: this.journals,
        onEnd: (up) => {
          if (this.captures.get(name) === up) this.captures.delete(name);
        },
      },
      name,
      { ...opts, sectorSize },
    );
    this.captures.set(name, u);
    this.log.info({ image: name, size: opts.size, source: opts.source }, 'chunk upload started');
    return u;
  }

  /** The newest version, opened (so pinned), or null when the image has none. */
  private async openLatest(name: string): Promise<VersionReader | null> {
    try {
      return await this.openVersion(name);
    } catch (e) {
      if (e instanceof ImageNotFoundError) return null;
      throw e;
    }
  }

  /**
   * A stored chunk file as it is on disk, not decoded: a deploy client decodes and checks it itself.
   * Only a chunk `pinnedBy` names is served (so a version's holder cannot fetch other images' chunks),
   * and that open reader keeps the file from gc until it is closed. Chunk files are never modified in
   * place: a damaged one is only ever replaced by a rename, so the file opened here is read whole as one file.
   */
  async chunkFile(hash: string, pinnedBy: VersionReader): Promise<{ readonly size: number; readonly bytes: Buffer; stream(): Readable }> {
    if (pinnedBy.isClosed) throw new Error(`reader for ${pinnedBy.name} version ${pinnedBy.version} is closed; open the version again`);
    if (!/^[0-9a-f]{64}$/.test(hash) || !pinnedBy.names(hash)) throw new Error(`version ${pinnedBy.version} of ${pinnedBy.name} has no chunk ${hash}`);
    const path = this.chunks.pathOf(hash);
    // Several PCs deploying one image ask for the same files within moments of each other: a path
    // stat that finds the very file read before (same inode, size and mtime) serves its bytes again.
    let st;
    try {
      st = await stat(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new ChunkCorruptError(hash, 'chunk file is missing');
      throw e;
    }
    const seen = this.servedChunkFiles.get(`${hash} ${st.ino} ${st.size} ${st.mtimeMs}`);
    if (seen !== undefined) return { size: seen.length, bytes: seen, stream: () => Readable.from([seen], { objectMode: false }) };
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new ChunkCorruptError(hash, 'chunk file is missing');
      throw e;
    }
    // A chunk file is at most maxChunkFileSize (about one chunk): one read into one buffer, sent with
    // one write, costs far less than a stream's 64 KiB pieces. Cached by what the open handle reports.
    let bytes: Buffer;
    try {
      const opened = await fh.stat();
      const size = opened.size;
      bytes = Buffer.allocUnsafeSlow(size);
      let got = 0;
      while (got < size) {
        const { bytesRead } = await fh.read(bytes, got, size - got, got);
        if (bytesRead === 0) throw new ChunkCorruptError(hash, `chunk file ended at byte ${got} of ${size} while it was read`);
        got += bytesRead;
      }
      this.servedChunkFiles.set(`${hash} ${opened.ino} ${opened.size} ${opened.mtimeMs}`, bytes);
    } finally {
      await fh.close();
    }
    const whole = bytes;
    return { size: whole.length, bytes: whole, stream: () => Readable.from([whole], { objectMode: false }) };
  }

  /**
   * The one commit path: writes the manifest of `nv` as the image's next version, after every chunk
   * it names is durable, then prunes. Captures and chunk uploads both end here.
   */
  private async commitVersion(nv: NewVersion): Promise<VersionInfo> {
    return this.mutex.run(async () => {
      if (this.closed) throw new Error('image store is closed');
      const name = nv.name;
      const vs = await this.versions(name);
      const version = (vs[vs.length - 1] ?? 0) + 1;
      // Built from the data chunks alone: a huge, mostly empty disk never gets a dense table in RAM.
      const digest = imageDigestFromEntries(nv.size, nv.chunkSize, nv.entries());
      const unique = new Map<string, number>();
      for (const e of nv.entries()) unique.set(e.hash.toString('hex'), e.size);
      let storedBytes = 0;
      for (const s of unique.values()) storedBytes += s;
      const { bytes, header } = encodeManifestFromEntries(
        { version, size: nv.size, sectorSize: nv.sectorSize, chunkSize: nv.chunkSize, digest, created: new Date().toISOString(), source: nv.source, storedBytes },
        () => nv.entries(),
      );
      // Chunk files were fsynced when written; their directory entries must be durable before the manifest.
      await this.chunks.syncDirs();
      const vdir = this.versionsDir(name);
      const isNew = vs.length === 0;
      await mkdir(vdir, { recursive: true });
      if (isNew) {
        await fsyncDir(this.imageDir(name));
        await fsyncDir(this.imagesDir);
      }
      // A version removed earlier may have had this number: its protect flag and note are not this one's.
      if (!isNew) {
        try {
          const meta = await this.meta(name);
          const cleared = withoutVersions(meta, [version]);
          if (cleared !== meta) await this.writeMeta(name, cleared);
        } catch (e) {
          // A damaged image.json must not stop a backup; nothing is pruned until it is fixed (see meta()).
          this.log.error({ image: name, version, err: (e as Error).message }, 'could not clear an old protect flag or note for the new version number');
        }
      }
      // A layout left by a commit that failed after writing it must not describe this version.
      if (nv.layout) await writeFileDurably(this.layoutPath(name, version), JSON.stringify(nv.layout), { mode: 0o666, tempDir: this.tmpDir, syncDir: false });
      else await this.unlinkLayout(name, version);
      await writeFileDurably(this.manifestPath(name, version), bytes, { mode: 0o666, tempDir: this.tmpDir, syncDir: false });
      // The rename is the commit: from here on the version exists, whatever fails after it.
      this.generation++;
      this.chunks.settle(unique.keys());
      this.log.info({ image: name, version, size: nv.size, dataBytes: header.dataBytes, storedBytes, digest }, nv.via === 'capture' ? 'capture committed' : 'chunk upload committed');
      try {
        await fsyncDir(vdir);
      } catch (e) {
        this.log.error({ image: name, version, err: (e as Error).message }, 'version committed, but syncing its directory failed: a power cut now could lose it; check the disk');
      }
      try {
        await this.pruneLocked(name);
      } catch (e) {
        // The new version is committed either way; a failed prune only keeps an extra old version.
        this.log.error({ image: name, err: (e as Error).message }, 'pruning old versions failed; they will be retried at the next commit');
      }
      return this.infoOf(name, header);
    });
  }

  /**
   * keep-versions, for an image without a retention policy: the newest keepVersions versions stay,
   * and so does every protected version and every version a task uses (they do not count against
   * keepVersions). An image with a policy is pruned by it after its capture's task ends, by the
   * domain layer, which knows the tasks (src/domain/retention.ts).
   */
  private async pruneLocked(name: string): Promise<void> {
    const meta = await this.meta(name);
    if (meta.retention !== null) return;
    const vs = await this.versions(name);
    const inUse = this.inUse(name);
    const drop = vs.slice(0, Math.max(0, vs.length - this.keepVersions)).filter((v) => !versionMeta(meta, v).protected && (inUse.get(v)?.length ?? 0) === 0);
    for (const v of drop) {
      await unlink(this.manifestPath(name, v));
      await this.unlinkLayout(name, v);
    }
    if (drop.length > 0) {
      this.generation++;
      await fsyncDir(this.versionsDir(name));
      await this.writeMeta(name, withoutVersions(meta, drop));
      this.log.info({ image: name, removed: drop }, 'pruned old versions');
    }
  }

  // --- maintenance --------------------------------------------------------------------------

  /**
   * Re-reads every data chunk of a version (newest by default) from disk and checks it against its
   * name (sha256), which also catches a file whose content checksum was forged to match wrong bytes.
   */
  async verify(name: string, opts: { version?: number; onProgress?: ProgressFn } = {}): Promise<VerifyResult> {
    const reader = await this.openVersion(name, opts.version);
    try {
      const damaged: { hash: string; offset: number; reason: string }[] = [];
      const seen = new Map<string, string | null>();
      const n = reader.chunkCount;
      let checked = 0;
      const check = async (i: number): Promise<void> => {
        const hash = reader.chunkHash(i);
        if (hash === null) return;
        let reason = seen.get(hash);
        if (reason === undefined) {
          try {
            await this.pool.load(this.chunks.pathOf(hash), hash, 'full');
            reason = null;
          } catch (e) {
            reason = e instanceof ChunkCorruptError || e instanceof ChunkTooNewError ? e.detail : (e as Error).message;
            this.cache.delete(hash);
            this.log.error({ image: name, version: reader.version, chunk: hash, offset: i * reader.chunkSize, reason }, 'verify found a damaged chunk');
          }
          seen.set(hash, reason);
          checked++;
        }
        if (reason !== null) damaged.push({ hash, offset: i * reader.chunkSize, reason });
      };
      const width = 8;
      for (let i = 0; i < n; i += width) {
        const batch: Promise<void>[] = [];
        for (let j = i; j < Math.min(n, i + width); j++) batch.push(check(j));
        await Promise.all(batch);
        opts.onProgress?.(Math.min((i + width) * reader.chunkSize, reader.size), reader.size);
      }
      damaged.sort((a, b) => a.offset - b.offset);
      return { ok: damaged.length === 0, version: reader.version, checkedChunks: checked, damaged };
    } finally {
      reader.close();
    }
  }

  /** Removes an image, all its versions and its upload journal; its chunks go at the next gc unless shared. */
  async remove(name: string): Promise<void> {
    await this.mutex.run(async () => {
      if (this.captures.has(name)) throw new Error(`image ${name} is being captured; abort the capture first`);
      const vs = await this.versions(name);
      if (vs.length === 0) throw new ImageNotFoundError(name);
      const trash = join(this.tmpDir, `removed-${name}-${Date.now()}`);
      await rename(this.imageDir(name), trash);
      this.generation++;
      await fsyncDir(this.imagesDir);
      await rm(trash, { recursive: true, force: true });
      // Else a new image of that name would resume from the removed one's cut upload.
      await this.journals.remove(name, true);
      this.log.info({ image: name }, 'image removed');
    });
  }

  async renameImage(from: string, to: string): Promise<void> {
    assertValidImageName(from);
    assertValidImageName(to);
    await this.mutex.run(async () => {
      if (this.captures.has(from) || this.captures.has(to)) throw new Error(`image ${this.captures.has(from) ? from : to} is being captured; try again when it finishes`);
      if ((await this.versions(from)).length === 0) throw new ImageNotFoundError(from);
      try {
        await stat(this.imageDir(to));
        throw new Error(`image ${to} already exists; remove it or pick another name`);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      await rename(this.imageDir(from), this.imageDir(to));
      this.generation++;
      await fsyncDir(this.imagesDir);
      // The image's cut upload resumes under its new name; one left under `to` belonged to another disk.
      await this.journals.rename(from, to);
      this.log.info({ from, to }, 'image renamed');
    });
  }

  /** Removes one version; removing the last one removes the image. */
  async removeVersion(name: string, version: number): Promise<void> {
    await this.mutex.run(async () => {
      const vs = await this.versions(name);
      if (!vs.includes(version)) throw new ImageNotFoundError(name, version);
      const meta = await this.meta(name);
      if (versionMeta(meta, version).protected) throw new VersionProtectedError(name, version);
      await unlink(this.manifestPath(name, version));
      await this.unlinkLayout(name, version);
      this.generation++;
      await fsyncDir(this.versionsDir(name));
      if (vs.length === 1 && !this.captures.has(name)) await rm(this.imageDir(name), { recursive: true, force: true });
      else await this.writeMeta(name, withoutVersions(meta, [version]));
      this.log.info({ image: name, version }, 'version removed');
    });
  }

  /**
   * Deletes chunk files no manifest, open reader, live capture or young upload journal names, and
   * upload journals that expired (unless their image has an upload open). Chunks put while gc runs
   * are never deleted (ChunkStore tracks them), and a capture deduplicating against a chunk being
   * deleted waits and writes it again.
   */
  async gc(): Promise<{ removedChunks: number; freedBytes: number; keptChunks: number; damagedManifests: string[] }> {
    return this.mutex.run(async () => {
      this.chunks.beginGc();
      try {
        const candidates = new Set<string>();
        for await (const c of this.chunks.list()) candidates.add(c.hash);
        const mark = (hashes: Buffer): void => {
          for (let o = 0; o < hashes.length; o += 32) {
            if (hashes.readBigUInt64LE(o) === 0n && hashes.readBigUInt64LE(o + 8) === 0n && hashes.readBigUInt64LE(o + 16) === 0n && hashes.readBigUInt64LE(o + 24) === 0n) continue;
            candidates.delete(hashes.toString('hex', o, o + 32));
          }
        };
        const damaged: string[] = [];
        for (const name of (await readdir(this.imagesDir)).filter(isValidImageName)) {
          for (const v of await this.versions(name)) {
            let m: Manifest;
            try {
              m = await this.readManifest(name, v);
            } catch (e) {
              // Its table cannot be trusted, but every chunk it might name must survive: keep any chunk
              // whose hash appears anywhere in its bytes, and go on with the rest of the store.
              const path = this.manifestPath(name, v);
              this.log.error({ image: name, version: v, err: (e as Error).message }, 'gc skipped a damaged manifest and keeps every chunk it may name; verify that image and remove or re-capture the version');
              damaged.push(`${name} version ${v}`);
              keepNamedIn(await readFile(path), candidates);
              continue;
            }
            mark(m.hashes);
          }
        }
        let expiredJournals = 0;
        for (const image of await this.journals.images()) {
          // An open upload of the image may count on its journal's chunks whatever its age.
          const open = this.captures.has(image);
          const j = await this.journals.read(image, open);
          if (j.expired && !open) {
            await this.journals.remove(image);
            expiredJournals++;
            continue;
          }
          for (const h of j.entries.keys()) candidates.delete(h);
        }
        for (const pin of this.pins.keys()) for (const block of pin.hashBlocks()) mark(block);
        let removedChunks = 0;
        let freedBytes = 0;
        const total = candidates.size;
        for (const hash of candidates) {
          const freed = await this.chunks.collect(hash);
          if (freed > 0) {
            removedChunks++;
            freedBytes += freed;
            this.cache.delete(hash);
          }
        }
        this.log.info({ removedChunks, freedBytes, candidates: total, damagedManifests: damaged.length, expiredJournals }, 'gc finished');
        let keptChunks = 0;
        for await (const _c of this.chunks.list()) keptChunks++;
        return { removedChunks, freedBytes, keptChunks, damagedManifests: damaged };
      } finally {
        this.chunks.endGc();
      }
    });
  }
}
