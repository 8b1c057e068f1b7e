/**
 * A path the filesystem tools can open for one partition of the disk being captured. On a block
 * device that is the kernel's partition node (/dev/sda2, /dev/nvme0n1p2) when its start matches the
 * table; otherwise, and for a regular file standing in for a disk, a read-only loop device over the
 * partition's bytes, detached again when the caller is done, whatever happened.
 */
import { readFile, readdir, realpath, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { runTool } from '../lib/tool.js';

export interface PartitionPlace {
  readonly index: number;
  readonly startBytes: number;
  readonly sizeBytes: number;
}

/** sysfs counts partition starts and sizes in 512-byte units whatever the disk's sector size. */
const SYSFS_UNIT = 512;

async function readNumber(path: string): Promise<number | null> {
  try {
    const n = Number((await readFile(path, 'utf8')).trim());
    return Number.isSafeInteger(n) ? n : null;
  } catch {
    return null;
  }
}

/** Where the kernel shows block devices; a test points these at a tree of its own. */
export interface BlockRoots {
  readonly sys: string;
  readonly dev: string;
}

const KERNEL_ROOTS: BlockRoots = { sys: '/sys/class/block', dev: '/dev' };

/** The kernel's node for the partition of block device `disk`, when it exists and lies where the table says. */
export async function partitionNode(disk: string, part: PartitionPlace, roots: BlockRoots = KERNEL_ROOTS): Promise<string | null> {
  const name = basename(await realpath(disk));
  const dir = `${roots.sys}/${name}`;
  let children: string[];
  try {
    children = await readdir(dir);
  } catch {
    return null;
  }
  for (const child of [`${name}${part.index}`, `${name}p${part.index}`]) {
    if (!children.includes(child)) continue;
    const start = await readNumber(`${dir}/${child}/start`);
    const size = await readNumber(`${dir}/${child}/size`);
    if (start === null || start * SYSFS_UNIT !== part.startBytes) continue;
    if (size !== null && size * SYSFS_UNIT !== part.sizeBytes) continue;
    const node = `${roots.dev}/${child}`;
    try {
      if ((await stat(node)).isBlockDevice()) return node;
    } catch {
      // No node in /dev (a minimal initramfs without devtmpfs): the loop device below does it.
    }
  }
  return null;
}

export interface PartitionAccess {
  /** A deploy's tools write to the partition (growing its filesystem); a capture's only read. Default false. */
  readonly writable?: boolean;
}

async function attachLoop(disk: string, part: PartitionPlace, writable: boolean): Promise<string> {
  const args = ['-f', '--show', '-o', String(part.startBytes), '--sizelimit', String(part.sizeBytes), disk];
  const r = await runTool('losetup', writable ? args : ['-r', ...args]);
  const dev = r.stdout.trim();
  if (r.code !== 0 || !dev.startsWith('/dev/')) {
    throw new Error(`losetup could not attach partition ${part.index} of ${disk} (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}; are loop devices available (modprobe loop)?`);
  }
  return dev;
}

async function detachLoop(dev: string): Promise<void> {
  const r = await runTool('losetup', ['-d', dev]);
  if (r.code !== 0) throw new Error(`losetup -d ${dev} failed (exit ${r.code}): ${r.stderr.trim()}; detach it by hand`);
}

/** Runs `fn` with a path to partition `part` of `disk` (a block device or a disk image file); read-only unless `access.writable`. */
export async function withPartition<T>(disk: string, part: PartitionPlace, fn: (path: string) => Promise<T>): Promise<T>;
export async function withPartition<T>(disk: string, part: PartitionPlace, access: PartitionAccess, fn: (path: string) => Promise<T>): Promise<T>;
export async function withPartition<T>(
  disk: string,
  part: PartitionPlace,
  accessOrFn: PartitionAccess | ((path: string) => Promise<T>),
  maybeFn?: (path: string) => Promise<T>,
): Promise<T> {
  const fn = typeof accessOrFn === 'function' ? accessOrFn : maybeFn;
  if (fn === undefined) throw new TypeError('withPartition: no function to run');
  const writable = typeof accessOrFn === 'function' ? false : accessOrFn.writable === true;
  if ((await stat(disk)).isBlockDevice()) {
    const node = await partitionNode(disk, part);
    if (node !== null) return fn(node);
  }
  const dev = await attachLoop(disk, part, writable);
  let result: T;
  try {
    result = await fn(dev);
  } catch (err) {
    await detachLoop(dev).catch(() => undefined);
    throw err;
  }
  await detachLoop(dev);
  return result;
}

/** Asks the kernel to read block device `disk`'s partition table again, after a deploy rewrote it, so its partition nodes match. */
export async function rereadPartitions(disk: string): Promise<void> {
  const r = await runTool('blockdev', ['--rereadpt', disk]);
  if (r.code !== 0) throw new Error(`blockdev --rereadpt ${disk} failed (exit ${r.code}): ${r.stderr.trim()}; the new partitions are on the disk, the kernel sees them after a reboot`);
}
