/**
 * Alerts: a technician hears about a failed task, a missed scheduled backup, a PC whose backup is
 * overdue, and (optionally) gets a daily summary, by email and/or a JSON webhook.
 *
 * Nothing here fails its caller: a task that failed has failed whether or not the mail server
 * answers. A channel that cannot deliver is logged and recorded as an event (the dashboard shows
 * it), and the send is not retried; the next alert tries again.
 *
 * Time comes from an injected clock and `tick()` does the periodic work (overdue hosts, the daily
 * summary), so tests move the clock and call tick instead of waiting.
 */
import type { EventEmitter } from 'node:events';
import type { Database, ScheduleRunRecord, TaskRecord } from './database.js';
import type { EventLog } from './events.js';
import type { Logger } from '../lib/log.js';
import {
  checkPageSettings, mergeAlertSettings, AlertSettingsError,
  type AlertFileSettings, type AlertPageSettings, type AlertSettings, type DailyTime,
} from './alert-config.js';
import { emailChannel, webhookChannel, type Alert, type AlertChannel } from './alert-senders.js';
import { protectionOf, scheduledImage } from './protection-data.js';
import type { HostProtection } from './protection.js';

export { AlertSettingsError };

export interface ChannelResult {
  readonly channel: AlertChannel['name'];
  readonly target: string;
  readonly ok: boolean;
  /** "sent", or what went wrong. */
  readonly message: string;
}

export interface AlertServiceOptions {
  readonly db: Database;
  readonly events: EventLog;
  /** Emits 'changed' with a TaskRecord on every state change (TaskService). */
  readonly tasks: Pick<EventEmitter, 'on' | 'off'>;
  /** The config file's alert settings; the settings page's values override them field by field. */
  readonly file: AlertFileSettings;
  readonly logger: Logger;
  /** Milliseconds since the epoch. */
  readonly now?: () => number;
  /** How often tick() runs after start(); 0: never by itself (tests call tick). */
  readonly tickMs?: number;
  /** How long one send may take. */
  readonly sendTimeoutMs?: number;
  /** The channels for some settings; tests may replace them. */
  readonly channels?: (settings: AlertSettings, timeoutMs: number) => AlertChannel[];
}

export function channelsFor(settings: AlertSettings, timeoutMs: number): AlertChannel[] {
  const out: AlertChannel[] = [];
  if (settings.smtp) out.push(emailChannel(settings.smtp, { timeoutMs }));
  if (settings.webhookUrl) out.push(webhookChannel(settings.webhookUrl, { timeoutMs }));
  return out;
}

/** The first HH:MM (local time) strictly after `after`. */
export function nextDailyTime(t: DailyTime, after: number): number {
  const d = new Date(after);
  d.setHours(t.hour, t.minute, 0, 0);
  if (d.getTime() <= after) {
    d.setDate(d.getDate() + 1);
    d.setHours(t.hour, t.minute, 0, 0);
  }
  return d.getTime();
}

function ageWords(seconds: number | null): string {
  if (seconds === null) return 'never';
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 2 * 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} days ago`;
}

/** The daily summary's text: the counts, then one line per PC, overdue ones first. */
export function summaryText(rows: readonly HostProtection[], tasks: readonly TaskRecord[], now: number): string {
  const dayAgo = new Date(now - 86_400_000).toISOString();
  const recent = tasks.filter((t) => (t.finishedAt ?? '') >= dayAgo);
  const overdue = rows.filter((r) => r.overdue).length;
  const never = rows.filter((r) => r.lastGood === null).length;
  const lines = [
    `${rows.length} PC${rows.length === 1 ? '' : 's'}: ${overdue} overdue, ${never} never backed up.`,
    `Last 24 hours: ${recent.filter((t) => t.kind === 'capture' && t.state === 'done').length} backups done, ${recent.filter((t) => t.state === 'failed').length} tasks failed.`,
    '',
  ];
  for (const r of rows) {
    const good = r.lastGood ? `last good backup ${r.lastGood.at} (${ageWords(r.ageSeconds)}, ${r.lastGood.image}${r.lastGood.version !== null ? ` v${r.lastGood.version}` : ''})` : 'no good backup';
    const next = r.nextRun ? `next run ${r.nextRun}` : 'not scheduled';
    const failure = r.lastFailure ? `; last failure ${r.lastFailure.at}: ${r.lastFailure.reason}` : '';
    lines.push(`${r.overdue ? 'OVERDUE ' : ''}${r.name} (${r.mac}): ${good}; ${next}${failure}`);
  }
  return lines.join('\n');
}

export class AlertService {
  private readonly now: () => number;
  private readonly timeoutMs: number;
  private readonly makeChannels: (settings: AlertSettings, timeoutMs: number) => AlertChannel[];
  private readonly pending = new Set<Promise<unknown>>();
  private timer: NodeJS.Timeout | null = null;
  private ticking: Promise<void> | null = null;
  /** The daily summary goes out at its first HH:MM after this: the start, the last summary, or the last settings change. */
  private summarySince: number;
  private readonly onTask = (task: TaskRecord): void => {
    if (task.state === 'failed') this.raise({ event: 'failure', ...this.who(task.mac), image: task.image, reason: `${task.kind} failed: ${task.reason ?? 'no reason recorded'}`, at: task.finishedAt ?? this.iso() });
  };
  private readonly onRun = (run: Pick<ScheduleRunRecord, 'mac' | 'state' | 'reason' | 'scheduleId' | 'dueAt' | 'endedAt' | 'taskId'>): void => {
    // A run whose task failed was reported by the task; one that failed before it had a task was not.
    const failedAlone = run.state === 'failed' && run.taskId === null;
    if (run.state !== 'missed' && !failedAlone) return;
    const schedule = this.db.data.schedules.find((s) => s.id === run.scheduleId);
    this.raise({
      event: failedAlone ? 'failure' : 'missed', ...this.who(run.mac), image: scheduledImage(schedule, this.db.data.hosts.find((h) => h.mac === run.mac), run.mac),
      reason: `the backup due ${run.dueAt} did not run: ${run.reason ?? 'the PC did not start it within its window'}`, at: run.endedAt ?? this.iso(),
    });
  };
  private readonly schedulers: Array<Pick<EventEmitter, 'on' | 'off'>> = [];

  constructor(private readonly options: AlertServiceOptions) {
    this.now = options.now ?? (() => Date.now());
    this.timeoutMs = options.sendTimeoutMs ?? 15_000;
    this.makeChannels = options.channels ?? channelsFor;
    this.summarySince = this.now();
  }

  private get db(): Database {
    return this.options.db;
  }

  private iso(): string {
    return new Date(this.now()).toISOString();
  }

  private who(mac: string): { host: string; mac: string } {
    const h = this.db.data.hosts.find((x) => x.mac === mac);
    return { host: h?.name || mac, mac };
  }

  /** Listen for task failures and start the periodic check. */
  start(): void {
    this.options.tasks.on('changed', this.onTask);
    const every = this.options.tickMs ?? 60_000;
    if (every > 0 && !this.timer) {
      this.timer = setInterval(() => void this.tick(), every);
      this.timer.unref();
    }
  }

  /** Listen for a scheduler's 'run' events (a run that ended done, failed or missed); missed ones raise an alert. */
  watchScheduler(scheduler: Pick<EventEmitter, 'on' | 'off'>): void {
    scheduler.on('run', this.onRun);
    this.schedulers.push(scheduler);
  }

  /** Stop listening and wait for sends under way. */
  async stop(): Promise<void> {
    this.options.tasks.off('changed', this.onTask);
    for (const s of this.schedulers.splice(0)) s.off('run', this.onRun);
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.idle();
  }

  /** Resolves when every send started so far has finished (or failed). */
  async idle(): Promise<void> {
    while (this.pending.size > 0 || this.ticking) {
      await Promise.allSettled([...this.pending, ...(this.ticking ? [this.ticking] : [])]);
    }
  }

  pageSettings(): AlertPageSettings {
    return { ...(this.db.data.settings.alerts ?? {}) };
  }

  /** The settings in force (page over file), and what keeps a channel off. */
  effective(): { settings: AlertSettings; problems: string[] } {
    return mergeAlertSettings(this.options.file, this.pageSettings());
  }

  get fileSettings(): AlertFileSettings {
    return this.options.file;
  }

  /**
   * Store the settings page's values (checked; AlertSettingsError says what is wrong). An empty
   * password keeps the stored one: the page never shows it back.
   */
  async savePageSettings(input: Readonly<Record<string, string | undefined>>): Promise<AlertPageSettings> {
    const page = checkPageSettings(input);
    const before = this.db.data.settings.alerts;
    if (page.smtpPassword === undefined && before?.smtpPassword !== undefined && input.clearPassword !== 'yes') page.smtpPassword = before.smtpPassword;
    mergeAlertSettings(this.options.file, page);
    this.db.data.settings.alerts = page;
    await this.db.write();
    this.summarySince = this.now();
    await this.options.events.record('info', 'alert settings changed on the settings page');
    return page;
  }

  /** A test message through every configured channel; resolves with each channel's outcome. */
  async sendTest(): Promise<ChannelResult[]> {
    return this.deliver({ event: 'test', host: null, mac: null, image: null, reason: null, at: this.iso(), summary: 'A test message from netclone: alerts reach you this way.' });
  }

  /** Send an alert without waiting; failures are logged and recorded as events. */
  raise(alert: Alert): void {
    const p = this.deliver(alert).finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  private async deliver(alert: Alert): Promise<ChannelResult[]> {
    let channels: AlertChannel[];
    try {
      channels = this.makeChannels(this.effective().settings, this.timeoutMs);
    } catch (err) {
      this.options.logger.error({ err }, 'alert settings cannot be used; no alert sent');
      return [];
    }
    return Promise.all(channels.map(async (c): Promise<ChannelResult> => {
      try {
        await c.send(alert);
        this.options.logger.info({ channel: c.name, target: c.target, event: alert.event, mac: alert.mac }, 'alert sent');
        return { channel: c.name, target: c.target, ok: true, message: 'sent' };
      } catch (err) {
        const message = (err as Error).message;
        await this.options.events.record('warn', `${alert.event} alert by ${c.name} not delivered: ${message}`, alert.mac);
        return { channel: c.name, target: c.target, ok: false, message };
      }
    }));
  }

  /** The periodic work: overdue hosts (once per episode) and the daily summary when its time has come. */
  tick(): Promise<void> {
    this.ticking ??= this.runTick().catch((err: unknown) => {
      this.options.logger.error({ err }, 'alert check failed; it runs again at the next tick');
    }).finally(() => {
      this.ticking = null;
    });
    return this.ticking;
  }

  private async runTick(): Promise<void> {
    const now = this.now();
    const rows = protectionOf(this.db.data, new Date(now));
    await this.checkOverdue(rows);
    await this.checkSummary(rows, now);
  }

  private async checkOverdue(rows: readonly HostProtection[]): Promise<void> {
    const state = (this.db.data.alertState ??= { overdue: {} });
    let changed = false;
    const seen = new Set<string>();
    for (const r of rows) {
      seen.add(r.mac);
      if (!r.overdue) {
        if (state.overdue[r.mac] !== undefined) {
          delete state.overdue[r.mac];
          changed = true;
        }
        continue;
      }
      if (state.overdue[r.mac] !== undefined) continue;
      state.overdue[r.mac] = r.overdueSince ?? this.iso();
      changed = true;
      const allowed = r.allowedAgeSeconds !== null ? `${Math.round(r.allowedAgeSeconds / 3600)} h` : 'its schedule';
      const reason = r.lastGood
        ? `the last good backup (${r.lastGood.at}) is older than its schedule allows (${allowed})`
        : `no good backup yet, and its first scheduled run is past`;
      this.raise({ event: 'overdue', host: r.name || r.mac, mac: r.mac, image: r.lastGood?.image ?? null, reason, at: r.overdueSince ?? this.iso() });
    }
    // A host removed (or no longer listed) ends its episode too.
    for (const mac of Object.keys(state.overdue)) {
      if (!seen.has(mac)) {
        delete state.overdue[mac];
        changed = true;
      }
    }
    if (changed) await this.db.write();
  }

  private async checkSummary(rows: readonly HostProtection[], now: number): Promise<void> {
    const daily = this.effective().settings.dailySummary;
    if (!daily || now < nextDailyTime(daily, this.summarySince)) return;
    // One summary however late the tick: a server that slept through two summary times sends one.
    this.summarySince = now;
    const overdue = rows.filter((r) => r.overdue).length;
    this.raise({
      event: 'summary', host: null, mac: null, image: null,
      reason: overdue > 0 ? `${overdue} PC${overdue === 1 ? '' : 's'} overdue` : null,
      at: new Date(now).toISOString(),
      summary: summaryText(rows, this.db.data.tasks, now),
    });
  }
}

/** The server's alerts: listening for task failures and checking overdue hosts and the daily summary every minute. */
export function startAlerts(core: Pick<AlertServiceOptions, 'db' | 'events' | 'tasks'>, file: AlertFileSettings, logger: Logger): AlertService {
  const alerts = new AlertService({ db: core.db, events: core.events, tasks: core.tasks, file, logger: logger.child({ component: 'alerts' }) });
  alerts.start();
  return alerts;
}
