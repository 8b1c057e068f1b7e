/**
 * Runs the backup schedules (issue 13). At each due time it queues a capture for every host of
 * the schedule through the commands (so validation and authorisation apply as for a person), wakes
 * the PCs if asked, and follows each run to its end:
 *
 *   pending → running → done | failed          (the task's own outcome)
 *   pending → missed                           (the PC did not start within the window, the PC
 *                                               was busy, or the server was down at the due time)
 *
 * Time comes from an injected clock, so tests drive it; nothing here sleeps on the wall clock.
 *
 * Never twice: a schedule's lastRunAt (the due time it last acted on) and the run records
 * (one per schedule, host and due time) are saved before any task is queued. After a restart, a
 * due time the server slept through is run if its window is still open, else marked missed.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Actor, Commands } from './commands.js';
import type { Database, HostRecord, ScheduleRecord, ScheduleRunRecord, ScheduleRunState, TaskRecord } from './database.js';
import type { EventLog } from './events.js';
import type { HostService } from './hosts.js';
import type { TaskService } from './tasks.js';
import { DEFAULT_WINDOW_MINUTES, describeSpec, nextRun, previousRun } from './schedule-time.js';
import { describeTarget, hostsInGroup, imageForHost, pruneRuns } from './schedules.js';
import { WAKE_REPEAT, wakeRepeatedly, type WakeSender } from '../lib/wake-on-lan.js';
import type { Logger } from '../lib/log.js';

export interface TimerHandle {
  cancel(): void;
}

/** Where the scheduler gets the time and its wake-ups from; tests pass one they move by hand. */
export interface SchedulerClock {
  now(): Date;
  setTimer(ms: number, fn: () => void): TimerHandle;
}

export const realClock: SchedulerClock = {
  now: () => new Date(),
  setTimer: (ms, fn) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

export interface SchedulerDeps {
  readonly db: Database;
  readonly commands: Commands;
  readonly tasks: TaskService;
  readonly hosts: HostService;
  readonly events: EventLog;
  readonly logger: Logger;
  readonly clock?: SchedulerClock;
  /** Sends one magic packet; absent: schedules with --wake queue their task and say the PC was not woken. */
  readonly wake?: WakeSender;
  readonly wakeRepeat?: { readonly count: number; readonly intervalMs: number };
  /**
   * The longest the scheduler waits before looking again, even with nothing due: a changed
   * system clock or time zone is noticed within this time.
   */
  readonly maxSleepMs?: number;
}

const ENDED: readonly ScheduleRunState[] = ['done', 'failed', 'missed'];

export function runEnded(run: ScheduleRunRecord): boolean {
  return ENDED.includes(run.state);
}

function localTime(iso: string): string {
  const d = new Date(iso);
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Emits 'run' with the run record each time a run ends (done, failed or missed); onRun is the typed way to listen. */
export class Scheduler extends EventEmitter {
  private readonly clock: SchedulerClock;
  private readonly maxSleepMs: number;
  private timer: TimerHandle | null = null;
  private started = false;
  private stopped = false;
  /** Ticks run one at a time: a timer and a schedule change arriving together must not both start a run. */
  private queue: Promise<void> = Promise.resolve();
  /** Tasks this scheduler is cancelling because their window ended (their 'cancelled' is a miss, not a failure). */
  private readonly cancelling = new Set<string>();
  private readonly onTaskChanged = (task: TaskRecord): void => {
    if (this.stopped) return;
    this.serialize(() => this.followTask(task));
  };

  constructor(private readonly deps: SchedulerDeps) {
    super();
    this.clock = deps.clock ?? realClock;
    this.maxSleepMs = deps.maxSleepMs ?? 60 * 60 * 1000;
  }

  onRun(listener: (run: ScheduleRunRecord) => void): void {
    this.on('run', listener);
  }

  offRun(listener: (run: ScheduleRunRecord) => void): void {
    this.off('run', listener);
  }

  /** Catch up on what happened while the server was down, then run schedules as they come due. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.deps.tasks.on('changed', this.onTaskChanged);
    this.deps.commands.onSchedulesChanged(() => {
      if (!this.stopped) this.serialize(() => this.tick());
    });
    this.serialize(() => this.recover());
    this.serialize(() => this.tick());
    await this.idle();
  }

  stop(): void {
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
    this.deps.tasks.off('changed', this.onTaskChanged);
  }

  /** Resolves when the work queued so far is done (tests wait on it after moving the clock). */
  idle(): Promise<void> {
    return this.queue;
  }

  private serialize(work: () => Promise<void>): void {
    this.queue = this.queue.then(work).catch((err: unknown) => {
      this.deps.logger.error({ err }, `the scheduler hit an error: ${message(err)}; it carries on with the next due time`);
    });
  }

  /** Runs whose task ended (or never got one) while no scheduler was watching. */
  private async recover(): Promise<void> {
    for (const run of this.deps.db.data.scheduleRuns) {
      if (runEnded(run)) continue;
      if (run.taskId === null) {
        await this.endRun(run, 'missed', 'the server stopped before this run queued its capture');
        continue;
      }
      const task = this.deps.tasks.get(run.taskId);
      if (!task) await this.endRun(run, 'failed', `its task ${run.taskId} is gone from the database`);
      else await this.followTask(task);
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const now = this.clock.now();
    for (const schedule of [...this.deps.db.data.schedules]) {
      try {
        await this.checkDue(schedule, now);
      } catch (err) {
        this.deps.logger.error({ err, schedule: schedule.id }, `schedule ${schedule.id} could not run: ${message(err)}`);
      }
    }
    await this.checkWindows(now);
    this.arm();
  }

  private async checkDue(schedule: ScheduleRecord, now: Date): Promise<void> {
    const due = previousRun(schedule.spec, now);
    const floor = Math.max(Date.parse(schedule.createdAt), schedule.lastRunAt ? Date.parse(schedule.lastRunAt) : -Infinity);
    if (due.getTime() <= floor) return;
    const windowEnd = due.getTime() + schedule.windowMinutes * 60_000;
    if (now.getTime() < windowEnd) {
      await this.runSchedule(schedule, due);
      return;
    }
    // The server was down (or asleep) through the whole window: the latest due time is missed,
    // and any earlier ones it slept through are counted in the reason rather than run.
    let earlier = 0;
    for (let t = previousRun(schedule.spec, new Date(due.getTime() - 1)); t.getTime() > floor && earlier < 1000; t = previousRun(schedule.spec, new Date(t.getTime() - 1))) earlier += 1;
    const more = earlier > 0 ? ` (and ${earlier} earlier run${earlier === 1 ? '' : 's'} before it)` : '';
    const reason = `the server was not running between ${localTime(due.toISOString())} and the end of the ${schedule.windowMinutes}-minute window${more}; start it and keep it running for scheduled backups`;
    await this.runSchedule(schedule, due, reason);
  }

  /** Hosts of a schedule right now: its one host, or the group's hosts at the time it runs. */
  private targets(schedule: ScheduleRecord): Array<{ mac: string; host: HostRecord | undefined }> {
    if ('mac' in schedule.target) return [{ mac: schedule.target.mac, host: this.deps.hosts.get(schedule.target.mac) }];
    return hostsInGroup(this.deps.hosts.list(), schedule.target.group).map((h) => ({ mac: h.mac, host: h }));
  }

  /** Make (once) the runs of one due time and start them, or mark them missed with `missedReason`. */
  private async runSchedule(schedule: ScheduleRecord, due: Date, missedReason?: string): Promise<void> {
    const dueAt = due.toISOString();
    schedule.lastRunAt = dueAt;
    const targets = this.targets(schedule);
    const fresh: Array<{ run: ScheduleRunRecord; host: HostRecord | undefined }> = [];
    for (const { mac, host } of targets) {
      if (this.deps.db.data.scheduleRuns.some((r) => r.scheduleId === schedule.id && r.mac === mac && r.dueAt === dueAt)) continue;
      const run: ScheduleRunRecord = { id: randomUUID(), scheduleId: schedule.id, mac, dueAt, state: 'pending', taskId: null, reason: null, endedAt: null };
      this.deps.db.data.scheduleRuns.push(run);
      fresh.push({ run, host });
    }
    pruneRuns(this.deps.db, schedule.id);
    // Saved before any task exists: a crash from here on can lose this run, never repeat it.
    await this.deps.db.write();
    if (targets.length === 0) {
      await this.deps.events.record('warn', `schedule ${schedule.id} (${describeSpec(schedule.spec)}) found no host in ${describeTarget(schedule.target)}; nothing was captured`);
      return;
    }
    for (const { run, host } of fresh) {
      if (missedReason !== undefined) await this.endRun(run, 'missed', missedReason);
      else await this.startRun(schedule, run, host);
    }
  }

  private async startRun(schedule: ScheduleRecord, run: ScheduleRunRecord, host: HostRecord | undefined): Promise<void> {
    const active = this.deps.tasks.activeFor(run.mac);
    if (active) {
      await this.endRun(run, 'missed', `skipped: the PC already had a ${active.kind} task (${active.id}, ${active.state}) at the due time`);
      return;
    }
    const actor: Actor = { kind: 'operator', name: `schedule ${schedule.id}`, via: 'scheduler' };
    let task: TaskRecord;
    try {
      const image = imageForHost(schedule.image, 'group' in schedule.target, host, run.mac);
      ({ task } = await this.deps.commands.startTask(actor, { kind: 'capture', mac: run.mac, image, after: schedule.after }));
    } catch (err) {
      await this.endRun(run, 'failed', `the capture could not be queued: ${message(err)}`);
      return;
    }
    run.taskId = task.id;
    await this.deps.db.write();
    await this.deps.tasks.note(task, `queued by schedule ${schedule.id} (${describeSpec(schedule.spec)}), due ${localTime(run.dueAt)}; the PC ${schedule.after === 'poweroff' ? 'powers off' : 'reboots'} afterwards`);
    if (schedule.wake) void this.wake(run.mac, host?.ip ?? null, task);
  }

  private async wake(mac: string, ip: string | null, task: TaskRecord): Promise<void> {
    const repeat = this.deps.wakeRepeat ?? WAKE_REPEAT;
    try {
      if (!this.deps.wake) {
        await this.deps.tasks.note(task, 'Wake-on-LAN is not available here: the PC must be switched on to be captured');
        return;
      }
      const sleep = (ms: number): Promise<void> => new Promise((resolve) => this.clock.setTimer(ms, resolve));
      const target = await wakeRepeatedly(this.deps.wake, mac, ip, sleep, repeat);
      await this.deps.tasks.note(task, `Wake-on-LAN: magic packet sent ${repeat.count} times to ${target.address}:${target.port}`);
    } catch (err) {
      await this.deps.events.record('warn', `Wake-on-LAN for the scheduled capture of ${mac} failed: ${message(err)}; the PC must be switched on by hand`, mac);
    }
  }

  /** Carry a task's outcome over to its run. */
  private async followTask(task: TaskRecord): Promise<void> {
    const run = this.deps.db.data.scheduleRuns.find((r) => r.taskId === task.id && !runEnded(r));
    if (!run) return;
    switch (task.state) {
      case 'running':
      case 'verifying':
        if (run.state !== 'running') {
          run.state = 'running';
          await this.deps.db.write();
        }
        return;
      case 'done':
        await this.endRun(run, 'done', null);
        return;
      case 'failed':
        await this.endRun(run, 'failed', task.reason ?? 'the capture failed');
        return;
      case 'cancelled':
        if (this.cancelling.has(task.id)) return;
        await this.endRun(run, 'failed', `the task was cancelled (${task.reason ?? 'no reason given'})`);
        return;
      default:
        return;
    }
  }

  /** A run whose PC has not started by the end of its window is missed; its task is cancelled. */
  private async checkWindows(now: Date): Promise<void> {
    for (const run of this.deps.db.data.scheduleRuns) {
      if (runEnded(run) || run.taskId === null) continue;
      const windowMinutes = this.windowOf(run);
      if (now.getTime() < Date.parse(run.dueAt) + windowMinutes * 60_000) continue;
      const task = this.deps.tasks.get(run.taskId);
      if (!task || (task.state !== 'queued' && task.state !== 'booting')) continue;
      const reason = `the PC did not start its capture within ${windowMinutes} minutes of ${localTime(run.dueAt)} (it never booted the imaging client); check that it is on the network and wakes on LAN`;
      this.cancelling.add(task.id);
      try {
        await this.deps.tasks.cancel(task.id);
        task.reason = `missed its backup window: ${reason}`;
        await this.deps.tasks.note(task, `cancelled by the scheduler: ${reason}`);
      } finally {
        this.cancelling.delete(task.id);
      }
      await this.endRun(run, 'missed', reason);
    }
  }

  private windowOf(run: ScheduleRunRecord): number {
    return this.deps.db.data.schedules.find((s) => s.id === run.scheduleId)?.windowMinutes ?? DEFAULT_WINDOW_MINUTES;
  }

  private async endRun(run: ScheduleRunRecord, state: 'done' | 'failed' | 'missed', reason: string | null): Promise<void> {
    run.state = state;
    run.reason = reason;
    run.endedAt = this.clock.now().toISOString();
    await this.deps.db.write();
    const what = `scheduled capture of ${run.mac} (schedule ${run.scheduleId}, due ${localTime(run.dueAt)})`;
    if (state === 'missed') await this.deps.events.record('warn', `${what} missed: ${reason}`, run.mac);
    // A task's failure is recorded by the task itself; one that never got a task is recorded here.
    if (state === 'failed' && run.taskId === null) await this.deps.events.record('error', `${what} failed: ${reason}`, run.mac);
    this.deps.logger.info({ run: run.id, schedule: run.scheduleId, mac: run.mac, state, reason }, `${what}: ${state}`);
    this.emit('run', run);
  }

  /** Sleep until the next due time or window end, whichever is first (at most maxSleepMs). */
  private arm(): void {
    this.timer?.cancel();
    this.timer = null;
    if (this.stopped) return;
    const now = this.clock.now().getTime();
    let next = now + this.maxSleepMs;
    for (const s of this.deps.db.data.schedules) {
      try {
        next = Math.min(next, nextRun(s.spec, new Date(now)).getTime());
      } catch (err) {
        this.deps.logger.warn({ schedule: s.id }, `schedule ${s.id} has no next run: ${message(err)}`);
      }
    }
    for (const run of this.deps.db.data.scheduleRuns) {
      if (runEnded(run) || run.taskId === null) continue;
      const end = Date.parse(run.dueAt) + this.windowOf(run) * 60_000;
      if (end > now) next = Math.min(next, end);
    }
    this.timer = this.clock.setTimer(Math.max(0, next - now), () => {
      if (!this.stopped) this.serialize(() => this.tick());
    });
  }
}
