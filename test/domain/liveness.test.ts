/**
 * Task liveness and the bounds on what a client can make the task record (and the database) grow by.
 * The clock is injected: "two minutes of silence" is a number here, not a wait.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { forgetDatabase, openDatabase, type Database, type TaskRecord } from '../../src/domain/database.js';
import { EventLog } from '../../src/domain/events.js';
import { MAX_TASK_LOG_ENTRIES, MAX_TASK_MESSAGE_CHARS, TaskService } from '../../src/domain/tasks.js';
import { nullLogger } from '../../src/lib/log.js';
import { ConfigError, resolveConfig } from '../../src/domain/config.js';
import { readFileSync } from 'node:fs';

let dir: string;
let db: Database;
let clock: number;
let tasks: TaskService;
const SEC = 1000;
const disk = { name: 'sda', size: 1000, logicalSectorSize: 512, serial: '' };

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-live-'));
  db = await openDatabase(dir);
  clock = Date.parse('2026-01-01T00:00:00Z');
  tasks = new TaskService(db, new EventLog(db, nullLogger()), { now: () => clock, liveness: { silenceSeconds: 120, examineSeconds: 600 } });
});
afterEach(async () => {
  vi.useRealTimers();
  forgetDatabase(dir);
  await rm(dir, { recursive: true, force: true });
});

async function running(kind: 'capture' | 'deploy', mac = '52:54:00:00:00:01'): Promise<TaskRecord> {
  const t = await tasks.create({ kind, mac, image: 'img' });
  await tasks.beginBoot(t, '10.0.0.5');
  tasks.heard(t);
  await tasks.markRunning(t, disk, '10.0.0.5', 1000);
  return t;
}

describe('task liveness', () => {
  it('fails a running task whose client is silent for the configured time, and frees the PC for a new task', async () => {
    const t = await running('deploy');
    tasks.progress(t, 780);
    const changed: string[] = [];
    tasks.on('changed', (task: TaskRecord) => changed.push(task.state));
    clock += 119 * SEC;
    expect(await tasks.checkLiveness()).toEqual([]);
    expect(t.state).toBe('running');
    clock += 2 * SEC;
    expect(await tasks.checkLiveness()).toEqual([t]);
    expect(t.state).toBe('failed');
    expect(t.reason).toMatch(/the PC stopped responding: no word from its imaging client for 121 s during the transfer/);
    // The 'changed' event is what revokes the task's NBD grants (TransferService listens to it).
    expect(changed).toEqual(['failed']);
    expect(tasks.activeFor(t.mac)).toBeUndefined();
    const next = await tasks.create({ kind: 'deploy', mac: t.mac, image: 'img' });
    expect(next.state).toBe('queued');
  });

  it('keeps a task alive while its client keeps talking, through the deploy read-back', async () => {
    const t = await running('deploy');
    for (let i = 0; i < 60; i++) {
      clock += 5 * SEC;
      tasks.progress(t, i * 10);
      expect(await tasks.checkLiveness()).toEqual([]);
    }
    await tasks.markVerifying(t, 'reading back');
    for (let i = 0; i < 120; i++) {
      clock += 5 * SEC;
      tasks.heard(t);
      expect(await tasks.checkLiveness()).toEqual([]);
    }
    expect(t.state).toBe('verifying');
    clock += 121 * SEC;
    expect(await tasks.checkLiveness()).toEqual([t]);
    expect(t.reason).toMatch(/while it read the disk back/);
  });

  it('gives a client that examines the disks the longer limit, and never fails a PC that has not reached the client', async () => {
    const waiting = await tasks.create({ kind: 'capture', mac: '52:54:00:00:00:02', image: 'a' });
    const booted = await tasks.create({ kind: 'capture', mac: '52:54:00:00:00:03', image: 'b' });
    await tasks.beginBoot(booted, '10.0.0.6');
    const examining = await tasks.create({ kind: 'capture', mac: '52:54:00:00:00:04', image: 'c' });
    await tasks.beginBoot(examining, '10.0.0.7');
    tasks.heard(examining);
    clock += 599 * SEC;
    expect(await tasks.checkLiveness()).toEqual([]);
    clock += 2 * SEC;
    expect(await tasks.checkLiveness()).toEqual([examining]);
    expect(examining.reason).toMatch(/while it examined the disks/);
    clock += 24 * 3600 * SEC;
    expect(await tasks.checkLiveness()).toEqual([]);
    expect(waiting.state).toBe('queued');
    expect(booted.state).toBe('booting');
  });

  it('leaves a capture that is being committed to the server (its commit wait bounds it)', async () => {
    const t = await running('capture');
    await tasks.markVerifying(t, 'committing the captured image');
    clock += 3600 * SEC;
    expect(await tasks.checkLiveness()).toEqual([]);
    expect(t.state).toBe('verifying');
  });

  it('checks on its own on a timer once a client is watched', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const own = new TaskService(db, new EventLog(db, nullLogger()), { now: () => clock, livenessCheckMs: 1000, liveness: { silenceSeconds: 120, examineSeconds: 600 } });
    const t = await own.create({ kind: 'deploy', mac: '52:54:00:00:00:09', image: 'img' });
    await own.beginBoot(t, '10.0.0.9');
    await own.markRunning(t, disk, '10.0.0.9', 1000);
    const failed = new Promise<TaskRecord>((resolve) => own.on('changed', (task: TaskRecord) => task.state === 'failed' && resolve(task)));
    clock += 121 * SEC;
    await vi.advanceTimersByTimeAsync(1000);
    expect((await failed).id).toBe(t.id);
  });

  it('runs no check and no save after its owner stopped it (the server is closing)', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'setTimeout', 'clearTimeout'] });
    const own = new TaskService(db, new EventLog(db, nullLogger()), { now: () => clock, livenessCheckMs: 1000 });
    const t = await own.create({ kind: 'deploy', mac: '52:54:00:00:00:0a', image: 'img' });
    await own.beginBoot(t, '10.0.0.10');
    await own.markRunning(t, disk, '10.0.0.10', 1000);
    own.progress(t, 10);
    const write = vi.spyOn(db, 'write');
    own.stopTimers();
    clock += 3600 * SEC;
    await vi.advanceTimersByTimeAsync(60_000);
    expect(t.state).toBe('running');
    expect(write).toHaveBeenCalledTimes(0);
    write.mockRestore();
  });
});

describe('task log bounds', () => {
  it('keeps the newest entries only and truncates long messages', async () => {
    const t = await running('capture');
    for (let i = 0; i < 1000; i++) await tasks.note(t, `message ${i} ${'x'.repeat(5000)}`);
    expect(t.log.length).toBe(MAX_TASK_LOG_ENTRIES);
    expect(t.log.every((e) => e.message.length <= MAX_TASK_MESSAGE_CHARS)).toBe(true);
    expect(t.log[t.log.length - 1].message.startsWith('message 999 ')).toBe(true);
    await tasks.fail(t, `client says ${'y'.repeat(10_000)}`);
    expect(t.reason!.length).toBeLessThanOrEqual(MAX_TASK_MESSAGE_CHARS);
    expect(t.log[t.log.length - 1].message.length).toBeLessThanOrEqual(MAX_TASK_MESSAGE_CHARS);
  });

  it('saves progress and notes with one coalesced write, not one database write per call', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const t = await running('capture');
    const write = vi.spyOn(db, 'write');
    for (let i = 0; i < 200; i++) {
      tasks.progress(t, i);
      await tasks.note(t, `step ${i}`);
    }
    expect(write).toHaveBeenCalledTimes(0);
    await vi.advanceTimersByTimeAsync(2000);
    expect(write).toHaveBeenCalledTimes(1);
    await write.mock.results[0].value;
    write.mockRestore();
    forgetDatabase(dir);
    const reread = await openDatabase(dir);
    expect(reread.data.tasks.find((x) => x.id === t.id)?.log.at(-1)?.message).toBe('step 199');
  });
});

describe('liveness configuration', () => {
  it('defaults to 2 min (10 min while examining), takes durations, refuses nonsense, and the example documents both keys', () => {
    expect(resolveConfig({})).toMatchObject({ clientTimeoutSeconds: 120, clientExamineTimeoutSeconds: 600 });
    expect(resolveConfig({ 'client-timeout': '5m', 'client-examine-timeout': '1h' })).toMatchObject({ clientTimeoutSeconds: 300, clientExamineTimeoutSeconds: 3600 });
    expect(() => resolveConfig({ 'client-timeout': '5s' })).toThrow(ConfigError);
    expect(() => resolveConfig({ 'client-timeout': '20m' })).toThrow(/client-examine-timeout.*shorter than client-timeout/);
    const example = readFileSync(path.join(import.meta.dirname, '..', '..', 'systemd', 'config.example'), 'utf8');
    expect(example).toMatch(/^# client-timeout = 2m$/m);
    expect(example).toMatch(/^# client-examine-timeout = 10m$/m);
  });
});
