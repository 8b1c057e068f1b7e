/**
 * The task lifecycle, in one place:
 *
 *   queued → booting → running → verifying → done
 *        ↘        ↘         ↘          ↘→ failed | cancelled
 *
 * queued:    created by a technician; waits for the PC to network-boot.
 * booting:   the PC was handed the imaging client with a fresh one-time token (by its boot
 *            script, or after a technician's login at the PC).
 * running:   the client chose its disk and the NBD export is open.
 * verifying: the data is across; the server commits (capture) or the client reads back (deploy).
 *
 * Other modules ask this one; nobody else writes task state.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { ChunkCounters, Database, TaskKind, TaskProgress, TaskRecord, TaskState, TaskTransport } from './database.js';
import type { EventLog } from './events.js';
import { DatabaseWriteError } from './durable-json-file.js';
import { normalizeMac } from '../lib/mac.js';
import { hashToken, newToken, tokenMatches } from '../lib/tokens.js';
import type { Logger } from '../lib/log.js';
import { DeferredSave } from './deferred-save.js';

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
  /** The command layer passes the configured default; without one a task moves its disk over NBD. */
  readonly transport?: TaskTransport;
  /** A deploy's partition that grows or shrinks (TaskRecord.mainPartition); the command layer checks it. */
  readonly mainPartition?: number;
  /** A deploy's version (TaskRecord.version); the command layer checks it exists. */
  readonly version?: number;
}

const PROGRESS_WRITE_INTERVAL_MS = 2000;

/**
 * A task's log and reason come partly from the PC (the client API is reachable by anyone holding
 * a token): without a bound, a chatty or hostile client grows the database without end.
 */
export const MAX_TASK_LOG_ENTRIES = 200;
export const MAX_TASK_MESSAGE_CHARS = 500;

function clip(message: string): string {
  return message.length > MAX_TASK_MESSAGE_CHARS ? `${message.slice(0, MAX_TASK_MESSAGE_CHARS - 1)}…` : message;
}

/** How long a task may go without a word from its imaging client before it is failed. */
export interface LivenessLimits {
  /** While the client transfers or reads the disk back (it reports at least every few seconds). */
  readonly silenceSeconds: number;
  /** From the client's first call until it starts the transfer: it examines the disks meanwhile. */
  readonly examineSeconds: number;
}

export const DEFAULT_LIVENESS: LivenessLimits = { silenceSeconds: 120, examineSeconds: 600 };

export interface TaskServiceOptions {
  readonly logger?: Logger;
  readonly liveness?: LivenessLimits;
  /** Milliseconds since the epoch; tests move it by hand. */
  readonly now?: () => number;
  /** How often the liveness check runs while some client is being watched. */
  readonly livenessCheckMs?: number;
}

export class TaskService extends EventEmitter {
  private readonly rate = new Map<string, { at: number; bytes: number; mbps: number }>();
  /** Tasks whose current token already started a transfer (see claimStart). */
  private readonly startClaimed = new Set<string>();

  /** When each watched task's client last spoke (any client API call, or NBD traffic). */
  private readonly lastHeard = new Map<string, number>();
  private watchdog: NodeJS.Timeout | null = null;
  private readonly progressSave: DeferredSave;
  private readonly logger: Logger | undefined;
  private readonly liveness: LivenessLimits;
  private readonly now: () => number;
  private readonly livenessCheckMs: number;

  constructor(private readonly db: Database, private readonly events: EventLog, options: TaskServiceOptions = {}) {
    super();
    this.logger = options.logger;
    this.liveness = options.liveness ?? DEFAULT_LIVENESS;
    this.now = options.now ?? (() => Date.now());
    this.livenessCheckMs = options.livenessCheckMs ?? 5000;
    this.progressSave = new DeferredSave(() => this.db.write(), PROGRESS_WRITE_INTERVAL_MS, (err: unknown) => {
      // The data stays in memory; the next write (a state change, the next progress) carries it.
      this.logger?.error({ err }, 'could not save task progress to the database');
    });
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

  /**
   * The PC's most recent deploy that started writing its disk (reached "running"), in any state:
   * unless it is done, the disk holds an incomplete image (the boot policy acts on that).
   */
  lastStartedDeploy(macInput: string): TaskRecord | undefined {
    const mac = normalizeMac(macInput);
    let last: TaskRecord | undefined;
    for (const t of this.db.data.tasks) {
      if (t.mac !== mac || t.kind !== 'deploy' || t.startedAt === null) continue;
      if (!last || (t.startedAt ?? '') > (last.startedAt ?? '')) last = t;
    }
    return last;
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
      transport: input.transport ?? 'nbd',
      ...(input.mainPartition !== undefined ? { mainPartition: input.mainPartition } : {}),
      ...(input.version !== undefined ? { version: input.version } : {}),
      tokenHash: '',
      clientIp: null,
      disk: null,
      progress: { bytes: 0, total: 0, percent: 0, mbps: 0, etaSeconds: null },
      result: null,
      log: [],
    };
    this.db.data.tasks.push(task);
    await this.db.write();
    await this.events.record('info', `${task.kind} task for ${mac} with image ${task.image}${task.version !== undefined ? ` version ${task.version}` : ''} queued`, mac);
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
    this.pushLog(task, now, message);
    if (to === 'running' && !task.startedAt) task.startedAt = now;
    if (!ACTIVE_STATES.includes(to)) {
      task.finishedAt = now;
      task.tokenHash = '';
      this.rate.delete(task.id);
      this.startClaimed.delete(task.id);
      this.lastHeard.delete(task.id);
    }
    try {
      await this.db.write();
    } catch (err) {
      if (!(err instanceof DatabaseWriteError)) throw err;
      // The transition has happened: the PC, its NBD grants and the pages act on it now. Failing the
      // caller here would leave the flow half done (a committed capture whose task never ends); the
      // adapter saves the state once there is room again and has logged why it could not yet.
      this.logger?.warn({ task: task.id, state: to }, `task ${task.id} is ${to}; the database keeps the previous state until it can be saved`);
    }
    const level = to === 'failed' ? 'error' : 'info';
    await this.events.record(level, `${task.kind} ${task.image} on ${task.mac}: ${message}`, task.mac);
    this.emit('changed', task);
  }

  /**
   * The PC is network-booting: give it a fresh one-time token (an earlier one stops working),
   * bound to `address`, the PC's address: the client API accepts the token from there only.
   */
  async beginBoot(task: TaskRecord, address: string): Promise<string> {
    const token = newToken();
    task.tokenHash = hashToken(token);
    task.clientIp = address;
    this.startClaimed.delete(task.id);
    await this.move(task, 'booting', `PC ${address} is booting the imaging client`);
    return token;
  }

  /**
   * A token starts one transfer: the first caller gets true, every later one (even one racing
   * it before the task leaves "booting") false, until the PC boots again for a fresh token.
   */
  claimStart(task: TaskRecord): boolean {
    if (this.startClaimed.has(task.id)) return false;
    this.startClaimed.add(task.id);
    return true;
  }

  /** The claimed start opened nothing (the server asked the client to come back): the token may start again. */
  releaseStart(task: TaskRecord): void {
    this.startClaimed.delete(task.id);
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
    this.heard(task);
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
    task.reason = clip(reason);
    await this.move(task, 'failed', `failed: ${task.reason}`);
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
      ...task.progress,
      bytes,
      total: task.progress.total,
      percent: Math.min(100, Math.floor((bytes / total) * 1000) / 10),
      mbps: Math.round(mbps * 10) / 10,
      etaSeconds: mbps > 0 ? Math.round(remaining / (mbps * 1e6)) : null,
    };
    task.updatedAt = new Date(now).toISOString();
    this.heard(task);
    this.progressSave.request();
    return task.progress;
  }

  /**
   * The chunk transport's counters: what the agent examined (the progress bytes) and how its chunks
   * went. The agent reports every few seconds; kept like progress().
   */
  chunkProgress(task: TaskRecord, examined: number, chunks: ChunkCounters): TaskProgress {
    task.progress = { ...task.progress, chunks: { ...chunks } };
    this.progress(task, examined);
    return this.summarize(task);
  }

  /** Bytes on the wire as the server counted them (the task's meter). */
  wireBytes(task: TaskRecord, bytes: number): void {
    task.progress = { ...task.progress, wireBytes: bytes };
    this.summarize(task);
    this.progressSave.request();
  }

  private summarize(task: TaskRecord): TaskProgress {
    const line = progressLine(task);
    if (line !== null) task.progress.summary = line;
    return task.progress;
  }

  /**
   * A line in the task's log (client messages, Wake-on-LAN). Saved with the next coalesced write
   * rather than at once: a client may report often, and each write rewrites the whole database.
   */
  async note(task: TaskRecord, message: string): Promise<void> {
    this.pushLog(task, new Date(this.now()).toISOString(), message);
    this.progressSave.request();
    this.emit('changed', task);
  }

  private pushLog(task: TaskRecord, at: string, message: string): void {
    task.log.push({ at, message: clip(message) });
    if (task.log.length > MAX_TASK_LOG_ENTRIES) task.log.splice(0, task.log.length - MAX_TASK_LOG_ENTRIES);
  }


  /**
   * The task's client said something (an API call, NBD traffic). From the first word on, a
   * client that goes silent for too long fails its task, so a dead PC never blocks its next one.
   */
  heard(task: TaskRecord): void {
    if (!isActive(task)) return;
    this.lastHeard.set(task.id, this.now());
    if (!this.watchdog) {
      this.watchdog = setInterval(() => void this.checkLiveness(), this.livenessCheckMs);
      this.watchdog.unref();
    }
  }

  /** The owner is closing: no liveness check and no coalesced save runs after this (the owner saves). */
  stopTimers(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    this.progressSave.cancel();
    this.lastHeard.clear();
  }

  /** Fail every watched task whose client has been silent too long. Runs on a timer; tests call it. */
  async checkLiveness(): Promise<TaskRecord[]> {
    const now = this.now();
    const failed: TaskRecord[] = [];
    for (const [id, at] of [...this.lastHeard]) {
      const task = this.get(id);
      if (!task || !isActive(task)) {
        this.lastHeard.delete(id);
        continue;
      }
      // A capture being committed is the server's work, bounded by its own commit wait, not the PC's.
      if (task.kind === 'capture' && task.state === 'verifying') continue;
      const examining = task.state === 'queued' || task.state === 'booting';
      const limit = examining ? this.liveness.examineSeconds : this.liveness.silenceSeconds;
      const silent = Math.floor((now - at) / 1000);
      if (silent < limit) continue;
      this.lastHeard.delete(id);
      const doing = examining ? 'while it examined the disks' : task.state === 'verifying' ? 'while it read the disk back' : 'during the transfer';
      try {
        await this.fail(task, `the PC stopped responding: no word from its imaging client for ${silent} s ${doing}; check the PC's screen and network cable, then start the task again`);
        failed.push(task);
      } catch (err) {
        this.logger?.error({ err, task: id }, 'could not fail a task whose PC stopped responding');
      }
    }
    if (this.lastHeard.size === 0 && this.watchdog) {
      clearInterval(this.watchdog);
      this.watchdog = null;
    }
    return failed;
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

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB', 'PB'];

function decimalBytes(n: number): string {
  let v = n;
  let u = 0;
  // 999.5 would round to "1000": that is the next unit.
  while (v >= 999.5 && u < UNITS.length - 1) {
    v /= 1000;
    u++;
  }
  return u === 0 ? `${v} B` : `${v >= 100 ? Math.round(v) : Math.round(v * 10) / 10} ${UNITS[u]}`;
}

/**
 * The chunk transport's progress in one line, e.g. "examined 120 GB, sent 1.3 GB, 98.9 % reused"
 * (a deploy "fetched" what it did not hold). Reused counts data chunks the other side already held;
 * zero chunks are in neither count. Null for a task without chunk counters (NBD).
 */
export function progressLine(task: Pick<TaskRecord, 'kind' | 'progress'>): string | null {
  const c = task.progress.chunks;
  if (!c) return null;
  const moved = task.kind === 'capture' ? 'sent' : 'fetched';
  const data = c.reused + c.sent;
  const reused = data === 0 ? '' : `, ${Math.floor((c.reused / data) * 1000) / 10} % reused`;
  return `examined ${decimalBytes(task.progress.bytes)}, ${moved} ${decimalBytes(task.progress.wireBytes ?? 0)}${reused}`;
}
