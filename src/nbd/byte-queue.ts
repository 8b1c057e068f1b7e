/**
 * Incoming socket bytes as a list of chunks. Taking n bytes copies only when they straddle
 * chunks, so a large WRITE payload is assembled with at most one copy and small headers are
 * read without concatenating the whole backlog.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0; // read position inside chunks[0]
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /** Returns n bytes without consuming them; caller must have checked `length >= n`. */
  peek(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0];
    if (first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    let pos = this.head;
    for (const c of this.chunks) {
      const take = Math.min(c.length - pos, n - filled);
      c.copy(out, filled, pos, pos + take);
      filled += take;
      pos = 0;
      if (filled === n) break;
    }
    return out;
  }

  /** Consumes and returns n bytes; caller must have checked `length >= n`. */
  take(n: number): Buffer {
    const out = this.peek(n);
    this.skip(n);
    return out;
  }

  /**
   * Consumes n bytes and returns them as views of the received chunks, in order, without copying.
   * Caller must have checked `length >= n`. The views share memory with socket chunks, which Node
   * allocates fresh for every read, so they stay valid; callers still drop them once used.
   */
  takeSlices(n: number): Buffer[] {
    const out: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const first = this.chunks[0];
      const avail = first.length - this.head;
      if (avail > left) {
        out.push(first.subarray(this.head, this.head + left));
        this.head += left;
        left = 0;
      } else {
        out.push(this.head === 0 ? first : first.subarray(this.head));
        left -= avail;
        this.chunks.shift();
        this.head = 0;
      }
    }
    this.total -= n;
    return out;
  }

  /** Drops up to n bytes; returns how many were dropped. */
  skip(n: number): number {
    const want = Math.min(n, this.total);
    let left = want;
    while (left > 0) {
      const first = this.chunks[0];
      const avail = first.length - this.head;
      if (avail > left) {
        this.head += left;
        left = 0;
      } else {
        left -= avail;
        this.chunks.shift();
        this.head = 0;
      }
    }
    this.total -= want;
    return want;
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.total = 0;
  }
}
