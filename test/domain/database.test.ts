import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { databasePath, forgetDatabase, migrate, openDatabase, SCHEMA_VERSION } from '../../src/domain/database.js';
import { EventLog } from '../../src/domain/events.js';
import { HostService } from '../../src/domain/hosts.js';
import { TaskService, TaskError } from '../../src/domain/tasks.js';
import { nullLogger } from '../../src/lib/log.js';
import { acquireLock, LockError } from '../../src/domain/lock.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-db-'));
});
afterEach(async () => {
  forgetDatabase(dir);
  await rm(dir, { recursive: true, force: true });
});

describe('database', () => {
  it('writes a real file (not memory, whatever NODE_ENV says) and hands out one instance per file', async () => {
    const a = await openDatabase(dir);
    const b = await openDatabase(dir);
    expect(a).toBe(b);
    a.data.settings.sessionSecret = 'x';
    await a.write();
    const onDisk = JSON.parse(await readFile(databasePath(dir), 'utf8'));
    expect(onDisk.settings.sessionSecret).toBe('x');
    expect(onDisk.schemaVersion).toBe(SCHEMA_VERSION);
  });

  it('coalesces concurrent writes and keeps the last state', async () => {
    const db = await openDatabase(dir);
    const events = new EventLog(db, nullLogger());
    const hosts = new HostService(db, events);
    await Promise.all(Array.from({ length: 50 }, (_, i) => hosts.add(`52:54:00:00:00:${i.toString(16).padStart(2, '0')}`)));
    forgetDatabase(dir);
    const again = JSON.parse(await readFile(databasePath(dir), 'utf8'));
    expect(again.hosts).toHaveLength(50);
  });

  it('migrates an unversioned file and refuses a newer or damaged one', async () => {
    expect(migrate({ hosts: [] }).tasks).toEqual([]);
    expect(() => migrate({ schemaVersion: SCHEMA_VERSION + 1 })).toThrow(/newer/);
    expect(() => migrate([])).toThrow(/not an object/);
    expect(() => migrate({ schemaVersion: 1, hosts: {}, tasks: [], events: [], users: [], apiTokens: [] })).toThrow(/hosts/);
    await mkdir(path.dirname(databasePath(dir)), { recursive: true });
    await writeFile(databasePath(dir), '{ not json');
    await expect(openDatabase(dir)).rejects.toThrow(/not valid JSON/);
  });

  it('locks a data directory against a second owner and takes over a stale lock', async () => {
    const lock = await acquireLock(dir, 'test');
    await expect(acquireLock(dir, 'second')).rejects.toBeInstanceOf(LockError);
    await lock.release();
    await writeFile(path.join(dir, 'state', 'netclone.lock'), '999999999\n');
    const again = await acquireLock(dir, 'after crash');
    await again.release();
  });
});

describe('task lifecycle', () => {
  it('walks queued → booting → running → verifying → done, with one-time tokens', async () => {
    const db = await openDatabase(dir);
    const events = new EventLog(db, nullLogger());
    const tasks = new TaskService(db, events);
    const t = await tasks.create({ kind: 'deploy', mac: '52-54-00-AA-BB-CC', image: 'win11' });
    expect(t.mac).toBe('52:54:00:aa:bb:cc');
    await expect(tasks.create({ kind: 'capture', mac: '52:54:00:aa:bb:cc', image: 'x' })).rejects.toBeInstanceOf(TaskError);
    const token1 = await tasks.beginBoot(t, '10.0.0.5');
    const token2 = await tasks.beginBoot(t, '10.0.0.5');
    expect(tasks.byToken(token1)).toBeUndefined();
    expect(tasks.byToken(token2)).toBe(t);
    await tasks.markRunning(t, { name: 'sda', size: 100, logicalSectorSize: 512, serial: 's' }, '10.0.0.5', 1000);
    tasks.progress(t, 500);
    expect(t.progress.percent).toBe(50);
    await tasks.markVerifying(t, 'checking');
    await tasks.succeed(t, { version: 1, digest: 'd', bytesOnWire: 1000 }, 'ok');
    expect(t.state).toBe('done');
    expect(tasks.byToken(token2)).toBeUndefined();
    await expect(tasks.cancel(t.id)).rejects.toThrow(/already ended/);
  });

  it('marks tasks that were transferring when the server died as failed', async () => {
    const db = await openDatabase(dir);
    const tasks = new TaskService(db, new EventLog(db, nullLogger()));
    const t = await tasks.create({ kind: 'capture', mac: '52:54:00:aa:bb:cd', image: 'x' });
    await tasks.beginBoot(t, '10.0.0.5');
    await tasks.markRunning(t, { name: 'sda', size: 100, logicalSectorSize: 512, serial: '' }, '10.0.0.5', 100);
    expect(await tasks.failInterrupted()).toBe(1);
    expect(t.state).toBe('failed');
    expect(t.reason).toMatch(/restarted/);
  });
});
