/**
 * A chunk upload: a new version made from chunk files a client (the imaging agent) hashed, compressed
 * and sent itself, then its ordered chunk list.
 *
 * The client is never trusted. Every uploaded file is checked in a codec worker before it is stored
 * (format, bounds, and sha256 of its decoded bytes against the name it was sent under: a poisoned chunk
 * in a dedup store would corrupt every image that uses it). known() tells the client only which of its
 * hashes this session can use without an upload: the ones this image's newest version names, the
 * ones uploaded here, and the ones earlier uploads of this same image received (its upload journal,
 * see upload-journal.ts), never "anything in the store", which would let a token holder probe the
 * store for given data. commit() accepts only hashes of that kind.
 *
 * Resuming: every accepted chunk gets a line in the image's upload journal once its file is in place.
 * An upload cut midway (aborted, or the server killed) leaves its chunks and the journal behind, and
 * the next upload of the image counts them as known after checking each file is there with the size
 * the journal recorded: a retried task sends only what the cut one had not. A commit removes the
 * journal; gc keeps what a journal names for RESUME_WINDOW_MS after its last line.
 *
 * Chunk files are recorded through the chunk store's adopt/release/settle, as a capture's are: a file
 * this session was first to write is provisional (counted once per session that uploaded it) until
 * its journal line is written; from then on the journal, not the session, keeps it (ChunkStore
 * handOver), so an abort leaves it for the next upload. A file whose line could not be written stays
 * provisional and is dropped on abort unless something else uses it. A manifest naming a chunk makes
 * it permanent. The session is a gc pin for what it uploaded or counts from its journal, and keeps the
 * previous version open (so pinned) until it ends, so the chunks it counts as known stay on disk even
 * if that version is pruned or removed.
 */
import { stat } from 'node:fs/promises';
import { ChunkRejectedError, type PutOutcome } from './codec-pool.js';
import { ChunkTable } from './chunk-table.js';
import { maxChunkFileSize } from './chunk-format.js';
import { chunkCountFor, chunkLength } from './manifest.js';
import type { VersionReader } from './version-reader.js';
import type { JournalEntry, JournalWriter, UploadJournals } from './upload-journal.js';
import type { HashPin, NewVersion, StoreContext, VersionInfo } from './types.js';
import { freeChunkTest, type DiskLayout } from './disk-layout.js';

const HASH_RE = /^[0-9a-f]{64}$/;
/** Chunk files stat'ed at once when commit checks they are on disk. */
const STAT_BATCH = 64;

export interface ChunkUploadOptions {
  readonly size: number;
  readonly sectorSize?: 512 | 4096;
  readonly source: string;
}

/** What a session needs from its store (ImageStore.beginUpload provides it). */
export interface UploadHost {
  readonly ctx: StoreContext;
  /** Chunk size of new versions. */
  readonly chunkSize: number;
  /** The image's newest version, opened (so pinned), or null when it has none. */
  openLatest(): Promise<VersionReader | null>;
  /** The store's one commit path. */
  commitVersion(v: NewVersion): Promise<VersionInfo>;
  /** The store's upload journals (this session reads and appends to its image's). */
  readonly journals: UploadJournals;
  /** The session ended (committed or aborted): the image is free for another capture or upload. */
  onEnd(u: ChunkUpload): void;
}

/** An uploaded chunk, or the request around it, failed a check; `message` can go in a log line. Nothing was stored. */
export class ChunkUploadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChunkUploadError';
  }
}

/** commit() was given hashes this session cannot use: upload them (put) and commit again; the session stays open. */
export class MissingChunksError extends Error {
  constructor(readonly missing: readonly string[]) {
    super(`${missing.length} listed chunk${missing.length === 1 ? ' is' : 's are'} not uploaded in this session nor named by the previous version: upload ${missing.length === 1 ? 'it' : 'them'} and commit again (first: ${missing.slice(0, 3).join(', ')})`);
    this.name = 'MissingChunksError';
  }
}

export class ChunkUploadClosedError extends Error {
  constructor(name: string, state: string, reason?: string) {
    super(`chunk upload of ${name} is ${state}${reason ? ` (${reason})` : ''}; start a new upload`);
    this.name = 'ChunkUploadClosedError';
  }
}

/** A chunk this session may list: its file's size and its decoded length. */
interface UsableChunk {
  stored: number;
  readonly length: number;
}

interface Previous {
  readonly reader: VersionReader;
  readonly chunks: Map<string, UsableChunk>;
}

/** This image's upload journal as the session found it, and the writer for its own lines. */
interface Journal {
  /** Chunks earlier uploads received, not yet checked on disk (checked ones move to `resumed`). */
  readonly entries: Map<string, JournalEntry>;
  readonly writer: JournalWriter | null;
}

type UploadState = 'open' | 'committing' | 'committed' | 'aborted';

export class ChunkUpload implements HashPin {
  readonly size: number;
  readonly sectorSize: number;
  readonly chunkSize: number;
  readonly chunkCount: number;
  readonly source: string;
  /** Chunks put in this session; each holds one provisional count in the chunk store until the session ends. */
  private readonly uploaded = new Map<string, UsableChunk>();
  /** Hashes of puts under way (pinned before their file is adopted). */
  private readonly putting = new Map<string, number>();
  private readonly inflight = new Set<Promise<void>>();
  private readonly previous: Promise<Previous | null>;
  private readonly journal: Promise<Journal>;
  /** Journal entries of earlier uploads whose files were found in place: usable like uploaded ones. */
  private readonly resumed = new Map<string, UsableChunk>();
  /** Hashes this session wrote a journal line for. */
  private readonly journaled = new Set<string>();
  private state: UploadState = 'open';
  private abortReason: string | undefined;
  private committing: Promise<VersionInfo> | null = null;
  private diskLayout: DiskLayout | null = null;
  private bytesReceived = 0;

  constructor(
    private readonly host: UploadHost,
    readonly name: string,
    opts: ChunkUploadOptions,
  ) {
    this.size = opts.size;
    this.sectorSize = opts.sectorSize ?? 512;
    this.chunkSize = host.chunkSize;
    this.source = opts.source;
    this.chunkCount = chunkCountFor(this.size, this.chunkSize);
    host.ctx.addPin(this);
    this.previous = this.loadPrevious();
    this.journal = this.loadJournal();
  }

  get status(): UploadState {
    return this.state;
  }

  /** Bytes of chunk files accepted so far (what crossed the wire for stored chunks). */
  get bytesUploaded(): number {
    return this.bytesReceived;
  }

  *hashBlocks(): Generator<Buffer> {
    const hashes = new Set([...this.uploaded.keys(), ...this.putting.keys(), ...this.resumed.keys()]);
    if (hashes.size === 0) return;
    const b = Buffer.alloc(hashes.size * 32);
    let o = 0;
    for (const h of hashes) o += b.write(h, o, 32, 'hex');
    yield b;
  }

  private async loadPrevious(): Promise<Previous | null> {
    let reader: VersionReader | null;
    try {
      reader = await this.host.openLatest();
    } catch (e) {
      // Without it every chunk is uploaded: slower, never wrong.
      this.host.ctx.log.error({ image: this.name, err: (e as Error).message }, 'chunk upload cannot read the previous version; every chunk will be uploaded');
      return null;
    }
    if (reader === null) return null;
    if (reader.chunkSize !== this.chunkSize) {
      reader.close();
      return null;
    }
    const chunks = new Map<string, UsableChunk>();
    for (const e of reader.entries()) chunks.set(e.hash.toString('hex'), { stored: e.size, length: chunkLength(reader.size, reader.chunkSize, e.index) });
    return { reader, chunks };
  }

  private async loadJournal(): Promise<Journal> {
    const { journals, ctx } = this.host;
    try {
      const found = await journals.read(this.name);
      if (found.expired) {
        // Appending to it would make its old lines young again; its chunks are gc's to remove.
        await journals.remove(this.name);
        return { entries: new Map(), writer: journals.writer(this.name, false) };
      }
      if (found.entries.size > 0) ctx.log.info({ image: this.name, chunks: found.entries.size }, 'chunk upload resumes: earlier uploads of this image left chunks it need not receive again');
      return { entries: found.entries, writer: journals.writer(this.name, found.torn) };
    } catch (e) {
      // Without it the chunks of an earlier, cut upload are sent again: slower, never wrong.
      ctx.log.error({ image: this.name, err: (e as Error).message }, 'chunk upload cannot read its upload journal; chunks sent before a cut will be sent again, and this upload cannot be resumed');
      return { entries: new Map(), writer: null };
    }
  }

  /**
   * Moves the journal entries among `hashes` whose files are in place, with the size their line
   * recorded, to `resumed`; the others are forgotten (the client is asked for them).
   */
  private async checkJournaled(hashes: readonly string[]): Promise<void> {
    const { entries } = await this.journal;
    const { chunks, log } = this.host.ctx;
    const todo = [...new Set(hashes.filter((h) => entries.has(h) && !this.resumed.has(h)))];
    const found: string[] = [];
    for (let i = 0; i < todo.length; i += STAT_BATCH) {
      await Promise.all(
        todo.slice(i, i + STAT_BATCH).map(async (h) => {
          const e = entries.get(h);
          if (e === undefined) return;
          let size: number | null = null;
          try {
            size = (await stat(chunks.pathOf(h))).size;
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
          }
          entries.delete(h);
          if (size !== e.stored) {
            log.warn({ image: this.name, chunk: h, expected: e.stored, found: size }, 'chunk upload: a chunk an earlier upload of this image left is missing or changed; asking the client for it');
            return;
          }
          this.resumed.set(h, { stored: size, length: e.length });
          found.push(h);
        }),
      );
    }
    chunks.markUnsynced(found);
  }

  private closedError(): ChunkUploadClosedError {
    return new ChunkUploadClosedError(this.name, this.state, this.abortReason);
  }

  /**
   * Of `hashes` (lowercase hex sha256), those the client need not send: named by this image's newest
   * committed version, uploaded in this session, or received by an earlier upload of this image and
   * still on disk. Never "any chunk in the store".
   */
  async known(hashes: readonly string[]): Promise<Set<string>> {
    if (this.state !== 'open') throw this.closedError();
    const prev = await this.previous;
    await this.checkJournaled(hashes.filter((h) => !this.uploaded.has(h) && prev?.chunks.has(h) !== true));
    const out = new Set<string>();
    for (const h of hashes) if (this.uploaded.has(h) || prev?.chunks.has(h) === true || this.resumed.has(h)) out.add(h);
    return out;
  }

  /**
   * Checks one chunk file exactly as the client sent it and stores it (see PutRequest for the checks,
   * which run in a codec worker). Throws ChunkUploadError naming the failed check; nothing is stored
   * then. A chunk already on disk intact is not rewritten (existed: true).
   */
  put(hash: string, file: Buffer): Promise<{ readonly stored: number; readonly existed: boolean }> {
    if (this.state !== 'open') return Promise.reject(this.closedError());
    if (typeof hash !== 'string' || !HASH_RE.test(hash)) return Promise.reject(new ChunkUploadError(`chunk name ${JSON.stringify(String(hash).slice(0, 80))} is not a lowercase hex sha256`));
    const max = maxChunkFileSize(this.chunkSize);
    if (file.length > max) return Promise.reject(this.refuse(hash, `chunk file is ${file.length} bytes, larger than any ${this.chunkSize}-byte chunk's file (${max})`));
    const work = this.store(hash, file);
    const done = work.then(
      () => undefined,
      () => undefined,
    );
    this.inflight.add(done);
    void done.then(() => this.inflight.delete(done));
    return work;
  }

  private refuse(hash: string, reason: string): ChunkUploadError {
    this.host.ctx.log.warn({ image: this.name, chunk: hash, reason }, 'uploaded chunk refused');
    return new ChunkUploadError(`chunk ${hash} refused: ${reason}`);
  }

  private async store(hash: string, file: Buffer): Promise<{ readonly stored: number; readonly existed: boolean }> {
    const { pool, chunks, tmpDir } = this.host.ctx;
    this.putting.set(hash, (this.putting.get(hash) ?? 0) + 1);
    try {
      let epoch = chunks.unlinkEpoch;
      let out: PutOutcome;
      try {
        out = await pool.put(file, hash, this.chunkSize, chunks.dir, tmpDir);
      } catch (e) {
        if (e instanceof ChunkRejectedError) throw this.refuse(hash, e.detail);
        throw e;
      }
      let stored = await chunks.adopt({ hash, stored: out.stored, fresh: out.fresh, tmpPath: out.tmpPath }, epoch);
      if (stored === null) {
        // gc or a release unlinked the file the worker found; write it again (adopt waited for the unlink).
        epoch = chunks.unlinkEpoch;
        out = await pool.put(file, hash, this.chunkSize, chunks.dir, tmpDir, true);
        stored = await chunks.adopt({ hash, stored: out.stored, fresh: out.fresh, tmpPath: out.tmpPath }, epoch);
        if (stored === null) throw new Error(`chunk ${hash} vanished right after it was written; check the store's disk`);
      }
      // The session holds one count per chunk, however often the client sent it.
      if (this.uploaded.has(hash)) await chunks.release(hash);
      this.uploaded.set(hash, { stored, length: out.length });
      if (!out.existed) this.bytesReceived += file.length;
      await this.journalPut(hash, { length: out.length, stored });
      return { stored, existed: out.existed };
    } finally {
      const n = this.putting.get(hash) ?? 1;
      if (n <= 1) this.putting.delete(hash);
      else this.putting.set(hash, n - 1);
    }
  }

  /** Records a chunk in place in the image's journal, which keeps it from then on (see the module comment). */
  private async journalPut(hash: string, e: JournalEntry): Promise<void> {
    const { writer } = await this.journal;
    if (writer === null || this.journaled.has(hash)) return;
    try {
      await writer.append(hash, e);
    } catch (err) {
      this.host.ctx.log.warn({ image: this.name, chunk: hash, err: (err as Error).message }, 'chunk upload: writing the upload journal failed; if this upload is cut, this chunk will be sent again');
      return;
    }
    this.journaled.add(hash);
    this.host.ctx.chunks.handOver([hash]);
  }

  private async drain(): Promise<void> {
    while (this.inflight.size > 0) await Promise.all([...this.inflight]);
  }

  /**
   * Records what the agent learnt of the disk (issue 12), committed beside the version. It must
   * describe this disk: same size, sector size and chunk size.
   */
  setLayout(layout: DiskLayout): void {
    if (this.state !== 'open') throw this.closedError();
    if (layout.diskSize !== this.size || layout.sectorSize !== this.sectorSize || layout.chunkSize !== this.chunkSize) {
      throw new ChunkUploadError(`the disk layout describes a ${layout.diskSize}-byte disk of ${layout.sectorSize}-byte sectors in ${layout.chunkSize}-byte chunks; this upload is ${this.size} bytes, ${this.sectorSize}-byte sectors, ${this.chunkSize}-byte chunks`);
    }
    this.diskLayout = layout;
  }

  /**
   * Commits a new version whose chunk i is list[i] (null = all zeros). Throws MissingChunksError for
   * hashes this session cannot use or that are not on disk (the session stays open: upload them and
   * commit again), ChunkUploadError for a list that cannot be this disk's (wrong length, a chunk of
   * the wrong decoded length at its position; the session stays open too).
   */
  commit(list: readonly (string | null)[]): Promise<VersionInfo> {
    if (this.state !== 'open') return Promise.reject(this.closedError());
    if (list.length !== this.chunkCount) return Promise.reject(new ChunkUploadError(`chunk list has ${list.length} entries; a ${this.size}-byte disk has ${this.chunkCount} chunks of ${this.chunkSize} bytes`));
    if (this.diskLayout) {
      const free = freeChunkTest(this.diskLayout);
      const bad = list.findIndex((h, i) => h !== null && free(i));
      if (bad >= 0) return Promise.reject(new ChunkUploadError(`chunk ${bad} holds data, but the disk layout sent with this upload says it is free space; the agent's layout and list disagree, retry the task`));
    }
    this.state = 'committing';
    const run = this.runCommit(list);
    this.committing = run;
    void run.finally(() => {
      if (this.committing === run) this.committing = null;
    }).catch(() => undefined);
    return run;
  }

  private async runCommit(list: readonly (string | null)[]): Promise<VersionInfo> {
    let table: ChunkTable;
    try {
      // Puts started before commit finish first: each either counts for this list or is refused.
      await this.drain();
      table = await this.tableOf(list);
    } catch (e) {
      if (this.state === 'committing') this.state = 'open';
      throw e;
    }
    try {
      const layout = this.diskLayout ?? undefined;
      const info = await this.host.commitVersion({ name: this.name, size: this.size, sectorSize: this.sectorSize, chunkSize: this.chunkSize, source: this.source, entries: () => table.entries(), via: 'upload', ...(layout ? { layout } : {}) });
      this.state = 'committed';
      // Uploaded but not listed: dropped now unless something else uses them (a listed one was settled
      // by the commit); journaled ones are left to gc, as is what the journal names and nothing lists.
      const listed = new Set(table.storedHashes());
      for (const h of this.uploaded.keys()) if (!listed.has(h)) await this.release(h);
      this.uploaded.clear();
      await this.host.journals.remove(this.name).catch((e: unknown) => {
        this.host.ctx.log.warn({ image: this.name, err: (e as Error).message }, 'chunk upload committed, but removing its upload journal failed; the next upload may count those chunks too, and gc keeps them until the journal expires');
      });
      await this.finish();
      return info;
    } catch (e) {
      if (this.state !== 'committed') await this.discard(`commit failed: ${(e as Error).message}`);
      throw e;
    }
  }

  /** The version's table from `list`, after checking every entry is usable here, the right length, and on disk. */
  private async tableOf(list: readonly (string | null)[]): Promise<ChunkTable> {
    const prev = await this.previous;
    await this.checkJournaled(list.filter((h): h is string => typeof h === 'string' && !this.uploaded.has(h) && prev?.chunks.has(h) !== true));
    const missing = new Set<string>();
    const use = new Map<string, UsableChunk>();
    for (let i = 0; i < list.length; i++) {
      const h = list[i];
      if (h === null) continue;
      if (typeof h !== 'string' || !HASH_RE.test(h)) throw new ChunkUploadError(`chunk list entry ${i} is neither null nor a lowercase hex sha256`);
      const k = this.uploaded.get(h) ?? prev?.chunks.get(h) ?? this.resumed.get(h);
      if (k === undefined) {
        missing.add(h);
        continue;
      }
      const want = chunkLength(this.size, this.chunkSize, i);
      if (k.length !== want) throw new ChunkUploadError(`chunk ${i} is listed as ${h}, which decodes to ${k.length} bytes; chunk ${i} of this ${this.size}-byte disk is ${want} bytes`);
      use.set(h, k);
    }
    const { chunks } = this.host.ctx;
    const hashes = [...use.keys()];
    for (let i = 0; i < hashes.length; i += STAT_BATCH) {
      await Promise.all(
        hashes.slice(i, i + STAT_BATCH).map(async (h) => {
          try {
            (use.get(h) as UsableChunk).stored = (await stat(chunks.pathOf(h))).size;
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
            // Gone from disk (by hand, or a damaged store): the client must send it again.
            this.host.ctx.log.error({ image: this.name, chunk: h }, 'chunk upload: a chunk this session counted on is missing from disk; asking the client for it');
            missing.add(h);
            prev?.chunks.delete(h);
            this.resumed.delete(h);
            if (this.uploaded.delete(h)) await this.release(h);
          }
        }),
      );
    }
    if (missing.size > 0) throw new MissingChunksError([...missing]);
    const table = new ChunkTable(this.chunkCount);
    for (let i = 0; i < list.length; i++) {
      const h = list[i];
      if (h !== null) table.set(i, h, (use.get(h) as UsableChunk).stored);
    }
    return table;
  }

  private async release(hash: string): Promise<void> {
    await this.host.ctx.chunks.release(hash).catch((e: unknown) => {
      this.host.ctx.log.warn({ image: this.name, chunk: hash, err: (e as Error).message }, 'dropping an unused uploaded chunk failed; gc will remove it');
    });
  }

  /**
   * Drops the session: nothing is committed. Chunks in the image's upload journal stay for the next
   * upload of the image (gc keeps them while the journal is young); chunk files only this session
   * wrote and could not journal are removed. Idempotent. A commit under way is not interrupted: abort
   * waits for it, and aborts only if it did not commit.
   */
  async abort(reason: string): Promise<void> {
    if (this.committing) await this.committing.catch(() => undefined);
    await this.discard(reason);
  }

  private async discard(reason: string): Promise<void> {
    if (this.state === 'aborted' || this.state === 'committed') return;
    this.state = 'aborted';
    this.abortReason = reason;
    this.host.ctx.log.warn({ image: this.name, reason, uploadedChunks: this.uploaded.size, journaledChunks: this.journaled.size }, 'chunk upload aborted; previous version left as it was, journaled chunks kept for the next upload of this image');
    await this.drain();
    // A journaled chunk is no longer provisional: this release leaves it to the journal.
    for (const h of this.uploaded.keys()) await this.release(h);
    this.uploaded.clear();
    await this.finish();
  }

  private async finish(): Promise<void> {
    this.host.ctx.removePin(this);
    this.host.onEnd(this);
    (await this.previous)?.reader.close();
  }
}
