import { describe, expect, it } from 'vitest';
import type { HostRecord, TaskRecord, TaskState } from '../../src/domain/database.js';
import { hostProtection, protectionStatus, type HostSchedule } from '../../src/domain/protection.js';
import { protectionOf } from '../../src/domain/protection-data.js';
import type { ScheduleRecord, ScheduleRunRecord } from '../../src/domain/database.js';

const DAY = 86_400_000;

function host(mac: string, name: string, registered = true): HostRecord {
  return {
    mac, name, ip: null, firmware: 'bios', arch: null, vendorClass: null, firstSeen: '2026-01-01T00:00:00.000Z', lastSeen: '2026-01-01T00:00:00.000Z',
    registered, hardware: null, assignedImage: null, localBoot: null, efiLoader: 'snponly.efi',
  };
}

let seq = 0;
function task(mac: string, state: TaskState, finishedAt: string, extra: Partial<TaskRecord> = {}): TaskRecord {
  seq++;
  return {
    id: `t${seq}`, kind: 'capture', mac, image: 'office', state, createdAt: finishedAt, updatedAt: finishedAt, startedAt: finishedAt, finishedAt,
    reason: state === 'failed' ? 'disk read error' : null, diskSerial: null, after: 'poweroff', transport: 'chunks', tokenHash: '', clientIp: null, disk: null,
    progress: { bytes: 0, total: 0, percent: 0, mbps: 0, etaSeconds: null }, result: state === 'done' ? { version: seq, digest: null, bytesOnWire: 0 } : null, log: [],
    ...extra,
  };
}

/** Daily at 02:00 UTC; a host may go 1 day + 6 hours without a good backup. */
function daily(createdAt: string): HostSchedule {
  return {
    createdAt: new Date(createdAt),
    overdueAfterMs: DAY + 6 * 3_600_000,
    nextRun(after) {
      const d = new Date(after);
      d.setUTCHours(2, 0, 0, 0);
      if (d <= after) d.setUTCDate(d.getUTCDate() + 1);
      return d;
    },
  };
}

const A = 'aa:aa:aa:aa:aa:01';
const B = 'aa:aa:aa:aa:aa:02';
const C = 'aa:aa:aa:aa:aa:03';

describe('protection status', () => {
  const now = new Date('2026-03-10T12:00:00.000Z');

  it('takes the newest done capture as the last good backup, with its image, version and age', () => {
    const older = task(A, 'done', '2026-03-08T02:30:00.000Z');
    const newer = task(A, 'done', '2026-03-10T02:30:00.000Z', { image: 'office-2' });
    const deploy = task(A, 'done', '2026-03-10T09:00:00.000Z', { kind: 'deploy' });
    const p = hostProtection(host(A, 'PC 1'), { tasks: [newer, older, deploy], schedulesFor: () => [daily('2026-01-01T00:00:00.000Z')] }, now);
    expect(p.lastGood).toEqual({ taskId: newer.id, image: 'office-2', version: newer.result?.version, at: '2026-03-10T02:30:00.000Z' });
    expect(p.ageSeconds).toBe(9.5 * 3600);
    expect(p.nextRun).toBe('2026-03-11T02:00:00.000Z');
    expect(p.allowedAgeSeconds).toBe(30 * 3600);
    expect(p.overdue).toBe(false);
    expect(p.overdueSince).toBeNull();
  });

  it('is overdue once the last good backup is older than the schedule allows, and names the instant it became so', () => {
    const t = task(A, 'done', '2026-03-09T02:30:00.000Z');
    const sched = [daily('2026-01-01T00:00:00.000Z')];
    const justIn = hostProtection(host(A, 'PC 1'), { tasks: [t], schedulesFor: () => sched }, new Date('2026-03-10T08:30:00.000Z'));
    expect(justIn.overdue).toBe(false);
    const late = hostProtection(host(A, 'PC 1'), { tasks: [t], schedulesFor: () => sched }, new Date('2026-03-10T08:30:01.000Z'));
    expect(late.overdue).toBe(true);
    expect(late.overdueSince).toBe('2026-03-10T08:30:00.000Z');
    // The same episode: later ticks name the same instant.
    expect(hostProtection(host(A, 'PC 1'), { tasks: [t], schedulesFor: () => sched }, now).overdueSince).toBe('2026-03-10T08:30:00.000Z');
  });

  it('the most frequent of several schedules decides the allowance and the earliest next run wins', () => {
    const weekly: HostSchedule = { createdAt: new Date('2026-01-01T00:00:00.000Z'), overdueAfterMs: 8 * DAY, nextRun: () => new Date('2026-03-15T03:00:00.000Z') };
    const t = task(A, 'done', '2026-03-08T02:30:00.000Z');
    const p = hostProtection(host(A, 'PC 1'), { tasks: [t], schedulesFor: () => [weekly, daily('2026-01-01T00:00:00.000Z')] }, now);
    expect(p.allowedAgeSeconds).toBe(30 * 3600);
    expect(p.nextRun).toBe('2026-03-11T02:00:00.000Z');
    expect(p.overdue).toBe(true);
  });

  it('a scheduled host without any good backup is overdue once its first run has passed, not before', () => {
    const created = '2026-03-10T01:00:00.000Z';
    const before = hostProtection(host(A, 'PC 1'), { tasks: [], schedulesFor: () => [daily(created)] }, new Date('2026-03-10T01:59:59.000Z'));
    expect(before.overdue).toBe(false);
    expect(before.lastGood).toBeNull();
    expect(before.ageSeconds).toBeNull();
    const after = hostProtection(host(A, 'PC 1'), { tasks: [], schedulesFor: () => [daily(created)] }, new Date('2026-03-10T02:00:01.000Z'));
    expect(after.overdue).toBe(true);
    expect(after.overdueSince).toBe('2026-03-10T02:00:00.000Z');
  });

  it('a first run has its grace (window and capture time) before a host without a backup counts as overdue', () => {
    const s = { ...daily('2026-03-10T01:00:00.000Z'), runGraceMs: 3 * 3_600_000 };
    expect(hostProtection(host(A, 'PC 1'), { tasks: [], schedulesFor: () => [s] }, new Date('2026-03-10T05:00:00.000Z')).overdue).toBe(false);
    const late = hostProtection(host(A, 'PC 1'), { tasks: [], schedulesFor: () => [s] }, new Date('2026-03-10T05:00:01.000Z'));
    expect(late.overdueSince).toBe('2026-03-10T05:00:00.000Z');
  });

  it('a host without a schedule is never overdue, however old its backup', () => {
    const p = hostProtection(host(A, 'PC 1'), { tasks: [task(A, 'done', '2025-01-01T00:00:00.000Z')], schedulesFor: () => [] }, now);
    expect(p.scheduled).toBe(false);
    expect(p.overdue).toBe(false);
    expect(p.nextRun).toBeNull();
    expect(p.allowedAgeSeconds).toBeNull();
  });

  it('the last failure is the newest failed capture or missed run, with its reason; cancelled tasks and failed deploys are no backup failures', () => {
    const failed = task(A, 'failed', '2026-03-09T02:10:00.000Z', { reason: 'the PC lost the network' });
    const cancelled = task(A, 'cancelled', '2026-03-10T03:00:00.000Z');
    const failedDeploy = task(A, 'failed', '2026-03-10T04:00:00.000Z', { kind: 'deploy', reason: 'disk too small' });
    const input = { tasks: [failed, cancelled, failedDeploy], schedulesFor: () => [] };
    expect(hostProtection(host(A, 'PC 1'), input, now).lastFailure).toEqual({ kind: 'failed', taskId: failed.id, image: 'office', at: failed.finishedAt, reason: 'the PC lost the network' });
    const missed = { mac: A, image: 'office', at: '2026-03-10T03:00:00.000Z', reason: 'the PC did not boot within 1 h' };
    const other = { mac: B, image: 'office', at: '2026-03-10T05:00:00.000Z', reason: 'not this host' };
    expect(hostProtection(host(A, 'PC 1'), { ...input, missed: [missed, other] }, now).lastFailure).toEqual({ kind: 'missed', taskId: null, image: 'office', at: missed.at, reason: missed.reason });
  });

  it('lists registered hosts and hosts with captures or schedules, overdue first, then the oldest backup', () => {
    const hosts = [host(A, 'fresh'), host(B, 'stale'), host(C, 'seen only', false), host('aa:aa:aa:aa:aa:04', 'never'), host('aa:aa:aa:aa:aa:05', 'booted, captured', false)];
    const tasks = [task(A, 'done', '2026-03-10T02:30:00.000Z'), task(B, 'done', '2026-03-01T02:30:00.000Z'), task('aa:aa:aa:aa:aa:05', 'done', '2026-03-05T00:00:00.000Z')];
    const rows = protectionStatus({ hosts, tasks, schedulesFor: (mac) => (mac === A || mac === B ? [daily('2026-01-01T00:00:00.000Z')] : []) }, now);
    expect(rows.map((r) => [r.name, r.overdue])).toEqual([['stale', true], ['never', false], ['booted, captured', false], ['fresh', false]]);
  });

  it('from the database: a host\'s own and its group\'s schedules count, and missed runs or runs failed without a task are failures', () => {
    const schedule = (id: string, target: ScheduleRecord['target'], time: string): ScheduleRecord => ({
      id, target, image: 'office', spec: { kind: 'daily', time }, wake: false, after: 'poweroff', windowMinutes: 60, createdAt: '2026-01-01T00:00:00.000Z', lastRunAt: null,
    });
    const run = (id: string, mac: string, state: ScheduleRunRecord['state'], endedAt: string, taskId: string | null = null): ScheduleRunRecord => ({
      id, scheduleId: 'own', mac, dueAt: endedAt, state, taskId, reason: `${state} ${id}`, endedAt,
    });
    const hosts = [{ ...host(A, 'own'), group: null }, { ...host(B, 'in group'), group: 'Lab 2' }, { ...host(C, 'other group'), group: 'Front office' }];
    const data = {
      hosts,
      tasks: [task(A, 'done', '2026-03-10T02:30:00.000Z'), task(B, 'done', '2026-03-10T02:30:00.000Z'), task(C, 'done', '2026-03-10T02:30:00.000Z')],
      schedules: [schedule('own', { mac: A }, '02:00'), schedule('lab', { group: 'Lab 2' }, '03:00')],
      scheduleRuns: [
        run('r1', A, 'missed', '2026-03-09T03:00:00.000Z'),
        run('r2', B, 'failed', '2026-03-09T03:00:00.000Z'),
        run('r3', C, 'failed', '2026-03-09T03:00:00.000Z', 'task-of-r3'),
      ],
    };
    const rows = new Map(protectionOf(data, now).map((r) => [r.mac, r]));
    expect(rows.get(A)).toMatchObject({ scheduled: true, lastFailure: { kind: 'missed', reason: 'missed r1', image: 'office' } });
    // r2 belongs to the host's own schedule "own" in this table; a group schedule's image names the host.
    expect(rows.get(B)).toMatchObject({ scheduled: true, lastFailure: { kind: 'failed', reason: 'failed r2', taskId: null, image: 'office' } });
    const groupRun = { ...run('r4', B, 'missed', '2026-03-09T04:00:00.000Z'), scheduleId: 'lab' };
    expect(protectionOf({ ...data, scheduleRuns: [groupRun] }, now).find((r) => r.mac === B)?.lastFailure?.image).toBe('office-in-group');
    // The run's task is a failed task of its own (none here): the run adds nothing.
    expect(rows.get(C)).toMatchObject({ scheduled: false, lastFailure: null, nextRun: null });
    expect(new Date(rows.get(A)!.nextRun!).getHours()).toBe(2);
    expect(new Date(rows.get(B)!.nextRun!).getHours()).toBe(3);
  });
});
