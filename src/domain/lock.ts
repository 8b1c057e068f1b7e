/**
 * One process owns a data directory. The lock is a file created atomically (link) naming its
 * owner: PID, the kernel's start time of that PID and the boot it belongs to, and what the
 * owner is doing. A lock is stale when that exact process is gone — after kill -9 or power
 * loss the PID may already belong to another program (after a reboot, often a low PID that
 * systemd hands out again, even to the next netclone itself), so a live PID alone proves
 * nothing; the start time does.
 */
import { link, open, readFile, unlink, mkdir } from 'node:fs/promises';
import path from 'node:path';

/** The purpose `netclone serve` locks the directory with; CLI commands wait for such an owner's control socket. */
export const SERVER_PURPOSE = 'the server';

export interface LockOwner {
  readonly pid: number;
  /** What the owner said it locked the directory for ("the server", "this command"…); null in a lock written before owners said so. */
  readonly purpose: string | null;
}

export class LockError extends Error {
  constructor(
    message: string,
    readonly ownerPid: number | null,
    readonly owner: LockOwner | null = null,
  ) {
    super(message);
    this.name = 'LockError';
  }
}

export interface DataLock {
  readonly file: string;
  release(): Promise<void>;
}

/** What a lock file records. `start` and `boot` are null where /proc does not exist, and in old lock files. */
interface LockRecord {
  readonly pid: number;
  readonly start: string | null;
  readonly boot: string | null;
  readonly purpose: string | null;
}

function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readProc(file: string): Promise<string | null> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return null;
  }
}

/** Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot. Null when there is no such process or no /proc. */
export async function processStartTime(pid: number): Promise<string | null> {
  const stat = await readProc(`/proc/${pid}/stat`);
  if (stat === null) return null;
  // The command name (field 2) is in parentheses and may itself hold spaces or ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19] ?? null;
}

async function bootId(): Promise<string | null> {
  return (await readProc('/proc/sys/kernel/random/boot_id'))?.trim() ?? null;
}

async function ourRecord(purpose: string): Promise<LockRecord> {
  return { pid: process.pid, start: await processStartTime(process.pid), boot: await bootId(), purpose };
}

function parseRecord(text: string): LockRecord | null {
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) return { pid: Number(trimmed), start: null, boot: null, purpose: null };
  try {
    const j = JSON.parse(trimmed) as Partial<Record<keyof LockRecord, unknown>>;
    if (typeof j.pid !== 'number' || !Number.isInteger(j.pid) || j.pid <= 0) return null;
    const s = (v: unknown): string | null => (typeof v === 'string' ? v : null);
    return { pid: j.pid, start: s(j.start), boot: s(j.boot), purpose: s(j.purpose) };
  } catch {
    return null;
  }
}

/** True when the process the record names still runs (the same process, not a later one with its PID). */
async function holderAlive(rec: LockRecord): Promise<boolean> {
  if (!pidExists(rec.pid)) return false;
  const start = await processStartTime(rec.pid);
  if (start === null) return true; // no /proc: the PID is all there is to go by
  if (rec.start !== null) {
    if (rec.boot !== null && rec.boot !== (await bootId())) return false;
    return rec.start === start;
  }
  // A lock from before locks recorded start times: only a netclone process can hold it.
  const cmdline = await readProc(`/proc/${rec.pid}/cmdline`);
  return cmdline === null || cmdline.includes('netclone');
}

export function lockPath(dataDir: string): string {
  return path.join(dataDir, 'state', 'netclone.lock');
}

/** The live owner of the data directory's lock, or null when nobody (or only a dead process) holds it. */
export async function readLockOwner(dataDir: string): Promise<LockOwner | null> {
  let text: string;
  try {
    text = await readFile(lockPath(dataDir), 'utf8');
  } catch {
    return null;
  }
  const rec = parseRecord(text);
  if (rec === null || !(await holderAlive(rec))) return null;
  return { pid: rec.pid, purpose: rec.purpose };
}

let tmpSeq = 0;

export async function acquireLock(dataDir: string, purpose: string): Promise<DataLock> {
  const file = lockPath(dataDir);
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  // The lock appears whole or not at all (link() of a finished file), so nobody ever reads a
  // lock that exists but does not yet name its owner and mistakes it for a stale one.
  const tmp = `${file}.${process.pid}.${++tmpSeq}.tmp`;
  try {
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(`${JSON.stringify(await ourRecord(purpose))}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new Error(`could not write the lock file ${tmp}: ${(err as Error).message}`, { cause: err });
  }
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await link(tmp, file);
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
          const who = owner.pid === process.pid ? 'this process' : `process ${owner.pid}${owner.purpose ? ` (${owner.purpose})` : ''}`;
          throw new LockError(`${dataDir} is in use by ${who}; ${purpose} cannot open it until that process ends`, owner.pid, owner);
        }
        await unlink(file).catch(() => undefined);
      }
    }
    throw new LockError(`could not lock ${dataDir}: another process took ${file} at the same moment; try again`, null);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}
