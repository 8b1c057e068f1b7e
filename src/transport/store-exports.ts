/**
 * Opens NBD exports and chunk transfers on the image store for transfers and `image url`: the store
 * side of ExportSource.
 */
import type { ImageStore } from '../imaging/image-store.js';
import { ImageNotFoundError } from '../imaging/image-store.js';
import { isValidImageName } from '../imaging/names.js';
import { MAX_DISK_SIZE } from '../imaging/manifest.js';
import { DeployExport } from './deploy-export.js';
import { CaptureExport } from './capture-export.js';
import type { OpenedExport } from './grants.js';
import type { Logger } from '../lib/log.js';
import { ChunkCaptureTransfer, ChunkDeployTransfer } from './chunk-transfer.js';
import { fitVersion } from '../imaging/fit-version.js';
import type { TransferMeter } from './transfer-meter.js';
import { writeVersionOrigin, type PcModel } from '../imaging/version-origin.js';

export interface ImageVersionInfo {
  readonly version: number;
  readonly size: number;
  readonly sectorSize: number;
  readonly chunkSize: number;
  readonly digest: string;
  readonly dataBytes: number;
}

export interface CaptureHooks {
  onCommitted(version: ImageVersionInfo): void;
  onFailed(reason: string): void;
}

/** What transfers need from the image store, and no more. */
export interface ExportSource {
  /** The newest version's facts, or version `version`'s; null when the image (or that version) is not there. */
  latest(image: string, version?: number): Promise<ImageVersionInfo | null>;
  /** An NBD export of the newest version, or of version `version`. */
  openDeploy(image: string, version?: number): Promise<OpenedExport & { readonly info: ImageVersionInfo }>;
  /** Records which PC model a just-committed capture came from (version-origin.ts); absent where nothing is kept. */
  recordOrigin?(image: string, version: number, origin: PcModel): Promise<void>;
  openCapture(image: string, size: number, sectorSize: number, source: string, hooks: CaptureHooks): Promise<OpenedExport>;
  /** A chunk-transport capture: the store's upload session begins now (the image is busy until it ends). */
  openChunkCapture(image: string, size: number, sectorSize: number, source: string, meter: TransferMeter): ChunkCaptureTransfer;
  /**
   * A chunk-transport deploy of a version (default the newest), opened (so pinned) until the transfer
   * is closed; `main` is the partition the task names to grow or shrink (its start answer says so).
   */
  openChunkDeploy(image: string, meter: TransferMeter, version?: number, main?: number): Promise<ChunkDeployTransfer>;
  /**
   * A version of `image` version `version` fitted to a smaller disk of `diskSize` bytes (issue 12),
   * shrinking partition `main` (default the largest resizable one): derived on first use, reused
   * after. Throws LayoutFitError when the used data cannot fit, LayoutPlanError for a `main` that
   * cannot shrink.
   */
  fitVersion(image: string, version: number, diskSize: number, onProgress: (step: string) => void, main?: number): Promise<{ readonly image: string; readonly version: number }>;
}

/** A request for an export that cannot be met as asked (bad name, size, sector size, no such image). */
export class ExportRequestError extends Error {
  constructor(readonly status: 400 | 404, message: string) {
    super(message);
    this.name = 'ExportRequestError';
  }
}


export class StoreExportSource implements ExportSource {
  constructor(
    private readonly store: ImageStore,
    private readonly logger: Logger,
    /** Passed to every CaptureExport; undefined keeps its default. */
    private readonly commitDelayMs?: number,
  ) {}

  async latest(image: string, wanted?: number): Promise<ImageVersionInfo | null> {
    if (!isValidImageName(image)) return null;
    try {
      const reader = await this.store.openVersion(image, wanted);
      try {
        const { version, size, sectorSize, chunkSize, digest, dataBytes } = reader;
        return { version, size, sectorSize, chunkSize, digest, dataBytes };
      } finally {
        reader.close();
      }
    } catch (err) {
      if (err instanceof ImageNotFoundError) return null;
      throw err;
    }
  }

  async openDeploy(image: string, wanted?: number): Promise<OpenedExport & { readonly info: ImageVersionInfo }> {
    if (!isValidImageName(image)) throw new ExportRequestError(400, `"${image}" is not a valid image name`);
    let reader;
    try {
      reader = await this.store.openVersion(image, wanted);
    } catch (err) {
      if (err instanceof ImageNotFoundError) throw new ExportRequestError(404, err.message);
      throw err;
    }
    const exp = new DeployExport(reader, { logger: this.logger });
    const { version, size, sectorSize, chunkSize, digest, dataBytes } = reader;
    return {
      export: exp,
      info: { version, size, sectorSize, chunkSize, digest, dataBytes },
      finished: () => false,
      close: async () => exp.close(),
    };
  }

  /** Refuses what no capture can take, with the sentence the client shows. */
  private checkCapture(image: string, size: number, sectorSize: number): void {
    if (!isValidImageName(image)) throw new ExportRequestError(400, `"${image}" is not a valid image name`);
    if (!Number.isSafeInteger(size) || size <= 0 || size > MAX_DISK_SIZE) {
      throw new ExportRequestError(400, `disk size ${size} is out of range: a capture takes 1 byte to ${MAX_DISK_SIZE} bytes (64 TiB)`);
    }
    if (sectorSize !== 512 && sectorSize !== 4096) throw new ExportRequestError(400, `sector size ${sectorSize} is not supported: use 512 or 4096`);
  }

  openChunkCapture(image: string, size: number, sectorSize: number, source: string, meter: TransferMeter): ChunkCaptureTransfer {
    this.checkCapture(image, size, sectorSize);
    const upload = this.store.beginUpload(image, { size, sectorSize: sectorSize as 512 | 4096, source });
    return new ChunkCaptureTransfer(upload, meter);
  }

  async recordOrigin(image: string, version: number, origin: PcModel): Promise<void> {
    await writeVersionOrigin(this.store, image, version, origin);
  }

  async fitVersion(image: string, version: number, diskSize: number, onProgress: (step: string) => void, main?: number): Promise<{ readonly image: string; readonly version: number }> {
    return fitVersion(this.store, image, version, diskSize, { tmpDir: this.store.tmpDir, logger: this.logger, onProgress, ...(main !== undefined ? { main } : {}) });
  }

  async openChunkDeploy(image: string, meter: TransferMeter, version?: number, main?: number): Promise<ChunkDeployTransfer> {
    if (!isValidImageName(image)) throw new ExportRequestError(400, `"${image}" is not a valid image name`);
    try {
      const reader = await this.store.openVersion(image, version);
      let layout;
      try {
        layout = await this.store.layout(image, reader.version);
      } catch (err) {
        reader.close();
        throw err;
      }
      return new ChunkDeployTransfer(reader, (hash, pinnedBy) => this.store.chunkFile(hash, pinnedBy), meter, layout, main ?? null);
    } catch (err) {
      if (err instanceof ImageNotFoundError) throw new ExportRequestError(404, err.message);
      throw err;
    }
  }

  /**
   * A capture export whose store capture begins at the first write (see CaptureExport): until then
   * the URL holds no lock on the image. The arguments are checked here, so a bad size or sector
   * size is refused when the URL or task starts, not at the client's first write.
   */
  async openCapture(image: string, size: number, sectorSize: number, source: string, hooks: CaptureHooks): Promise<OpenedExport> {
    this.checkCapture(image, size, sectorSize);
    const exp = new CaptureExport(
      { name: image, size, begin: () => this.store.beginCapture(image, { size, sectorSize, source }) },
      {
        logger: this.logger,
        ...(this.commitDelayMs === undefined ? {} : { commitDelayMs: this.commitDelayMs }),
        onCommitted: (v) => hooks.onCommitted({ version: v.version, size: v.size, sectorSize: v.sectorSize, chunkSize: v.chunkSize, digest: v.digest, dataBytes: v.dataBytes }),
        // An export closed before its first write (an unused URL expiring, a revoked task) captured nothing that failed.
        onFailed: (reason) => {
          if (exp.begun) hooks.onFailed(reason);
        },
      },
    );
    return {
      export: exp,
      finished: () => exp.status === 'committed' || exp.status === 'failed',
      // Closing an unfinished capture discards it: the previous version stays current.
      close: async (reason) => {
        exp.abort(`export closed: ${reason}`);
        await exp.whenDone().catch(() => undefined);
      },
    };
  }
}
