/**
 * The image store's format version: `<store>/store.json`, `{"format": N}`.
 *
 *   1  written up to issue 10: no store.json; chunk files of chunk format 1 (no content checksum).
 *   2  store.json; chunk files of chunk format 1 or 2 (see chunk-format.ts). New chunks are format 2.
 *
 * Opening a format-1 store migrates it to 2 by writing store.json (atomically: temp file, fsync,
 * rename, directory fsync; a crash before the rename leaves a format-1 store that the next open
 * migrates again). Nothing else is rewritten: format-1 chunk files are read as they are and checked
 * against their sha256 name on every read, since they carry no cheaper checksum. A store of a newer
 * format, or with a store.json this code cannot read, is refused before anything in it is touched.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileDurably } from '../lib/durable-write.js';

/** The store format this code writes and reads. */
export const STORE_FORMAT = 2;
export const STORE_FORMAT_FILE = 'store.json';

export class StoreFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreFormatError';
  }
}

/**
 * The format of the store at `dir` as found: a number, or null when there is no store.json (a store
 * written up to issue 10, or a new directory; both are format 1). Throws StoreFormatError for a store
 * this code must not open.
 */
export async function readStoreFormat(dir: string): Promise<number | null> {
  const path = join(dir, STORE_FORMAT_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  let format: unknown;
  try {
    format = (JSON.parse(text) as { format?: unknown } | null)?.format;
  } catch {
    format = undefined;
  }
  if (typeof format !== 'number' || !Number.isSafeInteger(format) || format < 1) {
    throw new StoreFormatError(
      `${path} does not say which format the image store is in (expected {"format": ${STORE_FORMAT}}); ` +
        `if this netclone or an older one wrote this store, write {"format": ${STORE_FORMAT}} into that file and start again`,
    );
  }
  if (format > STORE_FORMAT) {
    throw new StoreFormatError(
      `the image store in ${dir} is format ${format}, written by a newer netclone; this one reads store formats 1 to ${STORE_FORMAT}. ` +
        'Upgrade netclone to use this store; nothing in it was changed',
    );
  }
  return format;
}

/** Records that the store at `dir` is of STORE_FORMAT, durably. `tmpDir` is the store's temp directory (same file system). */
export async function writeStoreFormat(dir: string, tmpDir: string): Promise<void> {
  await writeFileDurably(join(dir, STORE_FORMAT_FILE), `${JSON.stringify({ format: STORE_FORMAT })}\n`, { mode: 0o666, tempDir: tmpDir });
}
