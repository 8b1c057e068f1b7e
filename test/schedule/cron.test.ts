import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { CronError, cronNext, cronPrevious, parseCron } from '../../src/lib/cron.js';

/** Local wall time as "YYYY-MM-DD HH:MM" (the zone is the process's TZ, set per block). */
function wall(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}
function at(text: string): Date {
  const [date, time] = text.split(' ');
  const [y, mo, d] = date.split('-').map(Number);
  const [h, mi] = time.split(':').map(Number);
  return new Date(y, mo - 1, d, h, mi);
}

function withTz(tz: string): void {
  let saved: string | undefined;
  beforeAll(() => {
    saved = process.env.TZ;
    process.env.TZ = tz;
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.TZ;
    else process.env.TZ = saved;
  });
}

describe('cron: next fire time (UTC)', () => {
  withTz('UTC');
  const table: Array<[expr: string, after: string, next: string]> = [
    ['* * * * *', '2026-01-01 10:00', '2026-01-01 10:01'],
    ['* * * * *', '2026-12-31 23:59', '2027-01-01 00:00'],
    ['30 2 * * *', '2026-03-10 02:30', '2026-03-11 02:30'],
    ['30 2 * * *', '2026-03-10 02:29', '2026-03-10 02:30'],
    ['*/15 * * * *', '2026-03-10 10:16', '2026-03-10 10:30'],
    ['5-10/2 * * * *', '2026-03-10 10:07', '2026-03-10 10:09'],
    ['10/20 * * * *', '2026-03-10 10:31', '2026-03-10 10:50'],
    ['0 9-17/4 * * *', '2026-03-10 13:00', '2026-03-10 17:00'],
    ['0 22 * * 1-5', '2026-03-13 22:00', '2026-03-16 22:00'], // Fri → Mon
    ['0 22 * * mon,FRI', '2026-03-10 12:00', '2026-03-13 22:00'],
    ['0 0 * * 7', '2026-03-10 12:00', '2026-03-15 00:00'], // 7 is Sunday
    ['0 0 1 jan-mar/2 *', '2026-01-01 00:00', '2026-03-01 00:00'],
    ['0 0 31 * *', '2026-04-01 00:00', '2026-05-31 00:00'], // April has no 31st
    ['0 0 29 2 *', '2026-01-01 00:00', '2028-02-29 00:00'],
    // Vixie rule: both day fields restricted → either matches (1st of month OR a Friday).
    ['0 12 1 * fri', '2026-03-02 00:00', '2026-03-06 12:00'],
    ['0 12 1 * fri', '2026-03-28 00:00', '2026-04-01 12:00'],
    // ...but with one starting with "*", both must: */2 days of month that are Fridays.
    ['0 12 */2 * fri', '2026-03-01 00:00', '2026-03-13 12:00'],
    ['@daily', '2026-03-10 00:00', '2026-03-11 00:00'],
    ['@weekly', '2026-03-10 00:00', '2026-03-15 00:00'],
    ['@monthly', '2026-03-10 00:00', '2026-04-01 00:00'],
  ];
  it.each(table)('%s after %s is %s', (expr, after, next) => {
    expect(wall(cronNext(parseCron(expr), at(after)))).toBe(next);
  });

  const previous: Array<[expr: string, atTime: string, prev: string]> = [
    ['30 2 * * *', '2026-03-10 02:30', '2026-03-10 02:30'],
    ['30 2 * * *', '2026-03-10 02:29', '2026-03-09 02:30'],
    ['0 22 * * 1-5', '2026-03-16 21:00', '2026-03-13 22:00'],
    ['*/15 * * * *', '2026-03-10 10:16', '2026-03-10 10:15'],
    ['0 0 29 2 *', '2027-01-01 00:00', '2024-02-29 00:00'],
  ];
  it.each(previous)('previous of %s at %s is %s', (expr, atTime, prev) => {
    expect(wall(cronPrevious(parseCron(expr), at(atTime)))).toBe(prev);
  });
});

describe('cron: daylight saving time (Europe/Berlin)', () => {
  withTz('Europe/Berlin');
  it('a wall time skipped by spring-forward fires once, at the instant it maps to', () => {
    // 2026-03-29: clocks jump 02:00 → 03:00.
    const fired = cronNext(parseCron('30 2 * * *'), at('2026-03-29 01:00'));
    expect(wall(fired)).toBe('2026-03-29 03:30');
    expect(wall(cronNext(parseCron('30 2 * * *'), fired))).toBe('2026-03-30 02:30');
  });
  it('a wall time repeated by fall-back fires once', () => {
    // 2026-10-25: clocks go 03:00 → 02:00; 02:30 occurs twice.
    const expr = parseCron('30 2 * * *');
    const first = cronNext(expr, at('2026-10-25 00:00'));
    expect(wall(first)).toBe('2026-10-25 02:30');
    const again = cronNext(expr, first);
    expect(wall(again)).toBe('2026-10-26 02:30');
    // An hour later by the clock on the wall it is 02:30 again; it does not fire a second time.
    expect(wall(cronNext(expr, new Date(first.getTime() + 3_600_000)))).toBe('2026-10-26 02:30');
    expect(again.getTime() - first.getTime()).toBe(25 * 3_600_000);
  });
  it('every 15 minutes across spring-forward: no time is invented, none is lost', () => {
    const expr = parseCron('*/15 * * * *');
    const seen: string[] = [];
    let t = at('2026-03-29 01:30');
    for (let i = 0; i < 4; i++) {
      t = cronNext(expr, t);
      seen.push(`${wall(t)} +${t.getTimezoneOffset()}`);
    }
    expect(seen).toEqual(['2026-03-29 01:45 +-60', '2026-03-29 03:00 +-120', '2026-03-29 03:15 +-120', '2026-03-29 03:30 +-120']);
  });
  it('previous across fall-back finds the first 02:30', () => {
    const first = cronNext(parseCron('30 2 * * *'), at('2026-10-25 00:00'));
    expect(cronPrevious(parseCron('30 2 * * *'), new Date(first.getTime() + 2 * 3_600_000)).getTime()).toBe(first.getTime());
  });
});

describe('cron: refusals say what is wrong', () => {
  const bad: Array<[expr: string, message: RegExp]> = [
    ['* * * *', /five fields/],
    ['60 * * * *', /minute 60 is out of range/],
    ['* 24 * * *', /hour 24 is out of range/],
    ['* * 0 * *', /day of month 0 is out of range/],
    ['* * * 13 *', /month 13/],
    ['* * * * 8', /day of week 8/],
    ['* * * foo *', /"foo" is not a valid month/],
    ['*/0 * * * *', /step/],
    ['5-1 * * * *', /backwards/],
    ['1,,2 * * * *', /empty list item/],
    ['0 0 30 2 *', /never fires/],
    ['@sometimes', /unknown cron macro/],
  ];
  it.each(bad)('%s', (expr, message) => {
    expect(() => parseCron(expr)).toThrow(CronError);
    expect(() => parseCron(expr)).toThrow(message);
  });
});
