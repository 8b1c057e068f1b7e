/**
 * One database write after `delayMs` for any number of in-memory changes asked for meanwhile: for
 * frequent, low-value updates (progress, host sightings) that must not each rewrite and fsync the
 * whole database. A failed write is reported and leaves the data in memory; the next write carries it.
 */
export class DeferredSave {
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly save: () => Promise<void>,
    private readonly delayMs: number,
    private readonly onError: (err: unknown) => void,
  ) {}

  request(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.save().catch(this.onError);
    }, this.delayMs);
    this.timer.unref();
  }

  cancel(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
