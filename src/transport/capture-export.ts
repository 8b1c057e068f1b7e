/**
 * Writable NBD export over a Capture: a client writes a whole disk; it becomes a new image version.
 *
 * Commit rule: the capture commits when every connection that issued a write-class command (WRITE,
 * WRITE_ZEROES, TRIM) has ended with NBD_CMD_DISC and no connection is attached. FLUSH is optional:
 * Capture.commit() stores every chunk, fsyncs the chunk files and their directories, and only then
 * renames the manifest. A connection that wrote nothing (nbdinfo, a size probe) neither commits nor
 * discards anything. A writing connection that closes without DISC, or a write-class command that
 * fails, discards the capture: the previous version stays current and later connections are refused.
 *
 * One wait: while nothing but zeroes and trims has been written, the commit waits `commitDelayMs`,
 * and a connection attaching meanwhile keeps the capture open. `qemu-img convert` without `-n`
 * first "creates" the target on a connection of its own (it zeroes the first sector, flushes and
 * disconnects cleanly), then reconnects a few milliseconds later to copy; committing at that first
 * disconnect made an all-zero version the newest and refused the real copy. A capture that received
 * data commits as soon as its last writer has gone.
 *
 * The store's capture is begun lazily, on the first write-class command, and only then holds the
 * image's capture lock: an issued but unused URL, or one only probed, blocks no other capture.
 *
 * multiConn is true: all connections share one Capture whose per-chunk queues make each completed
 * write visible to reads from any connection, and flush() drains the whole capture, not one connection.
 */
import type { Logger } from '../lib/log.js';
import { ExportError, type BlockSizes, type DetachInfo, type ExportCapabilities, type Extent, type NbdExport, type PeerInfo, type ReadPiece, type WriteZeroesOptions } from '../nbd/export.js';
import { Capture, CaptureClosedError } from '../imaging/capture.js';
import { ChunkCorruptError } from '../imaging/codec-pool.js';
import type { VersionInfo } from '../imaging/types.js';

/** A capture not yet begun in the store: begin() takes the image's capture lock. */
export interface LazyCapture {
  readonly name: string;
  readonly size: number;
  /** Throws when the image cannot be captured now (another capture of it is open, the store is closed). */
  begin(): Capture;
}

export interface CaptureExportOptions {
  readonly logger: Logger;
  readonly description?: string;
  /** How long a capture that received only zeroes and trims waits, with no connection attached, before committing. Default 2000 ms. */
  readonly commitDelayMs?: number;
  readonly onCommitted?: (version: VersionInfo) => void;
  readonly onFailed?: (reason: string) => void;
}

export const DEFAULT_COMMIT_DELAY_MS = 2000;

type State = 'open' | 'committing' | 'committed' | 'failed';

export class CaptureExport implements NbdExport {
  readonly description: string;
  readonly size: number;
  readonly capabilities: ExportCapabilities = {
    readOnly: false,
    multiConn: true,
    trim: true,
    writeZeroes: true,
    fastZero: true,
    cache: false,
    blockStatus: true,
  };
  readonly blockSizes: BlockSizes = { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 };
  private readonly log: Logger;
  private readonly name: string;
  private readonly lazy: LazyCapture | null;
  private capture: Capture | null;
  private readonly attached = new Set<number>();
  /** Writing connections that ended with DISC since the capture opened. */
  private cleanWriters = 0;
  /** A WRITE with data succeeded: this is no create probe (see the header). */
  private receivedData = false;
  private commitTimer: NodeJS.Timeout | undefined;
  private readonly commitDelayMs: number;
  private state: State = 'open';
  private failReason: string | null = null;
  private readonly done: Promise<VersionInfo>;
  private settle!: { resolve(v: VersionInfo): void; reject(e: Error): void };

  constructor(
    source: Capture | LazyCapture,
    private readonly opts: CaptureExportOptions,
  ) {
    if (source instanceof Capture) {
      this.capture = source;
      this.lazy = null;
    } else {
      this.capture = null;
      this.lazy = source;
    }
    this.name = source.name;
    this.size = source.size;
    this.commitDelayMs = opts.commitDelayMs ?? DEFAULT_COMMIT_DELAY_MS;
    this.description = opts.description ?? `capture of image ${source.name}`;
    this.log = opts.logger.child({ component: 'capture-export', image: source.name });
    this.done = new Promise<VersionInfo>((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => undefined);
  }

  /** Bytes accepted so far, zeroes and trims included. */
  get bytesWritten(): number {
    return this.capture?.bytesWritten ?? 0;
  }

  get status(): State {
    return this.state;
  }

  get failure(): string | null {
    return this.failReason;
  }

  /** True once the store's capture has begun (the image's capture lock is held). */
  get begun(): boolean {
    return this.capture !== null;
  }

  /** Resolves with the committed version, or rejects once the capture failed. */
  whenDone(): Promise<VersionInfo> {
    return this.done;
  }

  attach(peer: PeerInfo): void {
    if (this.state !== 'open') throw new ExportError('ESHUTDOWN', `capture of ${this.name} is ${this.state}${this.failReason ? `: ${this.failReason}` : ''}`);
    if (this.commitTimer !== undefined) {
      clearTimeout(this.commitTimer);
      this.commitTimer = undefined;
      this.log.info({ connection: peer.connectionId }, 'a connection arrived before the commit; the capture stays open');
    }
    this.attached.add(peer.connectionId);
    this.log.info({ peer: `${peer.address}:${peer.port}`, connection: peer.connectionId }, 'capture connection attached');
  }

  detach(peer: PeerInfo, info: DetachInfo): void {
    if (!this.attached.delete(peer.connectionId)) return;
    this.log.info({ connection: peer.connectionId, wrote: info.wrote, disc: info.discReceived, reason: info.reason, bytesWritten: this.bytesWritten }, 'capture connection detached');
    if (this.state !== 'open') return;
    if (info.wrote && !info.discReceived) {
      this.fail(`connection ${peer.connectionId} ended uncleanly after writing (closed without NBD_CMD_DISC: ${info.reason})`);
      return;
    }
    if (info.wrote) this.cleanWriters++;
    if (this.attached.size > 0) return;
    // Nothing begun: every connection so far only looked, or its writes were refused before the capture began.
    if (this.capture === null || this.cleanWriters === 0) return;
    if (this.receivedData) {
      this.commit();
      return;
    }
    this.commitTimer = setTimeout(() => {
      this.commitTimer = undefined;
      this.commit();
    }, this.commitDelayMs);
    this.commitTimer.unref();
  }

  private commit(): void {
    if (this.state !== 'open' || this.attached.size > 0 || this.capture === null) return;
    this.state = 'committing';
    this.capture.commit().then(
      (v) => {
        this.state = 'committed';
        this.log.info({ version: v.version, digest: v.digest }, 'capture committed as a new version');
        this.settle.resolve(v);
        this.notify('onCommitted', () => this.opts.onCommitted?.(v));
      },
      (e: unknown) => {
        this.state = 'failed';
        const reason = `commit failed: ${(e as Error).message}`;
        this.failReason = reason;
        this.log.error({ reason }, 'capture failed');
        this.settle.reject(new Error(reason));
        this.notify('onFailed', () => this.opts.onFailed?.(reason));
      },
    );
  }

  /** An owner's callback that throws must not become an unhandled rejection. */
  private notify(which: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error({ err, callback: which }, 'capture export callback threw');
    }
  }

  /** Cancels the capture (admin action, expired URL, unclean client); the previous version stays current. */
  abort(reason: string): void {
    if (this.state === 'open') this.fail(reason);
  }

  private fail(reason: string): void {
    this.state = 'failed';
    this.failReason = reason;
    if (this.commitTimer !== undefined) clearTimeout(this.commitTimer);
    this.commitTimer = undefined;
    const finish = (): void => {
      this.settle.reject(new Error(reason));
      this.notify('onFailed', () => this.opts.onFailed?.(reason));
    };
    if (this.capture === null) {
      this.log.info({ reason }, 'capture export closed before anything was written');
      finish();
      return;
    }
    this.log.warn({ reason, bytesWritten: this.bytesWritten }, 'capture aborted');
    this.capture.abort(reason).then(finish, (e: unknown) => {
      this.log.error({ err: (e as Error).message }, 'discarding the aborted capture failed; its chunk files stay until the next gc');
      finish();
    });
  }

  private check(offset: number, length: number): void {
    if (this.state !== 'open') throw new ExportError('ESHUTDOWN', `capture of ${this.name} is ${this.state}${this.failReason ? `: ${this.failReason}` : ''}`);
    if (offset < 0 || length < 0 || offset + length > this.size) throw new ExportError('ENOSPC', `request ${offset}+${length} is past the end of the ${this.size}-byte disk`);
  }

  /** The store's capture, begun on the first write-class command. */
  private writable(): Capture {
    if (this.capture !== null) return this.capture;
    const lazy = this.lazy as LazyCapture;
    try {
      this.capture = lazy.begin();
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'could not begin the capture');
      throw new ExportError('EPERM', `cannot capture ${this.name} now: ${(e as Error).message}`);
    }
    this.log.info('first write: capture begun');
    return this.capture;
  }

  private mapError(op: string, e: unknown): ExportError {
    if (e instanceof ExportError) return e;
    if (e instanceof CaptureClosedError) return new ExportError('ESHUTDOWN', e.message);
    if (e instanceof ChunkCorruptError) {
      this.log.error({ chunk: e.hash, reason: e.detail }, `${op} hit a damaged chunk`);
      return new ExportError('EIO', e.message);
    }
    this.log.error({ op, err: (e as Error).message }, 'capture request failed');
    return new ExportError('EIO', `${op} failed: ${(e as Error).message}`);
  }

  /**
   * Runs one write-class command. Once the capture has begun, any failure discards it: the client was
   * told this write failed, so the capture can no longer hold what the client wrote.
   */
  private async tracked(op: string, offset: number, length: number, fua: boolean, fn: (c: Capture) => Promise<void>): Promise<void> {
    this.check(offset, length);
    const capture = this.writable();
    try {
      await fn(capture);
      if (fua) await capture.flush();
    } catch (e) {
      const err = this.mapError(op, e);
      if (this.state === 'open') this.fail(`${op} at ${offset}+${length} failed: ${err.message}`);
      throw err;
    }
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    await this.tracked('write', offset, data.length, fua, (c) => c.write(offset, data));
    if (data.length > 0) this.receivedData = true;
  }

  async writev(offset: number, slices: readonly Buffer[], fua: boolean): Promise<void> {
    let n = 0;
    for (const b of slices) n += b.length;
    await this.tracked('write', offset, n, fua, (c) => c.write(offset, slices));
    if (n > 0) this.receivedData = true;
  }

  writeZeroes(offset: number, length: number, options: WriteZeroesOptions): Promise<void> {
    return this.tracked('write zeroes', offset, length, options.fua, (c) => c.writeZeroes(offset, length));
  }

  trim(offset: number, length: number, fua: boolean): Promise<void> {
    return this.tracked('trim', offset, length, fua, (c) => c.trim(offset, length));
  }

  /** Drains the capture and reports a failed chunk store; durability itself comes at commit. */
  async flush(): Promise<void> {
    this.check(0, 0);
    if (this.capture === null) return;
    try {
      await this.capture.flush();
    } catch (e) {
      const err = this.mapError('flush', e);
      if (this.state === 'open') this.fail(err.message);
      throw err;
    }
  }

  async read(offset: number, length: number): Promise<ReadPiece[]> {
    this.check(offset, length);
    // Before the first write every byte of the new disk reads as zero.
    if (this.capture === null) return length === 0 ? [] : [{ kind: 'hole', offset, length }];
    try {
      return await this.capture.read(offset, length);
    } catch (e) {
      throw this.mapError('read', e);
    }
  }

  async cache(_offset: number, _length: number): Promise<void> {}

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.check(offset, length);
    // Holes are only known once chunks are stored; reporting data is always correct.
    return [{ length, flags: 0 }];
  }
}
