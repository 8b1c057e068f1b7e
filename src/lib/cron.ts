/**
 * Standard five-field cron expressions ("m h dom mon dow"), as Vixie cron reads them, and the
 * next/previous time one fires in the process's local time zone.
 *
 * Syntax: `*`, numbers, ranges `a-b`, steps (`*` or `a-b` followed by `/n`, and `a/n`: a to the field's end),
 * lists `a,b-c`, month names jan-dec, day names sun-sat, day of week 0-7 (0 and 7 are Sunday),
 * and the macros @yearly/@annually, @monthly, @weekly, @daily/@midnight, @hourly.
 *
 * Day matching follows Vixie cron: when both day of month and day of week are restricted
 * (neither field starts with `*`), a day matches if EITHER matches; otherwise both must.
 *
 * Daylight saving time: fire times are wall-clock times. A wall time that does not exist on a
 * spring-forward day (02:30 when clocks jump 02:00 → 03:00) fires at the instant that wall time
 * maps to (03:30), so a nightly backup is not lost that day; a wall time that occurs twice on a
 * fall-back day fires once, at its first occurrence.
 */

export interface CronExpression {
  /** The expression as given (macros kept as written). */
  readonly source: string;
  readonly minutes: readonly number[];
  readonly hours: readonly number[];
  readonly daysOfMonth: ReadonlySet<number>;
  readonly months: ReadonlySet<number>;
  /** 0-6, Sunday = 0 (a 7 in the expression is stored as 0). */
  readonly daysOfWeek: ReadonlySet<number>;
  readonly domStar: boolean;
  readonly dowStar: boolean;
}

export class CronError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CronError';
  }
}

const MONTH_NAMES = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

const MACROS: Readonly<Record<string, string>> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};

interface FieldSpec {
  readonly label: string;
  readonly min: number;
  readonly max: number;
  readonly names?: readonly string[];
  /** Where names[0] counts from (months: 1, days: 0). */
  readonly nameBase?: number;
}

const FIELDS: readonly FieldSpec[] = [
  { label: 'minute', min: 0, max: 59 },
  { label: 'hour', min: 0, max: 23 },
  { label: 'day of month', min: 1, max: 31 },
  { label: 'month', min: 1, max: 12, names: MONTH_NAMES, nameBase: 1 },
  { label: 'day of week', min: 0, max: 7, names: DAY_NAMES, nameBase: 0 },
];

function parseValue(text: string, field: FieldSpec): number {
  const lower = text.toLowerCase();
  if (field.names) {
    const i = field.names.indexOf(lower);
    if (i >= 0) return i + (field.nameBase ?? 0);
  }
  if (!/^\d+$/.test(text)) {
    const names = field.names ? ` or a name (${field.names.join(', ')})` : '';
    throw new CronError(`"${text}" is not a valid ${field.label}: use a number ${field.min}-${field.max}${names}`);
  }
  const n = Number(text);
  if (n < field.min || n > field.max) throw new CronError(`${field.label} ${n} is out of range: use ${field.min}-${field.max}`);
  return n;
}

function parseField(text: string, field: FieldSpec): Set<number> {
  const values = new Set<number>();
  for (const part of text.split(',')) {
    if (part === '') throw new CronError(`the ${field.label} field "${text}" has an empty list item`);
    const [rangeText, stepText, extra] = part.split('/');
    if (extra !== undefined) throw new CronError(`"${part}" has more than one "/" in the ${field.label} field`);
    let step = 1;
    if (stepText !== undefined) {
      if (!/^\d+$/.test(stepText) || Number(stepText) < 1) throw new CronError(`the step in "${part}" (${field.label}) must be a whole number of 1 or more`);
      step = Number(stepText);
    }
    let from: number;
    let to: number;
    if (rangeText === '*') {
      from = field.min;
      to = field.max;
    } else if (rangeText.includes('-')) {
      const [a, b, more] = rangeText.split('-');
      if (more !== undefined || a === '' || b === '') throw new CronError(`"${rangeText}" is not a range in the ${field.label} field (expected a-b)`);
      from = parseValue(a, field);
      to = parseValue(b, field);
      if (from > to) throw new CronError(`the ${field.label} range "${rangeText}" runs backwards; write the smaller value first`);
    } else {
      from = parseValue(rangeText, field);
      // "a/n" means from a to the end of the field, as Vixie cron and cronie read it.
      to = stepText !== undefined ? field.max : from;
    }
    for (let v = from; v <= to; v += step) values.add(v);
  }
  return values;
}

const DAYS_IN_MONTH_MAX = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** Parse a cron expression; throws CronError saying which field is wrong and why. */
export function parseCron(input: string): CronExpression {
  const source = input.trim();
  const expanded = MACROS[source.toLowerCase()] ?? source;
  if (expanded.startsWith('@')) throw new CronError(`unknown cron macro "${source}": use ${Object.keys(MACROS).join(', ')} or five fields`);
  const parts = expanded.split(/\s+/).filter((p) => p !== '');
  if (parts.length !== 5) {
    throw new CronError(`a cron expression has five fields "minute hour day-of-month month day-of-week" (e.g. "30 2 * * 1-5"); "${source}" has ${parts.length}`);
  }
  const sets = parts.map((p, i) => parseField(p, FIELDS[i]));
  const dow = new Set([...sets[4]].map((d) => (d === 7 ? 0 : d)));
  const expr: CronExpression = {
    source,
    minutes: [...sets[0]].sort((a, b) => a - b),
    hours: [...sets[1]].sort((a, b) => a - b),
    daysOfMonth: sets[2],
    months: sets[3],
    daysOfWeek: dow,
    domStar: parts[2].startsWith('*'),
    dowStar: parts[4].startsWith('*'),
  };
  // Vixie cron accepts "0 0 30 2 *" and never runs it; a backup schedule that never runs is a mistake.
  if (!expr.domStar && expr.dowStar) {
    const possible = [...expr.months].some((m) => [...expr.daysOfMonth].some((d) => d <= DAYS_IN_MONTH_MAX[m - 1]));
    if (!possible) throw new CronError(`"${source}" never fires: none of its months has that day of the month`);
  }
  return expr;
}

function dayMatches(expr: CronExpression, year: number, monthIndex: number, day: number): boolean {
  if (!expr.months.has(monthIndex + 1)) return false;
  const domMatch = expr.daysOfMonth.has(day);
  const dowMatch = expr.daysOfWeek.has(new Date(year, monthIndex, day).getDay());
  return expr.domStar || expr.dowStar ? domMatch && dowMatch : domMatch || dowMatch;
}

/** The instant a wall time maps to, or null when it falls on another day (a gap at midnight). */
function wallTime(year: number, monthIndex: number, day: number, h: number, m: number): number | null {
  // new Date() moves a wall time that falls in a spring-forward gap forward by the gap, and takes
  // the first occurrence of one that a fall-back repeats.
  const t = new Date(year, monthIndex, day, h, m, 0, 0);
  return t.getDate() === day ? t.getTime() : null;
}

/** A spring-forward gap moves a wall time forward by at most this many hours (1 almost everywhere). */
const MAX_GAP_HOURS = 2;

/** The first fire time on a matching local day that is after `limit`, if any. */
function firstOnDayAfter(expr: CronExpression, y: number, mo: number, d: number, limit: number, fromHour: number): number | undefined {
  let best: number | undefined;
  let bestHour = 0;
  for (const h of expr.hours) {
    if (h < fromHour - MAX_GAP_HOURS) continue;
    // Wall times are in order except across a gap, which shifts by at most MAX_GAP_HOURS.
    if (best !== undefined && h > bestHour + MAX_GAP_HOURS) break;
    for (const m of expr.minutes) {
      const t = wallTime(y, mo, d, h, m);
      if (t === null || t <= limit) continue;
      if (best === undefined || t < best) {
        best = t;
        bestHour = h;
      }
      break;
    }
  }
  return best;
}

/** The last fire time on a matching local day that is at or before `limit`, if any. */
function lastOnDayUpTo(expr: CronExpression, y: number, mo: number, d: number, limit: number, toHour: number): number | undefined {
  let best: number | undefined;
  let bestHour = 0;
  for (let i = expr.hours.length - 1; i >= 0; i--) {
    const h = expr.hours[i];
    if (h > toHour) continue;
    if (best !== undefined && h < bestHour - MAX_GAP_HOURS) break;
    for (let j = expr.minutes.length - 1; j >= 0; j--) {
      const t = wallTime(y, mo, d, h, expr.minutes[j]);
      if (t === null || t > limit) continue;
      if (best === undefined || t > best) {
        best = t;
        bestHour = h;
      }
      break;
    }
  }
  return best;
}

/** Days searched before giving up: Feb 29 on a Monday can be 28 years away (leap-year and weekday cycles). */
const SEARCH_DAYS = 366 * 29;

/** The first instant strictly after `after` at which the expression fires. */
export function cronNext(expr: CronExpression, after: Date): Date {
  const limit = after.getTime();
  for (let i = 0; i < SEARCH_DAYS; i++) {
    const day = new Date(after.getFullYear(), after.getMonth(), after.getDate() + i);
    const y = day.getFullYear();
    const mo = day.getMonth();
    const d = day.getDate();
    if (!dayMatches(expr, y, mo, d)) continue;
    const hit = firstOnDayAfter(expr, y, mo, d, limit, i === 0 ? after.getHours() : 0);
    if (hit !== undefined) return new Date(hit);
  }
  throw new CronError(`"${expr.source}" does not fire within ${Math.floor(SEARCH_DAYS / 366)} years`);
}

/** The last instant at or before `at` at which the expression fired. */
export function cronPrevious(expr: CronExpression, at: Date): Date {
  const limit = at.getTime();
  for (let i = 0; i < SEARCH_DAYS; i++) {
    const day = new Date(at.getFullYear(), at.getMonth(), at.getDate() - i);
    const y = day.getFullYear();
    const mo = day.getMonth();
    const d = day.getDate();
    if (!dayMatches(expr, y, mo, d)) continue;
    const hit = lastOnDayUpTo(expr, y, mo, d, limit, i === 0 ? at.getHours() : 23);
    if (hit !== undefined) return new Date(hit);
  }
  throw new CronError(`"${expr.source}" did not fire within ${Math.floor(SEARCH_DAYS / 366)} years before ${at.toISOString()}`);
}
