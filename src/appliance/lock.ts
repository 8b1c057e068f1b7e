/**
 * One process owns a data directory. The lock is a file created with O_EXCL holding
 * the owner's PID; a lock whose PID is gone (kill -9, power loss) is stale and taken over.
 */
import { open, readFile, unlink, mkdir } from 'node:fs/promises';
import path from 'node:path';

export class LockError extends Error {
  constructor(message: string, readonly ownerPid: number | null) {
    super(message);
    this.name = 'LockError';
  }
}

export interface DataLock {
  readonly file: string;
  release(): Promise<void>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function lockPath(dataDir: string): string {
  return path.join(dataDir, 'state', 'netclone.lock');
}

export async function readLockOwner(dataDir: string): Promise<number | null> {
  try {
    const pid = Number((await readFile(lockPath(dataDir), 'utf8')).trim());
    return Number.isInteger(pid) && pid > 0 && alive(pid) ? pid : null;
  } catch {
    return null;
  }
}

export async function acquireLock(dataDir: string, purpose: string): Promise<DataLock> {
  const file = lockPath(dataDir);
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(file, 'wx', 0o600);
      await fh.writeFile(`${process.pid}\n`);
      await fh.sync();
      await fh.close();
      let released = false;
      return {
        file,
        release: async () => {
          if (released) return;
          released = true;
          await unlink(file).catch(() => undefined);
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = await readLockOwner(dataDir);
      if (owner !== null) {
        throw new LockError(
          `${dataDir} is in use by ${owner === process.pid ? 'this process' : `process ${owner}`} (${purpose} needs it alone); stop that process or use its control socket`,
          owner,
        );
      }
      await unlink(file).catch(() => undefined);
    }
  }
  throw new LockError(`could not lock ${dataDir}; remove ${file} if no netclone runs`, null);
}
