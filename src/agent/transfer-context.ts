/** What a capture or a deploy works with: the server, the disk, the worker pools and the counters. */
import type { AgentApi } from './api.js';
import type { CodecPool } from './codec-pool.js';
import type { HashPool } from './hash-pool.js';
import type { Counters, ProgressReporter } from './progress.js';

export interface TransferContext {
  readonly api: AgentApi;
  /** The disk, or a regular file standing in for it. */
  readonly disk: string;
  /** Chunks uploaded or downloaded at once. */
  readonly jobs: number;
  readonly hashPool: HashPool;
  readonly codec: CodecPool;
  readonly counters: Counters;
  readonly reporter: ProgressReporter;
  /** Where the agent tells what it works around (stderr in the CLI). */
  readonly warn: (message: string) => void;
}
