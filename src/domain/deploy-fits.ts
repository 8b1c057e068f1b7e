/**
 * Fitted versions being prepared for deploys onto smaller disks (issue 12). Deriving one shrinks a
 * filesystem on the server and can take minutes, longer than one HTTP call should wait, so the PC's
 * start call is answered "preparing" (503, the agent asks again) until the version is ready. One
 * preparation per (image, version, disk size, partition shrunk) runs at a time, whichever PCs ask for it.
 */
import type { Logger } from '../lib/log.js';

export type FitAnswer =
  | { readonly state: 'ready'; readonly image: string; readonly version: number }
  | { readonly state: 'preparing'; readonly step: string };

/** `main`: the partition the task names to shrink; undefined for the largest resizable one. */
export type FitFn = (image: string, version: number, diskSize: number, onProgress: (step: string) => void, main?: number) => Promise<{ readonly image: string; readonly version: number }>;

/** How long an ask waits for a fit before answering "preparing": a fit the store already holds is found in less. */
const QUICK_ANSWER_MS = 2000;

interface Job {
  done: Promise<void>;
  step: string;
  result: { readonly image: string; readonly version: number } | null;
  error: Error | null;
}

export class DeployFits {
  private readonly jobs = new Map<string, Job>();

  constructor(
    private readonly fit: FitFn,
    private readonly logger: Logger,
    /** How long an ask waits for the fit before answering "preparing" (tests shorten it). */
    private readonly quickAnswerMs = QUICK_ANSWER_MS,
  ) {}

  /**
   * Where the fit for this disk stands: ready (then the job is forgotten: the fitted version is kept
   * by the store and found again there), or preparing. A failed fit throws its error once, so the
   * task fails with its reason and a later task tries again.
   */
  async poll(image: string, version: number, diskSize: number, main?: number): Promise<FitAnswer> {
    const key = `${image}\n${version}\n${diskSize}\n${main ?? 'largest'}`;
    let job = this.jobs.get(key);
    if (!job) {
      const created: Job = { done: Promise.resolve(), step: 'starting', result: null, error: null };
      this.logger.info({ image, version, diskSize, main }, 'preparing a version fitted to a smaller disk');
      created.done = this.fit(image, version, diskSize, (step) => (created.step = step), main).then(
        (r) => {
          created.result = r;
          this.logger.info({ image, version, diskSize, fitted: r }, 'fitted version ready');
        },
        (err: unknown) => {
          created.error = err instanceof Error ? err : new Error(String(err));
          this.logger.warn({ image, version, diskSize, err: created.error.message }, 'fitting a version to a smaller disk failed');
        },
      );
      job = created;
      this.jobs.set(key, created);
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([job.done, new Promise<void>((resolve) => (timer = setTimeout(resolve, this.quickAnswerMs)))]);
    clearTimeout(timer);
    if (job.error) {
      this.jobs.delete(key);
      throw job.error;
    }
    if (job.result) {
      this.jobs.delete(key);
      return { state: 'ready', ...job.result };
    }
    return { state: 'preparing', step: job.step };
  }
}
