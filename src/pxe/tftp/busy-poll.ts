/**
 * Keeps the event loop polling, without sleeping, for a short window after each DATA send.
 *
 * Why: lock-step TFTP (one block, wait for its ACK, next block) is bound by round-trip latency, not
 * bandwidth. When the loop sleeps in epoll, every ACK must first wake this process (an interrupt,
 * a scheduler wake-up, often a CPU leaving an idle state), which costs as much as all the work of
 * answering it. A pending setImmediate makes libuv poll with a zero timeout instead, so an ACK is
 * picked up within a loop iteration. The same trade as the kernel's SO_BUSY_POLL: CPU time during a
 * transfer for latency. It is bounded: polling stops `windowMs` after the last send, so an idle
 * server, or a client that went quiet, costs nothing; boot loaders are a few hundred kilobytes,
 * so a PC's whole transfer spins a core for milliseconds.
 */
export interface BusyPollOptions {
  /**
   * Milliseconds on a monotonic clock; default `performance.now`. A test passes a clock it moves by
   * hand, so that when a window ends is decided by the test's steps, not by how fast the machine is.
   */
  readonly now?: () => number;
}

export class BusyPoll {
  private until = 0;
  private running = false;
  private spins = 0;
  private readonly now: () => number;

  /** `windowMs` 0 disables polling: kick() then does nothing. */
  constructor(
    private readonly windowMs: number,
    options: BusyPollOptions = {},
  ) {
    this.now = options.now ?? (() => performance.now());
  }

  /** Poll for the next `windowMs` (extends a window already running). */
  kick(): void {
    if (this.windowMs <= 0) return;
    this.until = this.now() + this.windowMs;
    if (!this.running) {
      this.running = true;
      setImmediate(this.spin);
    }
  }

  /** Whether polling is running now: while true, the loop polls for I/O without sleeping. */
  get active(): boolean {
    return this.running;
  }

  /** Event-loop iterations spent polling since this object was made (what a test or a profile counts). */
  get iterations(): number {
    return this.spins;
  }

  private readonly spin = (): void => {
    this.spins++;
    if (this.now() < this.until) setImmediate(this.spin);
    else this.running = false;
  };
}
