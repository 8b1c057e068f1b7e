/**
 * Writable NBD export over a Capture: a client writes a whole disk; it becomes a new image version.
 *
 * Lifecycle: the capture commits when the last attached connection detaches, every connection that
 * ever attached ended cleanly, at least one write happened and a completed flush covered every
 * completed write. Any unclean detach (or a failed write/flush) aborts the capture, so the previous
 * version stays current, and every later connection or request gets ESHUTDOWN. A clean detach with
 * no writes at all (e.g. an `nbdinfo` probe) leaves the export waiting for the real client.
 *
 * multiConn is true: all connections share one Capture whose per-chunk queues make each completed
 * write visible to reads from any connection, and flush() drains the whole capture, not one connection.
 */
import type { Logger } from '../../log.js';
import { ExportError, type BlockSizes, type DetachInfo, type ExportCapabilities, type Extent, type NbdExport, type PeerInfo, type ReadPiece, type WriteZeroesOptions } from '../export.js';
import { CaptureClosedError, type Capture } from '../../imaging/capture.js';
import { ChunkCorruptError } from '../../imaging/codec-pool.js';
import type { VersionInfo } from '../../imaging/types.js';

export interface CaptureExportOptions {
  readonly logger: Logger;
  readonly description?: string;
  readonly onCommitted?: (version: VersionInfo) => void;
  readonly onFailed?: (reason: string) => void;
}

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
  private readonly attached = new Set<number>();
  private state: State = 'open';
  private failReason: string | null = null;
  private inFlight = 0;
  private completedWrites = 0;
  private flushedWrites = 0;
  private committed: Promise<VersionInfo> | null = null;
  private readonly done: Promise<VersionInfo>;
  private settle!: { resolve(v: VersionInfo): void; reject(e: Error): void };

  constructor(
    private readonly capture: Capture,
    private readonly opts: CaptureExportOptions,
  ) {
    this.size = capture.size;
    this.description = opts.description ?? `capture of image ${capture.name}`;
    this.log = opts.logger.child({ component: 'capture-export', image: capture.name });
    this.done = new Promise<VersionInfo>((resolve, reject) => (this.settle = { resolve, reject }));
    this.done.catch(() => undefined);
  }

  /** Bytes accepted so far, zeroes and trims included. */
  get bytesWritten(): number {
    return this.capture.bytesWritten;
  }

  get status(): State {
    return this.state;
  }

  get failure(): string | null {
    return this.failReason;
  }

  /** Resolves with the committed version, or rejects once the capture failed. */
  whenDone(): Promise<VersionInfo> {
    return this.done;
  }

  attach(peer: PeerInfo): void {
    if (this.state !== 'open') throw new ExportError('ESHUTDOWN', `capture of ${this.capture.name} is ${this.state}${this.failReason ? `: ${this.failReason}` : ''}`);
    this.attached.add(peer.connectionId);
    this.log.info({ peer: `${peer.address}:${peer.port}`, connection: peer.connectionId }, 'capture connection attached');
  }

  detach(peer: PeerInfo, info: DetachInfo): void {
    if (!this.attached.delete(peer.connectionId)) return;
    this.log.info({ connection: peer.connectionId, clean: info.clean, reason: info.reason, bytesWritten: this.bytesWritten }, 'capture connection detached');
    if (this.state !== 'open') return;
    if (!info.clean && !CaptureExport.endedWithDisc(info)) {
      this.fail(`connection ${peer.connectionId} ended uncleanly: ${info.reason}`);
      return;
    }
    if (this.attached.size > 0) return;
    if (this.capture.bytesWritten === 0) return;
    if (this.inFlight > 0 || this.flushedWrites < this.completedWrites) {
      this.fail('all connections closed but not every write was flushed');
      return;
    }
    this.state = 'committing';
    this.committed = this.capture.commit();
    this.committed.then(
      (v) => {
        this.state = 'committed';
        this.log.info({ version: v.version, digest: v.digest }, 'capture committed as a new version');
        this.settle.resolve(v);
        this.opts.onCommitted?.(v);
      },
      (e: unknown) => {
        this.state = 'failed';
        this.failReason = `commit failed: ${(e as Error).message}`;
        this.log.error({ reason: this.failReason }, 'capture failed');
        this.settle.reject(new Error(this.failReason));
        this.opts.onFailed?.(this.failReason);
      },
    );
  }

  /**
   * With multi-conn a client may flush on one connection only (nbdcopy does): the server marks the
   * other connections unclean because they saw no FLUSH of their own, yet this export's flush is global.
   * So a connection that ended with NBD_CMD_DISC counts as graceful here, and the export's own check
   * (a completed flush covered every completed write, nothing in flight) decides at the last detach.
   */
  private static endedWithDisc(info: DetachInfo): boolean {
    return info.discReceived;
  }

  /** Cancels the capture (admin action or unclean client); the previous version stays current. */
  abort(reason: string): void {
    if (this.state === 'open') this.fail(reason);
  }

  private fail(reason: string): void {
    this.state = 'failed';
    this.failReason = reason;
    this.log.warn({ reason, bytesWritten: this.bytesWritten }, 'capture aborted');
    void this.capture.abort(reason).finally(() => {
      this.settle.reject(new Error(reason));
      this.opts.onFailed?.(reason);
    });
  }

  private check(offset: number, length: number): void {
    if (this.state !== 'open') throw new ExportError('ESHUTDOWN', `capture of ${this.capture.name} is ${this.state}`);
    if (offset < 0 || length < 0 || offset + length > this.size) throw new ExportError('ENOSPC', `request ${offset}+${length} is past the end of the ${this.size}-byte disk`);
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

  /** `durable`: a FUA request counts as flushed on completion, as the server treats it. */
  private async tracked(op: string, offset: number, length: number, durable: boolean, fn: () => Promise<void>): Promise<void> {
    this.check(offset, length);
    this.inFlight++;
    try {
      await fn();
      if (durable) await this.capture.flush();
      else this.completedWrites++;
    } catch (e) {
      const err = this.mapError(op, e);
      if (err.errno === 'EIO' && this.state === 'open') this.fail(err.message);
      throw err;
    } finally {
      this.inFlight--;
    }
  }

  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    return this.tracked('write', offset, data.length, fua, () => this.capture.write(offset, data));
  }

  writev(offset: number, slices: readonly Buffer[], fua: boolean): Promise<void> {
    let n = 0;
    for (const b of slices) n += b.length;
    return this.tracked('write', offset, n, fua, () => this.capture.write(offset, slices));
  }

  writeZeroes(offset: number, length: number, options: WriteZeroesOptions): Promise<void> {
    return this.tracked('write zeroes', offset, length, options.fua, () => this.capture.writeZeroes(offset, length));
  }

  trim(offset: number, length: number, fua: boolean): Promise<void> {
    return this.tracked('trim', offset, length, fua, () => this.capture.trim(offset, length));
  }

  async flush(): Promise<void> {
    this.check(0, 0);
    const covered = this.completedWrites;
    try {
      await this.capture.flush();
    } catch (e) {
      const err = this.mapError('flush', e);
      if (this.state === 'open') this.fail(err.message);
      throw err;
    }
    this.flushedWrites = Math.max(this.flushedWrites, covered);
  }

  async read(offset: number, length: number): Promise<ReadPiece[]> {
    this.check(offset, length);
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
