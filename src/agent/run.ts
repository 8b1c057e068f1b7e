/**
 * One agent run: describe the disk to the server (start), move the data by the transport the server
 * answers with, and say what happened. The thin client posts the task's result from what this returns.
 */
import { stat } from 'node:fs/promises';
import { AgentApi, type StartAnswer } from './api.js';
import type { AgentArgs } from './args.js';
import { capture } from './capture.js';
import type { TransferContext } from './transfer-context.js';
import { CodecPool } from './codec-pool.js';
import { deploy } from './deploy.js';
import { probeDisk } from './probe.js';
import { Placement } from './placement.js';
import { finishRestore } from './restore-finish.js';
import { planRestore } from '../imaging/layout-plan.js';
import { HashPool } from './hash-pool.js';
import { Counters, ProgressReporter } from './progress.js';

/** The line the agent prints on success (the contract's fields). */
export interface AgentResult {
  readonly ok: true;
  readonly digest: string | null;
  readonly examined: number;
  readonly sentChunks: number;
  readonly reusedChunks: number;
  /** Bytes read from the disk (capture: less than examined when free space was skipped). */
  readonly readBytes: number;
  /** Chunks that held only free space: neither read nor sent (capture) nor written (deploy). */
  readonly freeChunks: number;
  /** Deploy: bytes zeroed on the device by BLKZEROOUT instead of written. */
  readonly zeroedOut: number;
}

export interface RunOptions {
  /** Where retries and undelivered progress reports are told (stderr in the CLI). */
  readonly warn: (message: string) => void;
  /** Pause between progress reports (default 2 s). */
  readonly progressMs?: number;
  /** First pause before repeating a call the network lost (default 500 ms). */
  readonly backoffMs?: number;
}

async function diskSize(args: AgentArgs): Promise<number> {
  let st;
  try {
    st = await stat(args.disk);
  } catch (err) {
    throw new Error(`cannot open the disk ${args.disk}: ${(err as Error).message}; check the --disk path`, { cause: err });
  }
  if (args.size !== undefined) return args.size;
  if (!st.isFile() || st.size === 0) throw new Error(`${args.disk} does not tell its size (a block device, or empty); pass --size BYTES`);
  return st.size;
}

function checkStart(args: AgentArgs, answer: StartAnswer): asserts answer is Exclude<StartAnswer, { transport: 'nbd' }> {
  if (answer.transport === 'nbd') throw new Error(`this task moves its disk over NBD (${answer.nbd}), not the chunk transport: the thin client runs nbdcopy for it, not the agent`);
  if (answer.transport !== 'chunks') throw new Error(`start: the server answered with transport "${String((answer as { transport?: unknown }).transport)}", which this agent does not know; update the imaging client`);
  if (answer.kind !== args.mode) throw new Error(`this task is a ${answer.kind}, but the agent was asked to ${args.mode}; the thin client must run "agent ${answer.kind}"`);
  if (!(Number.isSafeInteger(answer.chunkSize) && answer.chunkSize > 0 && Number.isSafeInteger(answer.size) && answer.size > 0)) {
    throw new Error(`start: the server's answer lacks a valid size and chunk size (${JSON.stringify(answer)}); update the imaging client`);
  }
}

export async function runAgent(args: AgentArgs, options: RunOptions): Promise<AgentResult> {
  const size = await diskSize(args);
  const api = new AgentApi({ server: args.server, token: args.token, backoffMs: options.backoffMs, onRetry: options.warn });
  try {
    return await transfer(args, options, api, size);
  } finally {
    api.close();
  }
}

async function transfer(args: AgentArgs, options: RunOptions, api: AgentApi, size: number): Promise<AgentResult> {
  const disk = { name: args.diskName, size, logicalSectorSize: args.sectorSize, ...(args.serial !== undefined ? { serial: args.serial } : {}) };
  const answer = await api.start(disk);
  checkStart(args, answer);
  if (answer.kind === 'capture' && answer.size !== size) throw new Error(`start: the server expects ${answer.size} bytes of disk, this disk has ${size}; the server and agent disagree`);
  if (answer.kind === 'deploy' && answer.size > size) throw new Error(`the image is ${answer.size} bytes, more than the ${size} bytes of ${args.disk}; deploy onto a larger disk`);

  const counters = new Counters(Math.ceil(answer.size / answer.chunkSize));
  const reporter = new ProgressReporter(api, counters, options.progressMs ?? 2000, options.warn);
  const codec = new CodecPool();
  // Chunks are named on the compression threads: one set of threads to start, not two.
  const hashPool = new HashPool(codec);
  const ctx: TransferContext = { api, disk: args.disk, jobs: args.jobs, hashPool, codec, counters, reporter, warn: options.warn };
  reporter.start();
  try {
    let digest: string | null = null;
    if (answer.kind === 'capture') {
      const probed = args.wholeDisk ? null : await probeDisk(args.disk, size, answer.sectorSize, answer.chunkSize, options.warn);
      await capture(ctx, answer, probed);
    } else {
      // A server of the version before layouts sends none.
      const layout = answer.layout ?? null;
      // Onto a disk of another size the plan moves partitions; onto the same size only free chunks are skipped.
      // The task may name the partition that grows (a server before that sends no mainPartition).
      const plan = layout !== null && layout.diskSize !== size ? planRestore(layout, size, answer.mainPartition ? { main: answer.mainPartition } : {}) : null;
      if (plan?.resize === 'shrink') throw new Error(`the server sent version ${answer.version}, made for a ${layout?.diskSize}-byte disk, for this ${size}-byte one; a smaller disk needs the server's fitted version: update the server`);
      digest = (await deploy(ctx, answer, new Placement(answer.size, answer.chunkSize, layout, plan))).digest;
      if (layout !== null) {
        const done = await finishRestore(args.disk, layout, plan, options.warn);
        if (done.tableWritten) options.warn(`partition table rewritten for this ${size}-byte disk`);
        if (done.grown) options.warn(`partition ${done.grown.index} grown to ${done.grown.sizeBytes} bytes`);
      }
    }
    return { ok: true, digest, examined: counters.examined, sentChunks: counters.sentChunks, reusedChunks: counters.reusedChunks, readBytes: counters.readBytes, freeChunks: counters.freeChunks, zeroedOut: counters.zeroedOut };
  } finally {
    await reporter.stop();
    await Promise.all([hashPool.close(), codec.close()]);
  }
}
