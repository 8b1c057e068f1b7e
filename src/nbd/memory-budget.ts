/**
 * Server-wide budget for the bytes of in-flight request payloads (WRITE data being received and
 * handed to the export, READ data until its reply is handed to the kernel), shared by every NBD
 * connection. A connection takes its share before it buffers a payload; when the budget is spent it
 * waits, and reads nothing more from its socket, until other requests give bytes back. So many
 * clients each sending a large WRITE (or never finishing one) cannot make the server hold more
 * than the budget, however many connections they open.
 *
 * Waiters are served first come, first served, and a later request never overtakes a queued one,
 * so a large payload is not starved by a stream of small ones. One request larger than the whole
 * budget is granted when nothing else is held, so it can never wait for ever.
 */
export class MemoryBudget {
  private used = 0;
  private readonly queue: Array<{ readonly bytes: number; readonly grant: () => void; cancelled: boolean }> = [];

  constructor(readonly limitBytes: number) {
    if (!Number.isSafeInteger(limitBytes) || limitBytes <= 0) throw new RangeError(`NBD memory budget ${limitBytes} must be a positive number of bytes`);
  }

  get usedBytes(): number {
    return this.used;
  }

  /** Requests queued for bytes. */
  get waiting(): number {
    let n = 0;
    for (const w of this.queue) if (!w.cancelled) n++;
    return n;
  }

  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.limitBytes;
  }

  /** Takes `bytes` now if they fit and nobody is queued ahead; false otherwise (nothing taken). */
  tryAcquire(bytes: number): boolean {
    if (this.waiting > 0 || !this.fits(bytes)) return false;
    this.used += bytes;
    return true;
  }

  /**
   * Queues for `bytes`; `grant` runs (from inside a later release) once they are taken on the
   * caller's behalf. Returns a function that withdraws the request if it has not been granted yet.
   */
  wait(bytes: number, grant: () => void): () => void {
    const entry = { bytes, grant, cancelled: false };
    this.queue.push(entry);
    this.serve();
    return () => {
      if (entry.cancelled) return;
      entry.cancelled = true;
      // A withdrawn head may have been what blocked the others.
      this.serve();
    };
  }

  release(bytes: number): void {
    if (bytes <= 0) return;
    if (bytes > this.used) throw new Error(`NBD memory budget released ${bytes} bytes but only ${this.used} are held (accounting bug)`);
    this.used -= bytes;
    this.serve();
  }

  private serve(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0];
      if (head.cancelled) {
        this.queue.shift();
        continue;
      }
      if (!this.fits(head.bytes)) return;
      this.queue.shift();
      head.cancelled = true;
      this.used += head.bytes;
      head.grant();
    }
  }
}
