/**
 * Full disks for fault tests: a small tmpfs mounted where a test wants one (this needs root) and a
 * filler file that takes every byte left on it.
 */
import { execFile } from 'node:child_process';
import { mkdir, open, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect } from 'vitest';

const exec = promisify(execFile);

/** Mounts a tmpfs of `size` (mount's syntax: '12m', '16k') on `target` and records it in `mounts`. */
export async function mountTmpfs(target: string, size: string, mounts: string[]): Promise<void> {
  await mkdir(target, { recursive: true });
  await exec('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', target]);
  mounts.push(target);
}

/** Unmounts `mounts`, newest first (lazily when busy), and empties the list. */
export async function unmountAll(mounts: string[]): Promise<void> {
  for (const m of mounts.splice(0).reverse()) await exec('umount', [m]).catch(() => exec('umount', ['-l', m]));
}

/** Writes a filler file until the filesystem says ENOSPC; returns its path. */
export async function fill(fsDir: string, name = 'filler'): Promise<string> {
  const file = path.join(fsDir, name);
  const fh = await open(file, 'w');
  try {
    for (const block of [64 * 1024, 4096, 512, 1]) {
      const buf = Buffer.alloc(block, 0xee);
      for (;;) {
        try {
          await fh.write(buf);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
          break;
        }
      }
    }
  } finally {
    await fh.close();
  }
  // Proof the filesystem is full: not one more byte fits.
  await expect(writeFile(path.join(fsDir, 'probe'), 'x')).rejects.toMatchObject({ code: 'ENOSPC' });
  return file;
}

/** Shortens a filler file by `bytes`, leaving that much room on its filesystem. */
export async function makeRoom(filler: string, bytes: number): Promise<void> {
  const { size } = await stat(filler);
  if (size < bytes) throw new Error(`${filler} holds ${size} bytes; it cannot free ${bytes}`);
  await truncate(filler, size - bytes);
}
