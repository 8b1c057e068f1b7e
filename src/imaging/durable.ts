/** Small helpers for the write-temp → fsync → rename → fsync-dir dance. */
import { open, rename } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function tempName(tmpDir: string, tag: string): string {
  return join(tmpDir, `${tag}-${process.pid}-${randomBytes(6).toString('hex')}`);
}

/** Writes `data` to a temp file, fsyncs it and renames it to `dest`; the caller fsyncs dest's directory. */
export async function writeFileDurable(tmpDir: string, dest: string, data: Buffer): Promise<void> {
  const tmp = tempName(tmpDir, 'w');
  const fh = await open(tmp, 'wx');
  try {
    let off = 0;
    while (off < data.length) {
      const { bytesWritten } = await fh.write(data, off, data.length - off, off);
      off += bytesWritten;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, dest);
}
