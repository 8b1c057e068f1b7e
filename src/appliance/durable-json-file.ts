/**
 * lowdb adapter that survives power loss: lowdb's own JSONFile renames a temp file
 * without fsync, so a crash right after a write can leave an empty or stale file.
 * Here: write temp → fsync → rename → fsync directory, one write at a time, with
 * later writes coalesced while one is in flight.
 */
import { open, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import type { Adapter } from 'lowdb';

export async function writeFileDurably(file: string, data: string | Buffer): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  const dir = await open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

export class DurableJsonFile<T> implements Adapter<T> {
  private writing: Promise<void> | null = null;
  private pending: { data: T; waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }> } | null = null;

  constructor(readonly file: string) {}

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
      if (this.pending) {
        this.pending.data = data;
        this.pending.waiters.push({ resolve, reject });
      } else {
        this.pending = { data, waiters: [{ resolve, reject }] };
      }
      if (!this.writing) this.drain();
    });
  }

  private drain(): void {
    const batch = this.pending;
    if (!batch) {
      this.writing = null;
      return;
    }
    this.pending = null;
    this.writing = writeFileDurably(this.file, JSON.stringify(batch.data, null, 1))
      .then(
        () => batch.waiters.forEach((w) => w.resolve()),
        (err: unknown) => batch.waiters.forEach((w) => w.reject(err)),
      )
      .finally(() => this.drain());
  }
}
