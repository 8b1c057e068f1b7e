/**
 * Read-only NBD export of one committed image version (what a deploying client reads).
 *
 * Every connection reads the same immutable version, so multi-conn is safe. Holes come back as
 * hole pieces and hole extents, so clients can skip writing them. A chunk whose bytes no longer
 * match their hash fails the read with EIO; wrong bytes are never served.
 */
import type { Logger } from '../lib/log.js';
import { ExportError, type BlockSizes, type DetachInfo, type ExportCapabilities, type Extent, type NbdExport, type PeerInfo, type ReadPiece, type WriteZeroesOptions } from '../nbd/export.js';
import type { VersionReader } from '../imaging/version-reader.js';
import { ChunkCorruptError } from '../imaging/codec-pool.js';

export interface DeployExportOptions {
  readonly logger: Logger;
  readonly description?: string;
}

export class DeployExport implements NbdExport {
  readonly description: string;
  readonly size: number;
  readonly capabilities: ExportCapabilities = {
    readOnly: true,
    multiConn: true,
    trim: false,
    writeZeroes: false,
    fastZero: false,
    cache: true,
    blockStatus: true,
  };
  readonly blockSizes: BlockSizes = { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 };
  private readonly log: Logger;
  private readonly attached = new Set<number>();
  private closed = false;

  constructor(
    private readonly reader: VersionReader,
    opts: DeployExportOptions,
  ) {
    this.size = reader.size;
    this.description = opts.description ?? `image ${reader.name} version ${reader.version}`;
    this.log = opts.logger.child({ component: 'deploy-export', image: reader.name, version: reader.version });
  }

  get connections(): number {
    return this.attached.size;
  }

  attach(peer: PeerInfo): void {
    if (this.closed) throw new ExportError('ESHUTDOWN', `export of ${this.reader.name} has been closed`);
    this.attached.add(peer.connectionId);
    this.log.info({ peer: `${peer.address}:${peer.port}`, connection: peer.connectionId }, 'deploy connection attached');
  }

  detach(peer: PeerInfo, info: DetachInfo): void {
    this.attached.delete(peer.connectionId);
    this.log.info({ connection: peer.connectionId, clean: info.clean, reason: info.reason }, 'deploy connection detached');
  }

  async read(offset: number, length: number): Promise<ReadPiece[]> {
    if (this.closed) throw new ExportError('ESHUTDOWN', 'export closed');
    try {
      const pieces = await this.reader.read(offset, length);
      return pieces;
    } catch (e) {
      if (e instanceof ChunkCorruptError) {
        this.log.error({ chunk: e.hash, offset, length, reason: e.detail }, 'read hit a damaged chunk; answering EIO');
        throw new ExportError('EIO', e.message);
      }
      if (e instanceof RangeError) throw new ExportError('EINVAL', e.message);
      this.log.error({ offset, length, err: (e as Error).message }, 'read failed');
      throw new ExportError('EIO', `read failed: ${(e as Error).message}`);
    }
  }

  async write(_offset: number, _data: Buffer, _fua: boolean): Promise<void> {
    throw new ExportError('EPERM', 'deploy exports are read-only');
  }

  async writeZeroes(_offset: number, _length: number, _options: WriteZeroesOptions): Promise<void> {
    throw new ExportError('EPERM', 'deploy exports are read-only');
  }

  async trim(_offset: number, _length: number, _fua: boolean): Promise<void> {
    throw new ExportError('EPERM', 'deploy exports are read-only');
  }

  async flush(): Promise<void> {}

  async cache(_offset: number, _length: number): Promise<void> {}

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    try {
      return this.reader.blockStatus(offset, length);
    } catch (e) {
      throw new ExportError('EINVAL', (e as Error).message);
    }
  }

  /** Refuses further connections and releases the version (its chunks become collectable if unreferenced). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reader.close();
  }
}
