/**
 * Replacing a file so that a crash or power cut leaves either the old file or the new one, whole:
 * write a temp file, fsync it, rename it over the target, fsync the directory. Without the first
 * fsync a crash after the rename can leave an empty file; without the last one the rename itself
 * can be lost.
 *
 * A write that fails before the rename removes its temp file (on a full disk it holds the very space
 * the next attempt needs) and leaves the target as it was.
 */
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

export interface DurableWriteOptions {
  /** Permission bits of the new file (the umask still applies); the rename replaces the old file's. */
  readonly mode: number;
  /**
   * false: the caller fsyncs the target's directory itself, because for it the rename is the commit
   * and a failure after it must not be reported as a failed write. Default true.
   */
  readonly syncDir?: boolean;
}

/**
 * Where the temp file goes; it must be on the target's file system. Default: a hidden, unique name
 * beside the target. `tempDir` puts a unique name in that directory (for a store that clears its temp
 * directory on start); `tempPath` is the exact name, and a leftover there from an interrupted run is
 * overwritten.
 */
export type TempPlace =
  | { readonly tempDir?: string; readonly tempPath?: undefined }
  | { readonly tempPath: string; readonly tempDir?: undefined };

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** A name no other writer (in this or another process) picks: pid plus random bytes. */
export function tempName(dir: string, tag: string): string {
  return join(dir, `${tag}-${process.pid}-${randomBytes(6).toString('hex')}`);
}

/** The default temp file: hidden and ending in .tmp, so listings and cleanups can tell it from real files. */
function tempBeside(target: string): string {
  return join(dirname(target), `.${basename(target)}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`);
}

/**
 * The open/finish pair: a temp file the caller fills through `handle` (streaming, positional or sparse
 * writes), then either `commit()` to put it in place of the target or `abort()` to drop it.
 */
export class PendingFile {
  private state: 'open' | 'committed' | 'aborted' = 'open';

  private constructor(
    readonly target: string,
    /** The temp file's path, until commit() renames it to `target`. */
    readonly tempPath: string,
    readonly handle: FileHandle,
    private readonly syncDir: boolean,
  ) {}

  static async open(target: string, options: DurableWriteOptions & TempPlace): Promise<PendingFile> {
    let tempPath: string;
    let flags: string;
    if (options.tempPath !== undefined) {
      tempPath = options.tempPath;
      flags = 'w';
    } else {
      // A unique name must not exist yet; 'wx' makes a clash an error instead of a shared file.
      tempPath = options.tempDir !== undefined ? tempName(options.tempDir, 'w') : tempBeside(target);
      flags = 'wx';
    }
    const handle = await open(tempPath, flags, options.mode);
    return new PendingFile(target, tempPath, handle, options.syncDir ?? true);
  }

  /**
   * fsync, close, rename over the target, fsync the target's directory. Throws if any step fails; a
   * failure before the rename removes the temp file and leaves the target as it was, one after it
   * (the directory fsync) means the new file is in place but a power cut could still undo that.
   */
  async commit(): Promise<void> {
    if (this.state !== 'open') throw new Error(`${this.target}: this temp file was already ${this.state}; open a new one to write again`);
    this.state = 'committed';
    try {
      try {
        await this.handle.sync();
      } finally {
        await this.handle.close();
      }
      await rename(this.tempPath, this.target);
    } catch (err) {
      await unlink(this.tempPath).catch(() => undefined);
      throw err;
    }
    if (this.syncDir) await fsyncDir(dirname(this.target));
  }

  /** Closes and removes the temp file; the target stays as it was. Never throws; does nothing after commit(). */
  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    await this.handle.close().catch(() => undefined);
    await unlink(this.tempPath).catch(() => undefined);
  }
}

/** Replaces `target` with `data` durably (see the module comment). */
export async function writeFileDurably(target: string, data: string | Uint8Array, options: DurableWriteOptions & TempPlace): Promise<void> {
  const file = await PendingFile.open(target, options);
  try {
    await file.handle.writeFile(data);
  } catch (err) {
    await file.abort();
    throw err;
  }
  await file.commit();
}
