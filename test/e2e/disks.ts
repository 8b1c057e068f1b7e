/**
 * Disk images for the end-to-end tests, built from files without loop mounts: a GPT made by sfdisk,
 * an ext4 filesystem made by `mkfs.ext4 -d` on a partition-sized file and copied in at the partition's
 * offset, and a large all-zero tail.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export const MiB = 1024 * 1024;

export interface SourceDisk {
  readonly path: string;
  readonly size: number;
  readonly partition: { readonly startBytes: number; readonly sizeBytes: number };
  /** Files put into the ext4 root: name → content. */
  readonly files: ReadonlyMap<string, Buffer>;
}

/**
 * SIZE bytes: GPT with one Linux partition (1 MiB .. 1 MiB + PART) holding ext4 with a few known files
 * (one of them FILL bytes of random data); everything past the partition is zero.
 */
export function buildSourceDisk(dir: string, size: number, partSize: number, fill: number): SourceDisk {
  mkdirSync(dir, { recursive: true });
  const root = join(dir, 'rootfs');
  mkdirSync(join(root, 'etc'), { recursive: true });
  const files = new Map<string, Buffer>([
    ['etc/hostname', Buffer.from('golden-pc\n')],
    ['hello.txt', Buffer.from('netclone end-to-end test: this file must survive capture and deploy\n')],
    ['random.bin', randomBytes(fill)],
  ]);
  for (const [name, content] of files) writeFileSync(join(root, name), content);

  const part = join(dir, 'part.ext4');
  execFileSync('truncate', ['-s', String(partSize), part]);
  execFileSync('mkfs.ext4', ['-F', '-q', '-L', 'golden', '-d', root, part], { stdio: 'pipe' });

  const path = join(dir, 'source.raw');
  execFileSync('truncate', ['-s', String(size), path]);
  const start = MiB;
  execFileSync('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', path], {
    input: `label: gpt\nstart=${start / 512}, size=${partSize / 512}, type=L, name=root\n`,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, readFileSync(part), 0, partSize, start);
  } finally {
    closeSync(fd);
  }
  return { path, size, partition: { startBytes: start, sizeBytes: partSize }, files };
}

/** A file of SIZE bytes: zeros (sparse) or, with `random`, noise that must survive untouched. */
export function buildDisk(path: string, size: number, random = false): void {
  if (random) writeFileSync(path, randomBytes(size));
  else execFileSync('truncate', ['-s', String(size), path]);
}

/** Reads FILE from the ext4 filesystem at OFFSET (SIZE bytes) in DISK with debugfs: no mount needed. */
export function readExt4File(disk: string, offset: number, size: number, file: string, scratch: string): Buffer {
  const part = join(scratch, 'check.ext4');
  const buf = Buffer.alloc(size);
  const fd = openSync(disk, 'r');
  try {
    readSync(fd, buf, 0, size, offset);
  } finally {
    closeSync(fd);
  }
  writeFileSync(part, buf);
  return execFileSync('debugfs', ['-R', `cat /${file}`, part], { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * MiB });
}
