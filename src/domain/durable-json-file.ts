/**
 * lowdb adapter that survives power loss: lowdb's own JSONFile renames a temp file
 * without fsync, so a crash right after a write can leave an empty or stale file.
 * Here: lib/durable-write (temp → fsync → rename → fsync directory), one write at a time,
 * with later writes coalesced while one is in flight.
 *
 * A write that fails (disk full, I/O error) rejects for the callers whose changes it
 * carried, with a message that says what to do, and leaves the file as it was. lowdb keeps
 * the data in memory, so the next write carries those changes too; until then a retry runs
 * every few seconds, so the file catches up once there is room again even if nothing else
 * changes.
 */
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Adapter } from 'lowdb';
import { writeFileDurably } from '../lib/durable-write.js';

/** How long after a failed write the adapter tries again on its own. */
export const RETRY_AFTER_FAILURE_MS = 5000;

/** The error a failed database write rejects with: names the file, keeps the system error's code. */
export class DatabaseWriteError extends Error {
  readonly code: string | undefined;
  constructor(file: string, cause: unknown) {
    const code = cause instanceof Error ? (cause as NodeJS.ErrnoException).code : undefined;
    const advice =
      code === 'ENOSPC' || code === 'EDQUOT'
        ? `free space on the file system that holds ${path.dirname(file)}`
        : code === 'EROFS' || code === 'EACCES' || code === 'EPERM'
          ? `make ${path.dirname(file)} writable for netclone`
          : `check the disk that holds ${path.dirname(file)} (dmesg)`;
    super(`could not save the database ${file}: ${cause instanceof Error ? cause.message : String(cause)}; ${advice}. The change is kept in memory and saved with the next write that succeeds`, { cause });
    this.name = 'DatabaseWriteError';
    this.code = code;
  }
}

interface Waiter {
  resolve(): void;
  reject(e: unknown): void;
}

/**
 * Emits 'writeFailed' (err: DatabaseWriteError, failuresInARow: number) after each failed
 * write and 'recovered' (failuresInARow: number) when a write succeeds after failures.
 */
export class DurableJsonFile<T> extends EventEmitter implements Adapter<T> {
  private writing: Promise<void> | null = null;
  private pending: { data: T; waiters: Waiter[] } | null = null;
  /** Data a failed write did not save, while nothing newer is queued; the retry timer writes it. */
  private unsaved: T | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private failures = 0;

  constructor(readonly file: string) {
    super();
  }

  async read(): Promise<T | null> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new Error(`database ${this.file} is not valid JSON (${(err as Error).message}); restore it from a backup or move it aside to start empty`, { cause: err });
    }
  }

  write(data: T): Promise<void> {
    return new Promise((resolve, reject) => {
      this.enqueue(data, { resolve, reject });
    });
  }

  /** Stops the retry timer (the owner is closing; its last write reports any failure itself). */
  stopRetrying(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private enqueue(data: T, waiter: Waiter | null): void {
    this.unsaved = null;
    this.stopRetrying();
    if (this.pending) {
      this.pending.data = data;
      if (waiter) this.pending.waiters.push(waiter);
    } else {
      this.pending = { data, waiters: waiter ? [waiter] : [] };
    }
    if (!this.writing) this.drain();
  }

  private drain(): void {
    const batch = this.pending;
    if (!batch) {
      this.writing = null;
      return;
    }
    this.pending = null;
    // 0o600: only netclone reads its state, and the database holds password hashes.
    this.writing = writeFileDurably(this.file, JSON.stringify(batch.data, null, 1), { mode: 0o600 })
      .then(
        () => {
          const failures = this.failures;
          this.failures = 0;
          if (failures > 0) this.tell('recovered', failures);
          for (const w of batch.waiters) w.resolve();
        },
        (cause: unknown) => {
          const err = new DatabaseWriteError(this.file, cause);
          this.failures++;
          // Only the newest data matters; a queued write carries newer data already.
          if (!this.pending) this.scheduleRetry(batch.data);
          this.tell('writeFailed', err, this.failures);
          for (const w of batch.waiters) w.reject(err);
        },
      )
      .finally(() => this.drain());
  }

  /** A listener that throws must not turn into a rejection nobody handles, nor stop the queue. */
  private tell(event: 'writeFailed' | 'recovered', ...args: unknown[]): void {
    try {
      this.emit(event, ...args);
    } catch {
      // the listener's own failure is its business; the write outcome still reaches every caller
    }
  }

  private scheduleRetry(data: T): void {
    this.unsaved = data;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      const again = this.unsaved;
      if (again !== null) this.enqueue(again, null);
    }, RETRY_AFTER_FAILURE_MS);
    // A pending retry must not keep a CLI command (or a stopping server) alive.
    this.retryTimer.unref();
  }
}
