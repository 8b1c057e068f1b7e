/**
 * The task lifecycle, in one place:
 *
 *   queued → booting → running → verifying → done
 *        ↘        ↘         ↘          ↘→ failed | cancelled
 *
 * queued:    created by a technician; waits for the PC to network-boot.
 * booting:   the boot policy handed the PC the thin client with a fresh one-time token.
 * running:   the client chose its disk and the NBD export is open.
 * verifying: the data is across; the server commits (capture) or the client reads back (deploy).
 *
 * Other modules ask this one; nobody else writes task state.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Database, TaskKind, TaskProgress, TaskRecord, TaskState } from './database.js';
import type { EventLog } from './events.js';
import { normalizeMac } from './mac.js';
import { hashToken, newToken, tokenMatches } from './tokens.js';

export class TaskError extends Error {
  constructor(readonly status: 400 | 403 | 404 | 409, message: string) {
    super(message);
    this.name = 'TaskError';
  }
}

const TRANSITIONS: Record<TaskState, readonly TaskState[]> = {
  queued: ['booting', 'cancelled', 'failed'],
  booting: ['booting', 'running', 'failed', 'cancelled'],
  running: ['verifying', 'done', 'failed', 'cancelled'],
  verifying: ['done', 'failed', 'cancelled'],
  done: [],
  failed: [],
  cancelled: [],
};

export const ACTIVE_STATES: readonly TaskState[] = ['queued', 'booting', 'running', 'verifying'];

export function isActive(task: TaskRecord): boolean {
  return ACTIVE_STATES.includes(task.state);
}

export interface NewTask {
  readonly kind: TaskKind;
  readonly mac: string;
  readonly image: string;
  readonly diskSerial?: string | null;
  readonly after?: 'reboot' | 'poweroff';
}

const PROGRESS_WRITE_INTERVAL_MS = 2000;

export class TaskService extends EventEmitter {
  private readonly rate = new Map<string, { at: number; bytes: number; mbps: number }>();
  private readonly lastWrite = new Map<string, number>();

  constructor(private readonly db: Database, private readonly events: EventLog) {
    super();
  }

  list(filter: { mac?: string; active?: boolean } = {}): TaskRecord[] {
    return this.db.data.tasks
      .filter((t) => (filter.mac ? t.mac === filter.mac : true))
      .filter((t) => (filter.active === undefined ? true : isActive(t) === filter.active))
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  }

  get(id: string): TaskRecord | undefined {
    return this.db.data.tasks.find((t) => t.id === id);
  }

  require(id: string): TaskRecord {
    const t = this.get(id);
    if (!t) throw new TaskError(404, `no task ${id}; "netclone task list" shows the tasks`);
    return t;
  }

  /** The one active task of a PC, if any: a PC does one thing at a time. */
  activeFor(macInput: string): TaskRecord | undefined {
    const mac = normalizeMac(macInput);
    return this.db.data.tasks.find((t) => t.mac === mac && isActive(t));
  }

  async create(input: NewTask): Promise<TaskRecord> {
    const mac = normalizeMac(input.mac);
    if (!mac) throw new TaskError(400, `"${input.mac}" is not a MAC address (expected aa:bb:cc:dd:ee:ff)`);
    const existing = this.activeFor(mac);
    if (existing) {
      throw new TaskError(409, `${mac} already has a ${existing.kind} task (${existing.id}, ${existing.state}); cancel it first`);
    }
    const now = new Date().toISOString();
    const task: TaskRecord = {
      id: randomUUID(),
      kind: input.kind,
      mac,
      image: input.image,
      state: 'queued',
      createdAt: now,
      updatedAt: now,
      startedAt: null,
      finishedAt: null,
      reason: null,
      diskSerial: input.diskSerial ?? null,
      after: input.after ?? 'reboot',
      tokenHash: '',
      clientIp: null,
      disk: null,
      progress: { bytes: 0, total: 0, percent: 0, mbps: 0, etaSeconds: null },
      result: null,
      log: [],
    };
    this.db.data.tasks.push(task);
    await this.db.write();
    await this.events.record('info', `${task.kind} task for ${mac} with image ${task.image} queued`, mac);
    this.emit('changed', task);
    return task;
  }

  private async move(task: TaskRecord, to: TaskState, message: string): Promise<void> {
    if (!TRANSITIONS[task.state].includes(to)) {
      throw new TaskError(409, `task ${task.id} is ${task.state}; it cannot become ${to}`);
    }
    const now = new Date().toISOString();
    task.state = to;
    task.updatedAt = now;
    task.log.push({ at: now, message });
    if (to === 'running' && !task.startedAt) task.startedAt = now;
    if (!ACTIVE_STATES.includes(to)) {
      task.finishedAt = now;
      task.tokenHash = '';
      this.rate.delete(task.id);
      this.lastWrite.delete(task.id);
    }
    await this.db.write();
    const level = to === 'failed' ? 'error' : 'info';
    await this.events.record(level, `${task.kind} ${task.image} on ${task.mac}: ${message}`, task.mac);
    this.emit('changed', task);
  }

  /** The PC is network-booting: give it a fresh one-time token (an earlier one stops working). */
  async beginBoot(task: TaskRecord): Promise<string> {
    const token = newToken();
    task.tokenHash = hashToken(token);
    await this.move(task, 'booting', 'PC is booting the imaging client');
    return token;
  }

  /** The task a client token belongs to, while that task can still use it. */
  byToken(token: string): TaskRecord | undefined {
    if (!token || token.length > 200) return undefined;
    return this.db.data.tasks.find((t) => isActive(t) && t.tokenHash !== '' && tokenMatches(token, t.tokenHash));
  }

  async markRunning(task: TaskRecord, disk: NonNullable<TaskRecord['disk']>, clientIp: string, total: number): Promise<void> {
    task.disk = disk;
    task.clientIp = clientIp;
    task.progress = { bytes: 0, total, percent: 0, mbps: 0, etaSeconds: null };
    await this.move(task, 'running', `${task.kind} of disk ${disk.name} (${disk.size} bytes) started`);
  }

  async markVerifying(task: TaskRecord, message: string): Promise<void> {
    if (task.state === 'verifying') return;
    await this.move(task, 'verifying', message);
  }

  async succeed(task: TaskRecord, result: NonNullable<TaskRecord['result']>, message: string): Promise<void> {
    task.result = result;
    task.progress = { ...task.progress, percent: 100, etaSeconds: 0 };
    await this.move(task, 'done', message);
  }

  async fail(task: TaskRecord, reason: string): Promise<void> {
    if (!isActive(task)) return;
    task.reason = reason;
    await this.move(task, 'failed', `failed: ${reason}`);
  }

  async cancel(id: string): Promise<TaskRecord> {
    const task = this.require(id);
    if (!isActive(task)) throw new TaskError(409, `task ${id} already ended (${task.state})`);
    task.reason = 'cancelled by technician';
    await this.move(task, 'cancelled', 'cancelled');
    return task;
  }

  /**
   * Progress from the NBD stream. Kept in memory on every call (live pages poll it),
   * written to the database at most every two seconds.
   */
  progress(task: TaskRecord, bytes: number): TaskProgress {
    const now = Date.now();
    const total = Math.max(task.progress.total, 1);
    const prev = this.rate.get(task.id);
    let mbps = task.progress.mbps;
    if (!prev) {
      this.rate.set(task.id, { at: now, bytes, mbps: 0 });
    } else if (now - prev.at >= 1000) {
      const instant = (bytes - prev.bytes) / ((now - prev.at) / 1000) / 1e6;
      mbps = prev.mbps === 0 ? instant : prev.mbps * 0.6 + instant * 0.4;
      this.rate.set(task.id, { at: now, bytes, mbps });
    }
    const remaining = Math.max(total - bytes, 0);
    task.progress = {
      bytes,
      total: task.progress.total,
      percent: Math.min(100, Math.floor((bytes / total) * 1000) / 10),
      mbps: Math.round(mbps * 10) / 10,
      etaSeconds: mbps > 0 ? Math.round(remaining / (mbps * 1e6)) : null,
    };
    task.updatedAt = new Date(now).toISOString();
    this.emit('progress', task);
    const last = this.lastWrite.get(task.id) ?? 0;
    if (now - last >= PROGRESS_WRITE_INTERVAL_MS) {
      this.lastWrite.set(task.id, now);
      void this.db.write();
    }
    return task.progress;
  }

  async note(task: TaskRecord, message: string): Promise<void> {
    task.log.push({ at: new Date().toISOString(), message });
    await this.db.write();
    this.emit('changed', task);
  }

  /** After a restart no client holds a live NBD connection: tasks in flight cannot finish. */
  async failInterrupted(): Promise<number> {
    let n = 0;
    for (const t of this.db.data.tasks) {
      if (t.state === 'running' || t.state === 'verifying') {
        await this.fail(t, 'the server restarted while the transfer was in flight; start the task again');
        n++;
      }
    }
    return n;
  }
}
