/**
 * Growing a filesystem whose tools work only on a mounted filesystem (xfs_growfs, `btrfs filesystem
 * resize`): the partition is mounted on a fresh directory under the temp dir, grown to fill its
 * partition, and unmounted again (also when the growth failed), then the directory is removed.
 */
import { mkdtemp, readFile, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTool, type ToolResult } from '../lib/tool.js';

export type MountedGrowFs = 'xfs' | 'btrfs';

/** The command that grows each filesystem, given its mount point, to the size of its device. */
const GROW_COMMANDS: Readonly<Record<MountedGrowFs, (dir: string) => readonly string[]>> = {
  xfs: (dir) => ['xfs_growfs', dir],
  btrfs: (dir) => ['btrfs', 'filesystem', 'resize', 'max', dir],
};

/**
 * Mount options: a deployed xfs keeps the source's UUID, which the kernel refuses to mount twice; the
 * grow is no reason to refuse when another disk in the machine holds the same image.
 */
const MOUNT_OPTIONS: Readonly<Record<MountedGrowFs, readonly string[]>> = {
  xfs: ['-o', 'nouuid'],
  btrfs: [],
};

/** True for the filesystems this module grows (the ones that grow only while mounted). */
export function growsMounted(filesystem: string | null): filesystem is MountedGrowFs {
  return filesystem === 'xfs' || filesystem === 'btrfs';
}

/** What to run by hand when the growth failed, for the technician. */
export function growByHand(fs: MountedGrowFs): string {
  return `mount it and run ${GROW_COMMANDS[fs]('<mount point>').join(' ')}`;
}

function failure(what: string, r: ToolResult): string {
  const said = (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-3).join(' / ');
  return `${what} exited ${r.code}${said ? `: ${said}` : ''}`;
}

/**
 * The thin client loads filesystem drivers on demand: when the kernel does not list `fs` yet, modprobe
 * loads it, so a missing driver is reported as such rather than as mount's "unknown filesystem type".
 */
async function ensureDriver(fs: MountedGrowFs): Promise<void> {
  let known: string;
  try {
    known = await readFile('/proc/filesystems', 'utf8');
  } catch {
    return; // No /proc: mount itself says whether the kernel knows the filesystem.
  }
  if (known.split('\n').some((l) => l.trim().split(/\s+/).pop() === fs)) return;
  const r = await runTool('modprobe', [fs]);
  if (r.code !== 0) throw new Error(`the kernel has no ${fs} driver and ${failure(`modprobe ${fs}`, r)}`);
}

/**
 * Grows the `fs` filesystem on block device `dev` (not mounted anywhere) to the size of the device.
 * Throws an Error naming the step that failed (driver, mount, grow, umount); after a failed umount the
 * filesystem stays mounted on the directory the message names.
 */
export async function growMounted(dev: string, fs: MountedGrowFs): Promise<void> {
  await ensureDriver(fs);
  const dir = await mkdtemp(join(tmpdir(), `netclone-grow-${fs}-`));
  try {
    const mounted = await runTool('mount', ['-t', fs, ...MOUNT_OPTIONS[fs], dev, dir]);
    if (mounted.code !== 0) throw new Error(failure(`mount -t ${fs} ${dev} ${dir}`, mounted));
  } catch (err) {
    await rmdir(dir).catch(() => undefined);
    throw err;
  }
  const [tool, ...args] = GROW_COMMANDS[fs](dir);
  let growError: string | null = null;
  try {
    const r = await runTool(tool, args);
    if (r.code !== 0) growError = failure(`${tool} ${args.join(' ')}`, r);
  } catch (err) {
    growError = (err as Error).message;
  }
  const unmounted = await runTool('umount', [dir]);
  if (unmounted.code !== 0) {
    const umountError = `${failure(`umount ${dir}`, unmounted)}; ${dev} is still mounted there: unmount it by hand (umount ${dir}) before using the disk`;
    throw new Error(growError === null ? umountError : `${growError}; then ${umountError}`);
  }
  await rmdir(dir);
  if (growError !== null) throw new Error(growError);
}
