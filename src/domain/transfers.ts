/**
 * Turns a running task into a transfer (an NBD export, or a chunk transfer for the imaging agent)
 * and its outcome into task state: the bridge between the task lifecycle, the NBD access grants
 * and the image store.
 */
import { transportOf, type TaskRecord } from './database.js';
import type { TaskService } from './tasks.js';
import type { HostService } from './hosts.js';
import type { NbdGrants } from '../transport/grants.js';
import { TransferMeter } from '../transport/transfer-meter.js';
import { ExportRequestError, type ExportSource, type ImageVersionInfo } from '../transport/store-exports.js';
import type { ChunkDeployTransfer, ChunkTransfer } from '../transport/chunk-transfer.js';
import type { StartAnswer } from '../transport/chunk-wire.js';
import { layoutNotes } from '../imaging/disk-layout.js';
import { DeployFits } from './deploy-fits.js';
import { pcModelOf } from './deploy-checks.js';

export type { CaptureHooks, ExportSource, ImageVersionInfo } from '../transport/store-exports.js';
import type { Logger } from '../lib/log.js';
import { DatabaseWriteError } from './durable-json-file.js';

export interface ClientDisk {
  readonly name: string;
  readonly size: number;
  readonly logicalSectorSize: number;
  readonly serial: string;
}

export class TransferError extends Error {
  constructor(readonly status: 400 | 409 | 500 | 503, message: string) {
    super(message);
    this.name = 'TransferError';
  }
}

/** What the client's start is answered with: where to move the disk. */
export type { StartAnswer } from '../transport/chunk-wire.js';

/** A task export lives as long as a long transfer could: a day; it is revoked when the task ends. */
const TASK_EXPORT_TTL_SECONDS = 24 * 3600;
/** How long the client's "ok" waits for the server-side commit after its last DISC. */
const COMMIT_WAIT_MS = 120_000;

/** Why `disk` cannot take `info`'s image, or null when it can. */
function diskProblem(image: string, disk: ClientDisk, info: ImageVersionInfo, smaller: string): string | null {
  if (disk.size < info.size) return `disk ${disk.name} (${disk.size} bytes) is smaller than image ${image} (${info.size} bytes): ${smaller}`;
  if (disk.logicalSectorSize !== info.sectorSize) {
    // Partition tables and filesystems count in sectors: the image's bytes would mean other places on this disk.
    return `disk ${disk.name} has ${disk.logicalSectorSize}-byte sectors, image ${image} has ${info.sectorSize}-byte sectors: a restore between 512-byte and 4K-native sector disks is not possible; use a disk with ${info.sectorSize}-byte logical sectors`;
  }
  return null;
}

/** Why a deploy's version cannot be opened: the task named one that is gone, or the image has none. */
function missingVersion(task: TaskRecord): string {
  return task.version === undefined
    ? `image ${task.image} has no committed version`
    : `image ${task.image} has no version ${task.version} any more (it was removed after the task was queued); queue the deploy again with a version the image has`;
}

export class TransferService {
  private readonly captureOutcome = new Map<string, Promise<ImageVersionInfo>>();
  /** The meter of each running task's export: its wire bytes are the task's `bytesOnWire`. */
  private readonly meters = new Map<string, TransferMeter>();
  /** Each running chunk-transport task's transfer, held until the task ends (a deploy's is its gc pin). */
  private readonly chunkTransfers = new Map<string, ChunkTransfer>();
  /** Versions being fitted to smaller disks for deploys. */
  private readonly fits: DeployFits;
  /** The version each running NBD deploy serves: its read-back is checked against this one, not whatever is newest by then. */
  private readonly nbdDeployed = new Map<string, ImageVersionInfo>();

  constructor(
    private readonly source: ExportSource,
    private readonly grants: NbdGrants,
    private readonly tasks: TaskService,
    private readonly hosts: HostService,
    private readonly logger: Logger,
    /** How long the client's "ok" waits for the commit before the export is closed (tests shorten it). */
    private readonly commitWaitMs: number = COMMIT_WAIT_MS,
  ) {
    this.fits = new DeployFits((image, version, size, onProgress, main) => this.source.fitVersion(image, version, size, onProgress, main), logger);
    tasks.on('changed', (task: TaskRecord) => {
      if (task.state === 'cancelled' || task.state === 'failed') {
        this.captureOutcome.delete(task.id);
        this.meters.delete(task.id);
        this.nbdDeployed.delete(task.id);
        this.closeChunks(task, `task ${task.state}`);
        this.grants.revokeTask(task.id, `task ${task.state}`).catch((err: unknown) => this.logger.error({ err, task: task.id }, 'revoking the NBD exports of an ended task failed'));
      }
    });
  }

  /**
   * The client picked its disk: check it against the image and open the task's transfer over the
   * task's transport. The answer is what the client's `start` call returns.
   */
  async begin(task: TaskRecord, disk: ClientDisk, clientIp: string, nbdHost: string, nbdPort: number): Promise<StartAnswer> {
    if (transportOf(task) !== 'chunks') return { transport: 'nbd', nbd: await this.start(task, disk, clientIp, nbdHost, nbdPort) };
    if (task.state !== 'booting') throw new TransferError(409, `task is ${task.state}; a transfer was already started`);
    const meter = new TransferMeter(task.kind, (_step, m) => this.tasks.wireBytes(task, m.wireBytes));
    let transfer: ChunkTransfer;
    let total: number;
    if (task.kind === 'deploy') {
      let deploy: ChunkDeployTransfer;
      try {
        deploy = await this.source.openChunkDeploy(task.image, meter, task.version, task.mainPartition);
      } catch (err) {
        if (err instanceof ExportRequestError) return this.refuse(task, err.status === 404 ? missingVersion(task) : err.message);
        throw err;
      }
      if (disk.size < deploy.info.size && deploy.layout !== null && disk.logicalSectorSize === deploy.info.sectorSize) {
        // A smaller disk gets a version fitted to it, derived from this one (which stays as it is).
        const from = deploy.info;
        await deploy.close();
        deploy = await this.fittedDeploy(task, from.version, disk, meter);
      }
      const problem = diskProblem(task.image, disk, deploy.info, 'it was captured without a disk layout (over NBD, or before netclone knew partitions), so it restores only onto a disk at least its size; re-capture it with the imaging agent to restore it onto smaller disks');
      if (problem) {
        await deploy.close();
        return this.refuse(task, problem);
      }
      total = deploy.info.size;
      transfer = deploy;
    } else {
      try {
        transfer = this.source.openChunkCapture(task.image, disk.size, disk.logicalSectorSize, `capture of ${task.mac} disk ${disk.name}`, meter);
      } catch (err) {
        // A bad size or sector size, or the store refusing a second capture of an image while one is open.
        return this.refuse(task, (err as Error).message);
      }
      total = disk.size;
    }
    this.chunkTransfers.set(task.id, transfer);
    this.meters.set(task.id, meter);
    try {
      // The task may have been cancelled while the version was being opened: then this throws.
      await this.tasks.markRunning(task, disk, clientIp, total);
    } catch (err) {
      this.meters.delete(task.id);
      this.closeChunks(task, `the task could not start: ${(err as Error).message}`);
      throw err;
    }
    this.progressOf(task);
    return transfer.start();
  }

  /**
   * The deploy of `version` fitted to `disk` (smaller than the image): 503 while the server prepares
   * it (the agent asks again; each ask counts as the PC's heartbeat), then the fitted version's
   * transfer. A disk too small for the used data fails the task, saying by how much.
   */
  private async fittedDeploy(task: TaskRecord, version: number, disk: ClientDisk, meter: TransferMeter): Promise<ChunkDeployTransfer> {
    let answer;
    try {
      answer = await this.fits.poll(task.image, version, disk.size, task.mainPartition);
    } catch (err) {
      return this.refuse(task, `disk ${disk.name} (${disk.size} bytes) is smaller than image ${task.image} version ${version}, and ${(err as Error).message}`);
    }
    this.tasks.heard(task);
    if (answer.state === 'preparing') {
      throw new TransferError(503, `preparing a version of ${task.image} version ${version} fitted to this ${disk.size}-byte disk (${answer.step}); the imaging client asks again`);
    }
    await this.tasks.note(task, `disk ${disk.name} is smaller than the image: deploying ${answer.image} version ${answer.version}, fitted to it from ${task.image} version ${version}`);
    try {
      return await this.source.openChunkDeploy(answer.image, meter, answer.version, task.mainPartition);
    } catch (err) {
      if (err instanceof ExportRequestError) return this.refuse(task, `the fitted version ${answer.image} version ${answer.version} cannot be opened: ${err.message}; deploy again`);
      throw err;
    }
  }

  /** Chunk tasks show counters from the start (zeros until the agent reports). */
  private progressOf(task: TaskRecord): void {
    task.progress = { ...task.progress, wireBytes: 0, chunks: { reused: 0, sent: 0, zero: 0, total: 0 } };
  }

  /** The task's chunk transfer while it runs, or undefined (an NBD task, or none started). */
  chunkTransfer(task: TaskRecord): ChunkTransfer | undefined {
    return this.chunkTransfers.get(task.id);
  }

  private closeChunks(task: TaskRecord, reason: string): void {
    const transfer = this.chunkTransfers.get(task.id);
    if (!transfer) return;
    this.chunkTransfers.delete(task.id);
    const closing = transfer.kind === 'capture' ? transfer.close(reason) : transfer.close();
    closing.catch((err: unknown) => this.logger.error({ err, task: task.id }, 'closing the chunk transfer of an ended task failed'));
  }

  /** The NBD transport: check the disk against the image and open the task's export; returns its URI. */
  async start(task: TaskRecord, disk: ClientDisk, clientIp: string, nbdHost: string, nbdPort: number): Promise<string> {
    if (task.state !== 'booting') throw new TransferError(409, `task is ${task.state}; a transfer was already started`);
    let name: string;
    if (task.kind === 'deploy') {
      const info = await this.source.latest(task.image, task.version);
      if (!info) return this.refuse(task, missingVersion(task));
      const problem = diskProblem(task.image, disk, info, 'over NBD an image restores only onto a disk at least its size; deploy with --transport chunks to restore it onto a smaller disk');
      if (problem) return this.refuse(task, problem);
      const meter = this.meter(task);
      ({ name } = await this.grants.grant({
        kind: 'deploy',
        image: task.image,
        ttlSeconds: TASK_EXPORT_TTL_SECONDS,
        allowedAddress: clientIp,
        taskId: task.id,
        meter,
        // The version checked above, even if a newer one is committed before the PC connects.
        open: () => this.source.openDeploy(task.image, info.version),
      }));
      this.meters.set(task.id, meter);
      this.nbdDeployed.set(task.id, info);
      await this.tasks.markRunning(task, disk, clientIp, info.dataBytes);
    } else {
      let settle!: { resolve: (v: ImageVersionInfo) => void; reject: (e: Error) => void };
      const outcome = new Promise<ImageVersionInfo>((resolve, reject) => (settle = { resolve, reject }));
      outcome.catch(() => undefined);
      this.captureOutcome.set(task.id, outcome);
      const meter = this.meter(task);
      ({ name } = await this.grants.grant({
        kind: 'capture',
        image: task.image,
        ttlSeconds: TASK_EXPORT_TTL_SECONDS,
        allowedAddress: clientIp,
        taskId: task.id,
        meter,
        open: () =>
          this.source.openCapture(task.image, disk.size, disk.logicalSectorSize, `capture of ${task.mac} disk ${disk.name}`, {
            onCommitted: (v) => settle.resolve(v),
            onFailed: (reason) => settle.reject(new Error(reason)),
          }),
      }));
      this.meters.set(task.id, meter);
      await this.tasks.markRunning(task, disk, clientIp, disk.size);
    }
    return `nbd://${nbdHost}:${nbdPort}/${name}`;
  }

  /**
   * Keeps the capturing PC's model with the version it made, for the hardware-mismatch check of later
   * deploys. A PC that reported none (or a failed write) leaves the version's model unknown: logged,
   * the capture stands.
   */
  private async recordOrigin(task: TaskRecord, version: number): Promise<void> {
    const model = pcModelOf(this.hosts.get(task.mac));
    if (!model || !this.source.recordOrigin || (model.vendor === '' && model.model === '')) return;
    try {
      await this.source.recordOrigin(task.image, version, model);
    } catch (err) {
      this.logger.warn({ err, task: task.id, image: task.image, version }, 'could not record the PC model of a captured version; deploys of it will not warn about other models');
    }
  }

  private async refuse(task: TaskRecord, reason: string): Promise<never> {
    await this.tasks.fail(task, reason);
    throw new TransferError(409, reason);
  }

  /** The task's meter: progress covers the disk (data and zeroed ranges); its wire bytes become `bytesOnWire`. */
  private meter(task: TaskRecord): TransferMeter {
    return new TransferMeter(task.kind, (step, m) => {
      this.tasks.progress(task, task.progress.bytes + step.covered);
      // The page shows the wire apart from the disk covered, as for the chunk transport.
      this.tasks.wireBytes(task, m.wireBytes);
    });
  }

  /**
   * A chunk capture is done once the agent's commit made a version (nothing to wait for); a chunk
   * deploy once the read-back matches the version the task deployed. The transfer closes either way.
   */
  private async finishChunks(task: TaskRecord, transfer: ChunkTransfer, digest: string | null, bytesOnWire: number): Promise<void> {
    try {
      if (transfer.kind === 'capture') {
        const version = transfer.committed;
        if (version && transfer.layout) for (const line of layoutNotes(transfer.layout)) await this.tasks.note(task, line);
        if (version) await this.recordOrigin(task, version.version);
        if (version) await this.tasks.succeed(task, { version: version.version, digest: version.digest, bytesOnWire }, `captured as ${task.image} version ${version.version}`);
        else await this.tasks.fail(task, 'the imaging agent reported success but never committed its chunk list; start the task again');
      } else if (digest !== transfer.info.digest) {
        await this.tasks.fail(task, `read-back check failed: the disk's digest ${digest ?? '(none)'} differs from the image's ${transfer.info.digest}`);
      } else {
        await this.tasks.succeed(task, { version: transfer.info.version, digest, bytesOnWire }, `deployed ${transfer.image === task.image ? task.image : `${transfer.image} (fitted from ${task.image})`} version ${transfer.info.version}; read-back matches`);
      }
    } finally {
      this.closeChunks(task, 'the task finished');
    }
  }

  /** The client says how it went. Capture success waits for the commit the NBD stream triggered. */
  async finish(task: TaskRecord, ok: boolean, message: string, digest: string | null): Promise<TaskRecord> {
    if (!ok) {
      await this.tasks.fail(task, message || 'the imaging client reported a failure');
      return task;
    }
    if (task.state !== 'running' && task.state !== 'verifying') {
      throw new TransferError(409, `task is ${task.state}; nothing to finish`);
    }
    const bytesOnWire = this.meters.get(task.id)?.wireBytes ?? 0;
    this.meters.delete(task.id);
    const chunks = this.chunkTransfers.get(task.id);
    if (chunks) {
      await this.finishChunks(task, chunks, digest, bytesOnWire);
    } else if (transportOf(task) === 'chunks') {
      await this.tasks.fail(task, 'no chunk transfer is open for this task (did the server restart?); start the task again');
    } else if (task.kind === 'capture') {
      await this.tasks.markVerifying(task, 'committing the captured image');
      const outcome = this.captureOutcome.get(task.id);
      let version: ImageVersionInfo | null = null;
      let failure = 'no capture is in flight for this task (did the server restart?)';
      try {
        if (outcome) {
          version = await Promise.race([
            outcome,
            new Promise<never>((_, reject) =>
              setTimeout(() => reject(new Error('the capture did not commit: the client never flushed and disconnected cleanly')), this.commitWaitMs).unref(),
            ),
          ]);
        }
      } catch (err) {
        failure = (err as Error).message;
        // The wait ran out or the capture failed, but a commit may be under way: closing the export
        // discards a capture that had not begun committing and waits for one that had. After that
        // the outcome is final, and a version that was committed is reported as committed.
        await this.grants.revokeTask(task.id, 'the client finished but its capture had not committed');
        version = await Promise.race([outcome as Promise<ImageVersionInfo>, Promise.resolve(null)]).catch(() => null);
      } finally {
        this.captureOutcome.delete(task.id);
      }
      if (version) await this.recordOrigin(task, version.version);
      if (version) await this.tasks.succeed(task, { version: version.version, digest: version.digest, bytesOnWire }, `captured as ${task.image} version ${version.version}`);
      else await this.tasks.fail(task, failure);
    } else {
      const info = this.nbdDeployed.get(task.id) ?? (await this.source.latest(task.image, task.version));
      this.nbdDeployed.delete(task.id);
      if (!info) {
        await this.tasks.fail(task, `image ${task.image} disappeared during the deploy`);
      } else if (digest !== info.digest) {
        await this.tasks.fail(task, `read-back check failed: the disk's digest ${digest ?? '(none)'} differs from the image's ${info.digest}`);
      } else {
        await this.tasks.succeed(task, { version: info.version, digest, bytesOnWire }, `deployed ${task.image} version ${info.version}; read-back matches`);
      }
      await this.grants.revokeTask(task.id, 'deploy finished');
    }
    if (this.tasks.get(task.id)?.state === 'done') {
      // A finished task leaves its PC registered (update() registers it) and, after a deploy, assigned
      // the image now on its disk: the default for its next deploy.
      await this.hosts.update(task.mac, task.kind === 'deploy' ? { assignedImage: task.image } : {}).catch((err: unknown) => {
        // The task is done either way; the host's change is in memory and saved once the database can be.
        if (!(err instanceof DatabaseWriteError)) throw err;
        this.logger.warn({ mac: task.mac, task: task.id }, `host ${task.mac} updated in memory only: ${err.message}`);
      });
    }
    return task;
  }
}
