/**
 * Protection status: is each PC's backup recent enough? Pure over the database's hosts and
 * tasks, the schedules that cover each host, and a `now`, so the dashboard, the API, the
 * alerts and the tests all compute the same answer from the same data.
 *
 * A backup is a capture task that ended `done`; a failure is a capture that ended `failed` or a
 * scheduled run marked missed. A host is overdue when its newest good backup is older than its
 * schedules allow (the most frequent schedule decides), or when it has none at all and its
 * first scheduled run has passed (its window and the capture's time included). A host without a schedule is never overdue: nothing says
 * how fresh its backup should be.
 */
import type { HostRecord, TaskRecord } from './database.js';

/** What protection needs to know of one schedule that covers a host. */
export interface HostSchedule {
  /** The schedule's first run after `after`, or null when it will not run again. */
  nextRun(after: Date): Date | null;
  /** How old the newest good backup may get under this schedule before the host is overdue, in ms. */
  readonly overdueAfterMs: number;
  /** Runs due before this instant never happened: the schedule did not exist yet. */
  readonly createdAt: Date;
  /** How long after its due time a run may still be starting or capturing (its window and the capture); default 0. */
  readonly runGraceMs?: number;
}

/**
 * A scheduled run that ended without a task's own failure to show for it: missed (the PC never
 * booted within its window) or failed before its capture could be queued.
 */
export interface MissedRun {
  /** Default 'missed'. */
  readonly kind?: 'missed' | 'failed';
  readonly mac: string;
  readonly image: string;
  /** When the run was marked missed or failed. */
  readonly at: string;
  readonly reason: string;
}

export interface ProtectionInput {
  readonly hosts: readonly HostRecord[];
  readonly tasks: readonly TaskRecord[];
  /** The schedules that cover a host (its own and its group's); none: the host is not scheduled. */
  schedulesFor(mac: string): readonly HostSchedule[];
  readonly missed?: readonly MissedRun[];
}

export interface LastGoodBackup {
  readonly taskId: string;
  readonly image: string;
  readonly version: number | null;
  /** When the capture finished. */
  readonly at: string;
}

export interface LastFailure {
  /** `failed`: a capture task failed; `missed`: a scheduled run never started. */
  readonly kind: 'failed' | 'missed';
  readonly taskId: string | null;
  readonly image: string;
  readonly at: string;
  readonly reason: string;
}

export interface HostProtection {
  readonly mac: string;
  readonly name: string;
  readonly lastGood: LastGoodBackup | null;
  /** Seconds since the last good backup finished; null without one. */
  readonly ageSeconds: number | null;
  readonly scheduled: boolean;
  /** The earliest next run of the host's schedules. */
  readonly nextRun: string | null;
  /** How old the last good backup may get (the most frequent schedule's allowance); null when unscheduled. */
  readonly allowedAgeSeconds: number | null;
  readonly lastFailure: LastFailure | null;
  readonly overdue: boolean;
  /**
   * The instant the host became overdue: last good backup + allowance, or the first scheduled run
   * without any backup. It stays the same while nothing changes, so it names one overdue episode.
   */
  readonly overdueSince: string | null;
}

function finishedAt(t: TaskRecord): string {
  return t.finishedAt ?? t.updatedAt;
}

function newest<T>(items: readonly T[], at: (x: T) => string): T | null {
  let best: T | null = null;
  for (const x of items) if (best === null || at(x) > at(best)) best = x;
  return best;
}

/** One host's protection. */
export function hostProtection(host: Pick<HostRecord, 'mac' | 'name'>, input: Omit<ProtectionInput, 'hosts'>, now: Date): HostProtection {
  const captures = input.tasks.filter((t) => t.mac === host.mac && t.kind === 'capture');
  const good = newest(captures.filter((t) => t.state === 'done'), finishedAt);
  const lastGood: LastGoodBackup | null = good
    ? { taskId: good.id, image: good.image, version: good.result?.version ?? null, at: finishedAt(good) }
    : null;

  const failures: LastFailure[] = captures
    .filter((t) => t.state === 'failed')
    .map((t) => ({ kind: 'failed' as const, taskId: t.id, image: t.image, at: finishedAt(t), reason: t.reason ?? 'no reason recorded' }));
  for (const m of input.missed ?? []) {
    if (m.mac === host.mac) failures.push({ kind: m.kind ?? 'missed', taskId: null, image: m.image, at: m.at, reason: m.reason });
  }
  const lastFailure = newest(failures, (f) => f.at);

  const schedules = input.schedulesFor(host.mac);
  let nextRun: Date | null = null;
  let allowedMs: number | null = null;
  let firstRunOver: Date | null = null;
  for (const s of schedules) {
    const next = s.nextRun(now);
    if (next && (!nextRun || next < nextRun)) nextRun = next;
    if (allowedMs === null || s.overdueAfterMs < allowedMs) allowedMs = s.overdueAfterMs;
    const first = s.nextRun(s.createdAt);
    const over = first ? new Date(first.getTime() + (s.runGraceMs ?? 0)) : null;
    if (over && (!firstRunOver || over < firstRunOver)) firstRunOver = over;
  }

  let overdueSince: Date | null = null;
  if (allowedMs !== null) {
    if (lastGood) {
      const limit = new Date(Date.parse(lastGood.at) + allowedMs);
      if (now > limit) overdueSince = limit;
    } else if (firstRunOver && now > firstRunOver) {
      overdueSince = firstRunOver;
    }
  }

  return {
    mac: host.mac,
    name: host.name,
    lastGood,
    ageSeconds: lastGood ? Math.max(0, Math.floor((now.getTime() - Date.parse(lastGood.at)) / 1000)) : null,
    scheduled: schedules.length > 0,
    nextRun: nextRun ? nextRun.toISOString() : null,
    allowedAgeSeconds: allowedMs === null ? null : Math.floor(allowedMs / 1000),
    lastFailure,
    overdue: overdueSince !== null,
    overdueSince: overdueSince ? overdueSince.toISOString() : null,
  };
}

/**
 * Every host a technician cares about: registered ones, and any other that has a capture or a
 * schedule. Overdue hosts first, then the oldest backup first (no backup counts as oldest), then by name.
 */
export function protectionStatus(input: ProtectionInput, now: Date): HostProtection[] {
  const captured = new Set(input.tasks.filter((t) => t.kind === 'capture').map((t) => t.mac));
  const rows = input.hosts
    .filter((h) => h.registered || captured.has(h.mac) || input.schedulesFor(h.mac).length > 0)
    .map((h) => hostProtection(h, input, now));
  return rows.sort((a, b) =>
    Number(b.overdue) - Number(a.overdue)
    || (a.lastGood?.at ?? '').localeCompare(b.lastGood?.at ?? '')
    || a.name.localeCompare(b.name)
    || a.mac.localeCompare(b.mac));
}
