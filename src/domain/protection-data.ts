/**
 * Protection status from the database as it is kept: schedules (a host's own and its group's)
 * turned into what protection.ts needs, and missed scheduled runs into failures. Pure.
 */
import type { DbData, HostRecord, ScheduleRecord } from './database.js';
import { nextRun, overdueAfter, OVERDUE_GRACE_MS } from './schedule-time.js';
import { imageForHost } from './schedules.js';
import { protectionStatus, type HostProtection, type HostSchedule, type MissedRun } from './protection.js';

/** overdueAfter samples up to a year of runs: worth keeping per spec, since every dashboard view asks again. */
const allowanceCache = new Map<string, number>();

function allowanceMs(s: ScheduleRecord): number {
  const key = `${JSON.stringify(s.spec)}|${s.windowMinutes}`;
  let ms = allowanceCache.get(key);
  if (ms === undefined) {
    ms = overdueAfter(s.spec, s.windowMinutes);
    if (allowanceCache.size > 1000) allowanceCache.clear();
    allowanceCache.set(key, ms);
  }
  return ms;
}

function hostSchedule(s: ScheduleRecord): HostSchedule {
  return {
    createdAt: new Date(s.createdAt),
    overdueAfterMs: allowanceMs(s),
    runGraceMs: s.windowMinutes * 60_000 + OVERDUE_GRACE_MS,
    nextRun: (after) => {
      try {
        return nextRun(s.spec, after);
      } catch {
        // A spec the schedule commands refused could only come from a hand-edited file; it never runs.
        return null;
      }
    },
  };
}

/** The image a schedule captures a host into ("{host}" filled in); null when the schedule is gone. */
export function scheduledImage(schedule: ScheduleRecord | undefined, host: HostRecord | undefined, mac: string): string | null {
  return schedule ? imageForHost(schedule.image, 'group' in schedule.target, host, mac) : null;
}

export type ProtectionData = Pick<DbData, 'hosts' | 'tasks' | 'schedules' | 'scheduleRuns'>;

/** Each host's schedules: those naming its MAC and those naming its group. */
export function schedulesByHost(data: ProtectionData): (mac: string) => HostSchedule[] {
  const groupOf = new Map(data.hosts.map((h) => [h.mac, h.group ?? null]));
  return (mac) => data.schedules
    .filter((s) => ('mac' in s.target ? s.target.mac === mac : groupOf.get(mac) === s.target.group))
    .map(hostSchedule);
}

/** Scheduled runs that were missed, or failed without a task (its own failure counts already). */
export function missedRuns(data: ProtectionData): MissedRun[] {
  const byId = new Map(data.schedules.map((s) => [s.id, s]));
  const hosts = new Map(data.hosts.map((h) => [h.mac, h]));
  return data.scheduleRuns
    .filter((r) => r.state === 'missed' || (r.state === 'failed' && r.taskId === null))
    .map((r) => ({
      kind: r.state === 'missed' ? 'missed' as const : 'failed' as const,
      mac: r.mac, image: scheduledImage(byId.get(r.scheduleId), hosts.get(r.mac), r.mac) ?? '', at: r.endedAt ?? r.dueAt,
      reason: r.reason ?? (r.state === 'missed' ? 'the PC did not start the backup within its window' : 'the scheduled capture could not be queued'),
    }));
}

export function protectionOf(data: ProtectionData, now: Date): HostProtection[] {
  return protectionStatus({ hosts: data.hosts, tasks: data.tasks, schedulesFor: schedulesByHost(data), missed: missedRuns(data) }, now);
}
