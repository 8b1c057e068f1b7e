/**
 * Backup schedules and host groups as stored in the database (issue 13): validation, the image
 * name each host of a schedule captures into, and what the list shows. The Scheduler runs them;
 * the commands (commands.ts, "schedules and groups") are the only way people change them.
 */
import { randomUUID } from 'node:crypto';
import type { Database, HostRecord, ScheduleRecord, ScheduleRunRecord, ScheduleTarget } from './database.js';
import { DEFAULT_WINDOW_MINUTES, ScheduleSpecError, describeSpec, makeSpec, nextRun, type ScheduleSpec } from './schedule-time.js';
import { isValidImageName } from '../imaging/names.js';
import { normalizeMac } from '../lib/mac.js';

/** Raised for input a person can fix; the commands turn it into a 400/404. */
export class ScheduleInputError extends Error {
  constructor(readonly status: 400 | 404, message: string) {
    super(message);
    this.name = 'ScheduleInputError';
  }
}

const GROUP_RE = /^[A-Za-z0-9][A-Za-z0-9 ._()-]{0,63}$/;

/** A group name as a technician types it ("Front office", "Lab 2"), trimmed; null for "no group". */
export function normalizeGroup(input: string | null | undefined): string | null {
  if (input === null || input === undefined) return null;
  const name = input.trim().replace(/\s+/g, ' ');
  if (name === '') return null;
  if (!GROUP_RE.test(name)) {
    throw new ScheduleInputError(400, `"${name.slice(0, 80)}" is not a group name: use 1-64 letters, digits, spaces or ._()-, starting with a letter or digit`);
  }
  return name;
}

/** Group names compare without regard to case: "lab 2" and "Lab 2" are one group. */
export function sameGroup(a: string | null | undefined, b: string | null | undefined): boolean {
  return a !== null && a !== undefined && b !== null && b !== undefined && a.toLowerCase() === b.toLowerCase();
}

export function hostsInGroup(hosts: readonly HostRecord[], group: string): HostRecord[] {
  return hosts.filter((h) => sameGroup(h.group, group));
}

export interface GroupSummary {
  readonly name: string;
  readonly hosts: readonly string[];
}

/** Every group that has a host, with its hosts' MACs, by name. */
export function listGroups(hosts: readonly HostRecord[]): GroupSummary[] {
  const groups = new Map<string, { name: string; hosts: string[] }>();
  for (const h of hosts) {
    if (!h.group) continue;
    const key = h.group.toLowerCase();
    const g = groups.get(key) ?? { name: h.group, hosts: [] };
    g.hosts.push(h.mac);
    groups.set(key, g);
  }
  return [...groups.values()].sort((a, b) => a.name.localeCompare(b.name));
}

export const HOST_PLACEHOLDER = '{host}';

/**
 * The image name a group's capture uses for one host: "{host}" in the template is replaced by the
 * host's name made into an image name (else pc-<mac digits>); a template without "{host}" gets
 * "-{host}" appended for a group, so the PCs of a group never overwrite each other's image.
 */
export function imageForHost(template: string, forGroup: boolean, host: Pick<HostRecord, 'name' | 'mac'> | undefined, mac: string): string {
  const withPlaceholder = forGroup && !template.includes(HOST_PLACEHOLDER) ? `${template}-${HOST_PLACEHOLDER}` : template;
  if (!withPlaceholder.includes(HOST_PLACEHOLDER)) return withPlaceholder;
  const fromName = host?.name ? host.name.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[^A-Za-z0-9]+/, '').replace(/\.\.+/g, '.').replace(/-+$/, '') : '';
  const hostPart = fromName || `pc-${mac.replace(/:/g, '')}`;
  const name = withPlaceholder.split(HOST_PLACEHOLDER).join(hostPart);
  return name.length > 64 ? name.slice(0, 64).replace(/[.-]+$/, '') : name;
}

/** The template must give a valid image name (checked with a stand-in host name). */
export function checkImageTemplate(template: string, forGroup: boolean): string {
  const t = template.trim();
  const sample = imageForHost(t, forGroup, { name: 'pc1', mac: '00:00:00:00:00:00' }, '00:00:00:00:00:00');
  if (t === '' || !isValidImageName(sample)) {
    throw new ScheduleInputError(400, `"${t.slice(0, 80)}" is not a valid image name: use 1-64 letters, digits, '.', '_' or '-' (and "{host}" for the host's name), starting with a letter or digit`);
  }
  return t;
}

export interface NewSchedule {
  readonly mac?: string;
  readonly group?: string;
  readonly capture: string;
  readonly daily?: string;
  readonly weekly?: { readonly day: string; readonly time: string };
  readonly cron?: string;
  readonly wake?: boolean;
  readonly after?: 'reboot' | 'poweroff';
  readonly windowMinutes?: number;
}

/** A ScheduleRecord from what the person gave, or a ScheduleInputError saying what to fix. */
export function buildSchedule(input: NewSchedule, now: Date): ScheduleRecord {
  if ((input.mac === undefined) === (input.group === undefined)) {
    throw new ScheduleInputError(400, 'a schedule is for one host (--host MAC) or one group (--group NAME): give exactly one');
  }
  let target: ScheduleTarget;
  if (input.mac !== undefined) {
    const mac = normalizeMac(input.mac);
    if (!mac) throw new ScheduleInputError(400, `"${input.mac.slice(0, 40)}" is not a MAC address (expected aa:bb:cc:dd:ee:ff)`);
    target = { mac };
  } else {
    const group = normalizeGroup(input.group);
    if (group === null) throw new ScheduleInputError(400, 'the group name is empty');
    target = { group };
  }
  const image = checkImageTemplate(input.capture, 'group' in target);
  let spec: ScheduleSpec;
  try {
    spec = makeSpec({ daily: input.daily, weekly: input.weekly, cron: input.cron });
  } catch (e) {
    if (e instanceof ScheduleSpecError) throw new ScheduleInputError(400, e.message);
    throw e;
  }
  if (input.after !== undefined && input.after !== 'reboot' && input.after !== 'poweroff') {
    throw new ScheduleInputError(400, `--after must be poweroff or reboot, not "${String(input.after).slice(0, 40)}"`);
  }
  const windowMinutes = input.windowMinutes ?? DEFAULT_WINDOW_MINUTES;
  if (!Number.isInteger(windowMinutes) || windowMinutes < 1 || windowMinutes > 24 * 60) {
    throw new ScheduleInputError(400, `the run window is 1 to 1440 minutes, not "${String(windowMinutes).slice(0, 40)}"`);
  }
  const wake = input.wake === true;
  return {
    id: randomUUID().slice(0, 8),
    target,
    image,
    spec,
    wake,
    // A PC woken for its backup goes back to sleep afterwards; one that was on anyway is rebooted into its system.
    after: input.after ?? (wake ? 'poweroff' : 'reboot'),
    windowMinutes,
    createdAt: now.toISOString(),
    lastRunAt: null,
  };
}

export function findSchedule(db: Database, id: string): ScheduleRecord {
  const found = db.data.schedules.find((s) => s.id === id);
  if (!found) throw new ScheduleInputError(404, `no schedule ${id.slice(0, 40)}; "netclone schedule list" shows them`);
  return found;
}

export function describeTarget(target: ScheduleTarget): string {
  return 'mac' in target ? `host ${target.mac}` : `group "${target.group}"`;
}

/** A schedule as the list shows it: when it runs next and how its latest runs went. */
export interface ScheduleView extends ScheduleRecord {
  /** The image each run captures into, as a person reads it: a group's "office" is "office-{host}". */
  readonly imageLabel: string;
  readonly description: string;
  readonly targetLabel: string;
  readonly nextRunAt: string;
  readonly lastRuns: readonly ScheduleRunRecord[];
}

export function viewSchedule(db: Database, schedule: ScheduleRecord, now: Date): ScheduleView {
  const runs = db.data.scheduleRuns.filter((r) => r.scheduleId === schedule.id).sort((a, b) => b.dueAt.localeCompare(a.dueAt));
  const latestDue = runs[0]?.dueAt;
  return {
    ...schedule,
    imageLabel: 'group' in schedule.target && !schedule.image.includes(HOST_PLACEHOLDER) ? `${schedule.image}-${HOST_PLACEHOLDER}` : schedule.image,
    description: describeSpec(schedule.spec),
    targetLabel: describeTarget(schedule.target),
    nextRunAt: nextRun(schedule.spec, now).toISOString(),
    lastRuns: latestDue ? runs.filter((r) => r.dueAt === latestDue) : [],
  };
}

/** Runs kept per schedule: enough for the protection view's history, bounded so the database does not grow without end. */
export const RUNS_KEPT_PER_SCHEDULE = 200;

export function pruneRuns(db: Database, scheduleId: string): void {
  const mine = db.data.scheduleRuns.filter((r) => r.scheduleId === scheduleId);
  if (mine.length <= RUNS_KEPT_PER_SCHEDULE) return;
  const keep = new Set(mine.sort((a, b) => b.dueAt.localeCompare(a.dueAt)).slice(0, RUNS_KEPT_PER_SCHEDULE));
  db.data.scheduleRuns = db.data.scheduleRuns.filter((r) => r.scheduleId !== scheduleId || keep.has(r));
}
