/**
 * When a backup schedule fires, and how old a host's last good backup may get before it counts
 * as overdue. Pure: no clock and no I/O; times are local wall-clock times (the appliance's TZ),
 * as a technician means "every day at 02:00".
 */
import { CronError, cronNext, cronPrevious, parseCron, type CronExpression } from '../lib/cron.js';

export const WEEKDAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
export type Weekday = (typeof WEEKDAYS)[number];

export type ScheduleSpec =
  | { readonly kind: 'daily'; readonly time: string }
  | { readonly kind: 'weekly'; readonly day: Weekday; readonly time: string }
  | { readonly kind: 'cron'; readonly expression: string };

/** How long after its due time a run may still start (the PC may take a while to wake and boot). */
export const DEFAULT_WINDOW_MINUTES = 120;

/** Time allowed on top of the longest gap between runs before a host counts as overdue: the capture itself. */
export const OVERDUE_GRACE_MS = 60 * 60 * 1000;

export class ScheduleSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScheduleSpecError';
  }
}

function parseTime(time: string): { h: number; m: number } {
  const match = /^(\d{1,2}):(\d{2})$/.exec(time.trim());
  const h = match ? Number(match[1]) : NaN;
  const m = match ? Number(match[2]) : NaN;
  if (!match || h > 23 || m > 59) throw new ScheduleSpecError(`"${time}" is not a time of day: use HH:MM, 24-hour (e.g. 02:30 or 22:00)`);
  return { h, m };
}

/** A weekday from "mon", "Monday", "1" (0 and 7 are Sunday, as in cron). */
export function parseWeekday(text: string): Weekday {
  const t = text.trim().toLowerCase();
  if (/^[0-7]$/.test(t)) return WEEKDAYS[Number(t) % 7];
  const m = /^(sun|mon|tue|wed|thu|fri|sat)(day|sday|nesday|rsday|urday)?$/.exec(t);
  if (!m) throw new ScheduleSpecError(`"${text}" is not a day of the week: use mon, tue, wed, thu, fri, sat or sun`);
  return m[1] as Weekday;
}

/** The spec as a cron expression (daily and weekly are cron with one time). */
export function specToCron(spec: ScheduleSpec): CronExpression {
  try {
    switch (spec.kind) {
      case 'daily': {
        const { h, m } = parseTime(spec.time);
        return parseCron(`${m} ${h} * * *`);
      }
      case 'weekly': {
        const { h, m } = parseTime(spec.time);
        return parseCron(`${m} ${h} * * ${WEEKDAYS.indexOf(parseWeekday(spec.day))}`);
      }
      case 'cron':
        return parseCron(spec.expression);
      default:
        throw new ScheduleSpecError(`unknown schedule kind "${String((spec as { kind?: unknown }).kind)}": use daily, weekly or cron`);
    }
  } catch (e) {
    if (e instanceof CronError) throw new ScheduleSpecError(e.message);
    throw e;
  }
}

/**
 * A spec from its parts as the CLI and API take them, normalised (time as HH:MM, day as mon…),
 * or a ScheduleSpecError saying what is wrong. Exactly one of daily/weekly/cron must be given.
 */
export function makeSpec(input: { daily?: string; weekly?: { day: string; time: string }; cron?: string }): ScheduleSpec {
  const given = [input.daily, input.weekly, input.cron].filter((x) => x !== undefined).length;
  if (given !== 1) throw new ScheduleSpecError('give exactly one of --daily HH:MM, --weekly DAY HH:MM or --cron "m h dom mon dow"');
  let spec: ScheduleSpec;
  if (input.daily !== undefined) {
    const { h, m } = parseTime(input.daily);
    spec = { kind: 'daily', time: `${pad(h)}:${pad(m)}` };
  } else if (input.weekly !== undefined) {
    const { h, m } = parseTime(input.weekly.time);
    spec = { kind: 'weekly', day: parseWeekday(input.weekly.day), time: `${pad(h)}:${pad(m)}` };
  } else {
    spec = { kind: 'cron', expression: String(input.cron).trim().replace(/\s+/g, ' ') };
  }
  specToCron(spec);
  return spec;
}

function pad(n: number): string {
  return String(n).padStart(2, '0');
}

/** "daily at 02:00", "weekly on mon at 22:30", "cron 0 3 * * 1-5". */
export function describeSpec(spec: ScheduleSpec): string {
  switch (spec.kind) {
    case 'daily':
      return `daily at ${spec.time}`;
    case 'weekly':
      return `weekly on ${spec.day} at ${spec.time}`;
    case 'cron':
      return `cron ${spec.expression}`;
  }
}

/** The first time strictly after `after` at which the schedule is due. */
export function nextRun(spec: ScheduleSpec, after: Date): Date {
  return cronNext(specToCron(spec), after);
}

/** The last time at or before `at` at which the schedule was due. */
export function previousRun(spec: ScheduleSpec, at: Date): Date {
  return cronPrevious(specToCron(spec), at);
}

/** A fixed reference so overdueAfter is a function of the spec alone (and of the time zone). */
const GAP_REFERENCE = new Date(2025, 0, 1);
const GAP_SAMPLE_RUNS = 800;
const GAP_SAMPLE_DAYS = 400;

/**
 * The longest time between two consecutive runs, sampled from a fixed reference over 400 days or
 * 800 runs, whichever ends first: a daily run's DST day (25 h) and a monthly run's 31-day months count.
 */
export function longestGapMs(spec: ScheduleSpec): number {
  const cron = specToCron(spec);
  const end = GAP_REFERENCE.getTime() + GAP_SAMPLE_DAYS * 86_400_000;
  let prev = cronNext(cron, GAP_REFERENCE);
  let longest = 0;
  for (let i = 0; i < GAP_SAMPLE_RUNS; i++) {
    const next = cronNext(cron, prev);
    longest = Math.max(longest, next.getTime() - prev.getTime());
    prev = next;
    if (prev.getTime() > end) break;
  }
  return longest;
}

/**
 * How old (ms) a host's last good backup may be before the host is overdue: the longest gap
 * between two runs, plus the run's window (the PC may start late), plus an hour for the capture.
 */
export function overdueAfter(spec: ScheduleSpec, windowMinutes: number = DEFAULT_WINDOW_MINUTES): number {
  return longestGapMs(spec) + windowMinutes * 60_000 + OVERDUE_GRACE_MS;
}
