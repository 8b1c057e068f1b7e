/**
 * The data directory's lock names exactly one process. A lock left by a netclone that died
 * (kill -9, power loss) must not stop the next start, even when its PID now belongs to some
 * other live program; a lock held by a running netclone must.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { acquireLock, lockPath, LockError, processStartTime, readLockOwner, SERVER_PURPOSE } from '../../src/domain/lock.js';

let dir: string;
const children: ChildProcess[] = [];

/** A live process that is not netclone (or, with `argv0Hint`, one whose command line says netclone). */
async function liveProcess(extraArg?: string): Promise<number> {
  const p = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', ...(extraArg ? [extraArg] : [])], { stdio: 'ignore' });
  children.push(p);
  await new Promise<void>((resolve, reject) => {
    p.once('spawn', resolve);
    p.once('error', reject);
  });
  return p.pid as number;
}

async function writeLock(content: string): Promise<void> {
  await mkdir(path.dirname(lockPath(dir)), { recursive: true });
  await writeFile(lockPath(dir), content);
}

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-lock-'));
});
afterEach(async () => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

describe('data directory lock', () => {
  it('records the owner (PID, start time, purpose) and refuses a second owner while it lives', async () => {
    const lock = await acquireLock(dir, SERVER_PURPOSE);
    const rec = JSON.parse(await readFile(lockPath(dir), 'utf8')) as { pid: number; start: string; purpose: string };
    expect(rec.pid).toBe(process.pid);
    expect(rec.start).toBe(await processStartTime(process.pid));
    expect(rec.purpose).toBe(SERVER_PURPOSE);
    expect(await readLockOwner(dir)).toEqual({ pid: process.pid, purpose: SERVER_PURPOSE });
    const second = await acquireLock(dir, 'netclone image list').catch((e: unknown) => e);
    expect(second).toBeInstanceOf(LockError);
    expect((second as LockError).owner).toEqual({ pid: process.pid, purpose: SERVER_PURPOSE });
    expect((second as LockError).message).toMatch(/is in use by this process; netclone image list cannot open it until that process ends/);
    await lock.release();
    expect(await readLockOwner(dir)).toBeNull();
  });

  it('takes over an old-style lock (PID only) whose PID now belongs to a live program that is not netclone', async () => {
    const pid = await liveProcess();
    await writeLock(`${pid}\n`);
    expect(await readLockOwner(dir)).toBeNull();
    const lock = await acquireLock(dir, SERVER_PURPOSE);
    expect((JSON.parse(await readFile(lockPath(dir), 'utf8')) as { pid: number }).pid).toBe(process.pid);
    await lock.release();
  });

  it('still honours an old-style lock held by a live netclone', async () => {
    const pid = await liveProcess('netclone');
    await writeLock(`${pid}\n`);
    expect(await readLockOwner(dir)).toEqual({ pid, purpose: null });
    await expect(acquireLock(dir, SERVER_PURPOSE)).rejects.toThrow(new RegExp(`in use by process ${pid}`));
  });

  it('takes over a lock whose PID was reused by another process (start time differs), even our own PID', async () => {
    const pid = await liveProcess('netclone');
    const start = await processStartTime(pid);
    expect(start).not.toBeNull();
    // The same PID, started at another time: the netclone that wrote this lock is gone.
    await writeLock(JSON.stringify({ pid, start: String(Number(start) + 1), boot: null, purpose: SERVER_PURPOSE }));
    expect(await readLockOwner(dir)).toBeNull();
    // After a reboot the new netclone can get the PID the old one had: that must not read as "this process".
    await writeLock(JSON.stringify({ pid: process.pid, start: '1', boot: 'another-boot', purpose: SERVER_PURPOSE }));
    const lock = await acquireLock(dir, SERVER_PURPOSE);
    await lock.release();
  });

  it('takes over a lock naming a process that is gone', async () => {
    await writeLock('999999999\n');
    const lock = await acquireLock(dir, 'after crash');
    await lock.release();
  });
});
