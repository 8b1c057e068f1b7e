/**
 * A task's transfer over the chunk transport (issue 11, /tmp/contract.md → boot/client/README.md):
 * the imaging agent moves chunk files over HTTP instead of raw disk bytes over NBD.
 *
 * One object per task, held from the client's start until the task ends:
 * - capture wraps the store's ChunkUpload session (which checks every uploaded file itself);
 * - deploy wraps the version opened at start. The open reader is the gc pin of every chunk the
 *   deploy may still fetch, and it names the only chunks this task may fetch.
 *
 * Both count the bodies that cross the wire on the task's TransferMeter (the server's count is the
 * authoritative one; the agent's counters only say how much of the disk it looked at).
 */
import type { Readable } from 'node:stream';
import { ChunkUploadClosedError, ChunkUploadError, MissingChunksError, type ChunkUpload } from '../imaging/chunk-upload.js';
import type { VersionReader } from '../imaging/version-reader.js';
import { maxChunkFileSize } from '../imaging/chunk-format.js';
import type { TransferMeter } from './transfer-meter.js';
import { DiskLayoutError, parseDiskLayout, type DiskLayout } from '../imaging/disk-layout.js';
import type { ImageVersionInfo } from './store-exports.js';
import { hashAt, KNOWN_BATCH, LIST_ENTRY_BYTES, setHash, type CaptureStart, type DeployStart } from './chunk-wire.js';

export { KNOWN_BATCH } from './chunk-wire.js';

const HASH_RE = /^[0-9a-f]{64}$/;

/** What the client asked for cannot be done; `status` is the HTTP answer, `message` the sentence it shows. */
export class ChunkTransferError extends Error {
  constructor(
    readonly status: 400 | 403 | 404 | 409 | 413 | 507,
    message: string,
    /** For a commit that lists chunks the session lacks: upload these and commit again. */
    readonly missing?: readonly string[],
  ) {
    super(message);
    this.name = 'ChunkTransferError';
  }
}

/** A stored chunk file as it is on disk (see ImageStore.chunkFile). */
export interface ChunkFile {
  readonly size: number;
  /** The whole file (at most maxChunkFileSize bytes), read at once: the route sends it in one write. */
  readonly bytes: Buffer;
  stream(): Readable;
}

/**
 * The store's file system said it is full (ENOSPC, or EDQUOT for a quota). The codec workers pass a
 * system error on as its message only ("ENOSPC: no space left on device, write"), so the words are
 * matched too.
 */
export function isDiskFull(e: unknown): boolean {
  for (let c: unknown = e, depth = 0; c instanceof Error && depth < 5; c = c.cause, depth++) {
    const code = (c as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT' || /\b(ENOSPC|EDQUOT)\b|no space left on device|disk quota exceeded/i.test(c.message)) return true;
  }
  return false;
}

/** 507 for a full store: the agent stops (it repeats only network failures and 503) and the task fails saying what to do. */
function diskFullError(e: Error): ChunkTransferError {
  return new ChunkTransferError(507, `the appliance's image store is full (${e.message}): free space there ("netclone image gc" removes chunks no image uses, "netclone image rm" whole images), then retry the task`);
}

export type ChunkFileSource = (hash: string, pinnedBy: VersionReader) => Promise<ChunkFile>;

function versionInfo(v: { version: number; size: number; sectorSize: number; chunkSize: number; digest: string; dataBytes: number }): ImageVersionInfo {
  return { version: v.version, size: v.size, sectorSize: v.sectorSize, chunkSize: v.chunkSize, digest: v.digest, dataBytes: v.dataBytes };
}

/** The ordered chunk list on the wire: 32 raw bytes per chunk, all zeros for an all-zero chunk (a hole). */
export function decodeChunkList(body: Buffer, chunkCount: number): (string | null)[] {
  if (body.length !== chunkCount * LIST_ENTRY_BYTES) {
    throw new ChunkTransferError(400, `chunk list is ${body.length} bytes; this disk has ${chunkCount} chunks, so it must be ${chunkCount * LIST_ENTRY_BYTES} bytes (32 per chunk)`);
  }
  const list: (string | null)[] = new Array<string | null>(chunkCount);
  for (let i = 0; i < chunkCount; i++) list[i] = hashAt(body, i);
  return list;
}

export class ChunkCaptureTransfer {
  readonly kind = 'capture' as const;
  private version: ImageVersionInfo | null = null;
  private diskLayout: DiskLayout | null = null;

  constructor(
    private readonly upload: ChunkUpload,
    private readonly meter: TransferMeter,
  ) {}

  start(): CaptureStart {
    const u = this.upload;
    return { transport: 'chunks', kind: 'capture', size: u.size, sectorSize: u.sectorSize, chunkSize: u.chunkSize, knownBatch: KNOWN_BATCH };
  }

  /** The largest chunk file a PUT may carry. */
  get maxFileBytes(): number {
    return maxChunkFileSize(this.upload.chunkSize);
  }

  /** The exact length of this disk's chunk list. */
  get listBytes(): number {
    return this.upload.chunkCount * LIST_ENTRY_BYTES;
  }

  /** Bytes of a request or response body that crossed the wire. */
  countWire(bytes: number): void {
    if (bytes > 0) this.meter.add(bytes);
  }

  /** The version the commit made, once it did. */
  get committed(): ImageVersionInfo | null {
    return this.version;
  }

  /** Of `hashes`, the ones the client need not upload (ChunkUpload.known: never "anything in the store"). */
  async known(hashes: readonly string[]): Promise<string[]> {
    if (hashes.length < 1 || hashes.length > KNOWN_BATCH) throw new ChunkTransferError(400, `ask about 1 to ${KNOWN_BATCH} hashes at once, not ${hashes.length}`);
    const bad = hashes.find((h) => !HASH_RE.test(h));
    if (bad !== undefined) throw new ChunkTransferError(400, `${JSON.stringify(bad.slice(0, 80))} is not a lowercase hex sha256`);
    const known = await this.guard(() => this.upload.known(hashes));
    return hashes.filter((h) => known.has(h));
  }

  /** Checks and stores one chunk file (ChunkUpload.put); a refused file stores nothing. */
  put(hash: string, file: Buffer): Promise<{ readonly stored: number; readonly existed: boolean }> {
    if (file.length > this.maxFileBytes) {
      return Promise.reject(new ChunkTransferError(413, `chunk ${hash.slice(0, 64)} refused: its file is ${file.length} bytes, more than any ${this.upload.chunkSize}-byte chunk's file can be (${this.maxFileBytes})`));
    }
    return this.guard(() => this.upload.put(hash, file));
  }

  /** The agent's description of the disk, once it sent one. */
  get layout(): DiskLayout | null {
    return this.diskLayout;
  }

  /** Records the agent's description of the disk (issue 12); the commit keeps it beside the version. */
  setLayout(json: unknown): void {
    let layout: DiskLayout;
    try {
      layout = parseDiskLayout(json);
    } catch (e) {
      if (e instanceof DiskLayoutError) throw new ChunkTransferError(400, `${e.message}; update the imaging client`);
      throw e;
    }
    try {
      this.upload.setLayout(layout);
      this.diskLayout = layout;
    } catch (e) {
      if (e instanceof ChunkUploadClosedError) throw new ChunkTransferError(409, e.message);
      if (e instanceof ChunkUploadError) throw new ChunkTransferError(400, e.message);
      throw e;
    }
  }

  /** Commits the version the ordered chunk list describes. */
  async commit(body: Buffer): Promise<ImageVersionInfo> {
    const list = decodeChunkList(body, this.upload.chunkCount);
    const v = await this.guard(() => this.upload.commit(list));
    this.version = versionInfo(v);
    return this.version;
  }

  /** The task ended: an upload that did not commit is dropped (a commit under way is waited for). */
  async close(reason: string): Promise<void> {
    await this.upload.abort(reason);
  }

  private async guard<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (e) {
      if (e instanceof MissingChunksError) throw new ChunkTransferError(409, e.message, e.missing);
      if (e instanceof ChunkUploadClosedError) throw new ChunkTransferError(409, e.message);
      if (e instanceof ChunkUploadError) throw new ChunkTransferError(400, e.message);
      if (isDiskFull(e)) throw diskFullError(e as Error);
      throw e;
    }
  }
}

export class ChunkDeployTransfer {
  readonly kind = 'deploy' as const;
  readonly info: ImageVersionInfo;

  constructor(
    private readonly reader: VersionReader,
    private readonly files: ChunkFileSource,
    private readonly meter: TransferMeter,
    /** What the capture learnt of the source disk, or null (then the image is restored at its own size). */
    readonly layout: DiskLayout | null = null,
    /** The partition the task names to grow or shrink, or null for the largest resizable one. */
    readonly mainPartition: number | null = null,
  ) {
    this.info = versionInfo(reader);
  }

  /** The image the version belongs to: the task's, or the one holding its version fitted to a smaller disk. */
  get image(): string {
    return this.reader.name;
  }

  start(): DeployStart {
    const r = this.reader;
    return {
      transport: 'chunks', kind: 'deploy', size: r.size, sectorSize: r.sectorSize, chunkSize: r.chunkSize, chunkCount: r.chunkCount, version: r.version, digest: r.digest,
      layout: this.layout, mainPartition: this.mainPartition,
    };
  }

  countWire(bytes: number): void {
    if (bytes > 0) this.meter.add(bytes);
  }

  /** The version's ordered chunk list, 32 bytes per chunk, zeros for a hole. */
  list(): Buffer {
    const r = this.reader;
    const out = Buffer.alloc(r.chunkCount * LIST_ENTRY_BYTES);
    for (let i = 0; i < r.chunkCount; i++) {
      const h = r.chunkHash(i);
      if (h !== null) setHash(out, i, h);
    }
    return out;
  }

  /** A chunk file of this task's version, as stored; any other name is 404 (the store is not probed). */
  async chunkFile(hash: string): Promise<ChunkFile> {
    if (this.reader.isClosed) throw new ChunkTransferError(409, 'this deploy has ended; reboot the PC to start over');
    if (!HASH_RE.test(hash) || !this.reader.names(hash)) {
      throw new ChunkTransferError(404, `version ${this.reader.version} of ${this.reader.name} has no chunk ${hash.slice(0, 64)}`);
    }
    return this.files(hash, this.reader);
  }

  async close(): Promise<void> {
    this.reader.close();
  }
}

export type ChunkTransfer = ChunkCaptureTransfer | ChunkDeployTransfer;
