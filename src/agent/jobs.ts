/**
 * At most N pieces of work at once (chunk uploads, chunk downloads): the producer waits for a free
 * slot, so memory stays at N chunks however fast the disk reads. The first failure is kept and
 * handed to the producer at its next add() or at drain(), so a transfer stops at the first error.
 */
export class Jobs {
  private readonly running = new Set<Promise<void>>();
  private failure: Error | null = null;

  constructor(private readonly limit: number) {}

  /** Starts `job` once a slot is free; throws the first failure of an earlier job instead. */
  async add(job: () => Promise<void>): Promise<void> {
    this.check();
    while (this.running.size >= this.limit) {
      await Promise.race(this.running);
      this.check();
    }
    const p: Promise<void> = job()
      .then(
        () => undefined,
        (err: unknown) => {
          this.failure ??= err instanceof Error ? err : new Error(String(err));
        },
      )
      .finally(() => this.running.delete(p));
    this.running.add(p);
  }

  /** Throws the first failure, if any. */
  check(): void {
    if (this.failure) throw this.failure;
  }

  /** Waits for every job; throws the first failure. */
  async drain(): Promise<void> {
    await this.settle();
    this.check();
  }

  /** Waits for every job, failed or not (before closing what they use). */
  async settle(): Promise<void> {
    while (this.running.size > 0) await Promise.all([...this.running]);
  }
}
