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
  constructor(readonly totalChunks: number) {}
}

export class ProgressReporter {
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> = Promise.resolve();
  private phase: ProgressReport['phase'] = 'transferring';
  private ended: Error | null = null;
  private busy = false;

  constructor(
    private readonly api: Pick<AgentApi, 'progress'>,
    private readonly counters: Counters,
    private readonly intervalMs = 2000,
    private readonly warn: (message: string) => void = () => undefined,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.post(), this.intervalMs);
  }

  /** Switches phase and tells the server at once (deploy's read-back: the task shows "verifying"). */
  async setPhase(phase: ProgressReport['phase']): Promise<void> {
    this.phase = phase;
    // A report still out would make post() skip this one.
    await this.inFlight;
    this.post();
    await this.inFlight;
  }

  /** Throws if the server said the task is over; transfers call it as they go. */
  check(): void {
    if (this.ended) throw this.ended;
  }

  /** Sends the counters as they are now (one call at a time; a tick while one is out is skipped). */
  post(): void {
    if (this.busy) return;
    this.busy = true;
    const c = this.counters;
    const report: ProgressReport = { phase: this.phase, examined: c.examined, reusedChunks: c.reusedChunks, sentChunks: c.sentChunks, zeroChunks: c.zeroChunks, totalChunks: c.totalChunks };
    this.inFlight = this.api.progress(report).then(
      () => {
        this.busy = false;
      },
      (err: Error) => {
        this.busy = false;
        if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
          this.ended = new Error(`the server ended this task (${err.serverError}); nothing more is sent`);
        } else {
          this.warn(`progress report not delivered (${err.message}); the next one follows in ${this.intervalMs} ms`);
        }
      },
    );
  }

  /** Stops the ticks and waits for a call still out, so none is sent after the agent reports its result. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.inFlight;
  }
}
