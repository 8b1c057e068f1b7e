/**
 * The agent's counters, and the progress calls that carry them to the server every ~2 s. Those calls
 * are also the task's heartbeat: a task whose client goes silent is failed by the server. A call the
 * network loses is simply sent again at the next tick; an answer that the task is over (its token is
 * refused) stops the transfer, since nothing it sends after that can count.
 */
import { ApiError, type AgentApi, type ProgressReport } from './api.js';

export class Counters {
  examined = 0;
  reusedChunks = 0;
  sentChunks = 0;
  zeroChunks = 0;
  /** Chunks that held only free space (issue 12): not read, not sent. */
  freeChunks = 0;
  /** Bytes read from the disk: less than examined when free space was skipped. */
  readBytes = 0;
  /** Deploy: bytes zeroed by BLKZEROOUT rather than written. */
  zeroedOut = 0;
  constructor(readonly totalChunks: number) {}
}

export class ProgressReporter {
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> = Promise.resolve();
  private phase: ProgressReport['phase'] = 'transferring';
  private ended: Error | null = null;
  private busy = false;
  /** A report was asked for while one was out: send it when that one is answered. */
  private again = false;

  constructor(
    private readonly api: Pick<AgentApi, 'progress'>,
    private readonly counters: Counters,
    private readonly intervalMs = 2000,
    private readonly warn: (message: string) => void = () => undefined,
  ) {}

  start(): void {
    if (this.timer) return;
    // A tick while a report is out is skipped: a slow server gets one report at a time, not a queue.
    this.timer = setInterval(() => {
      if (!this.busy) this.post();
    }, this.intervalMs);
  }

  /** Switches phase and tells the server at once (deploy's read-back: the task shows "verifying"). */
  async setPhase(phase: ProgressReport['phase']): Promise<void> {
    this.phase = phase;
    this.post();
    await this.idle();
  }

  /** Throws if the server said the task is over; transfers call it as they go. */
  check(): void {
    if (this.ended) throw this.ended;
  }

  /**
   * Sends the counters as they are now. One call is out at a time; asked while one is out, it sends
   * once that one is answered, with the counters as they are then, so the last report is never lost.
   */
  post(): void {
    if (this.ended) return;
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    const c = this.counters;
    // Free chunks count as zero ones on the task page: neither needed the wire.
    const report: ProgressReport = { phase: this.phase, examined: c.examined, reusedChunks: c.reusedChunks, sentChunks: c.sentChunks, zeroChunks: c.zeroChunks + c.freeChunks, totalChunks: c.totalChunks };
    this.inFlight = this.api.progress(report).then(
      () => this.answered(),
      (err: Error) => {
        if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
          this.ended = new Error(`the server ended this task (${err.serverError}); nothing more is sent`);
          this.again = false;
        } else {
          this.warn(`progress report not delivered (${err.message}); the next one follows in ${this.intervalMs} ms`);
        }
        this.answered();
      },
    );
  }

  private answered(): void {
    this.busy = false;
    if (this.again) {
      this.again = false;
      this.post();
    }
  }

  /** Waits until no report is out or waiting. */
  private async idle(): Promise<void> {
    while (this.busy) await this.inFlight;
  }

  /** Stops the ticks and waits for the reports still out or waiting, so none is sent after the agent reports its result. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.idle();
  }
}
