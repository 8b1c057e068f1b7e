import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import {
  DEFAULT_WINDOW_MINUTES, OVERDUE_GRACE_MS, ScheduleSpecError, describeSpec, longestGapMs, makeSpec, nextRun, overdueAfter, parseWeekday, previousRun,
} from '../../src/domain/schedule-time.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

describe('schedule times (Europe/Berlin)', () => {
  let saved: string | undefined;
  beforeAll(() => {
    saved = process.env.TZ;
    process.env.TZ = 'Europe/Berlin';
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.TZ;
    else process.env.TZ = saved;
  });

  it('daily HH:MM: next is today if still ahead, else tomorrow; previous is the last one at or before', () => {
    const spec = makeSpec({ daily: '2:05' });
    expect(spec).toEqual({ kind: 'daily', time: '02:05' });
    expect(nextRun(spec, new Date(2026, 5, 10, 1, 0))).toEqual(new Date(2026, 5, 10, 2, 5));
    expect(nextRun(spec, new Date(2026, 5, 10, 2, 5))).toEqual(new Date(2026, 5, 11, 2, 5));
    expect(previousRun(spec, new Date(2026, 5, 10, 2, 5))).toEqual(new Date(2026, 5, 10, 2, 5));
    expect(previousRun(spec, new Date(2026, 5, 10, 2, 4))).toEqual(new Date(2026, 5, 9, 2, 5));
  });

  it('weekly DAY HH:MM accepts mon, Monday and 1 alike', () => {
    for (const day of ['mon', 'Monday', '1']) {
      const spec = makeSpec({ weekly: { day, time: '22:30' } });
      expect(spec).toEqual({ kind: 'weekly', day: 'mon', time: '22:30' });
      // 2026-06-10 is a Wednesday.
      expect(nextRun(spec, new Date(2026, 5, 10, 12, 0))).toEqual(new Date(2026, 5, 15, 22, 30));
    }
    expect(parseWeekday('7')).toBe('sun');
  });

  it('cron specs go through the cron parser', () => {
    const spec = makeSpec({ cron: '0  3 * * 1-5' });
    expect(spec).toEqual({ kind: 'cron', expression: '0 3 * * 1-5' });
    expect(describeSpec(spec)).toBe('cron 0 3 * * 1-5');
    expect(nextRun(spec, new Date(2026, 5, 12, 4, 0))).toEqual(new Date(2026, 5, 15, 3, 0));
  });

  it('overdue allows the longest gap between runs plus the window and an hour', () => {
    const daily = makeSpec({ daily: '02:00' });
    // The sample covers the fall-back day: a daily run can be 25 hours apart.
    expect(longestGapMs(daily)).toBe(25 * HOUR);
    expect(overdueAfter(daily)).toBe(25 * HOUR + DEFAULT_WINDOW_MINUTES * 60_000 + OVERDUE_GRACE_MS);
    expect(longestGapMs(makeSpec({ weekly: { day: 'sun', time: '02:30' } }))).toBe(7 * DAY + HOUR);
    expect(longestGapMs(makeSpec({ cron: '0 0 1 * *' }))).toBe(31 * DAY + HOUR);
    expect(longestGapMs(makeSpec({ cron: '*/10 * * * *' }))).toBe(10 * 60_000);
    expect(overdueAfter(daily, 30)).toBe(25 * HOUR + 30 * 60_000 + OVERDUE_GRACE_MS);
  });

  const bad: Array<[input: Parameters<typeof makeSpec>[0], message: RegExp]> = [
    [{}, /exactly one of/],
    [{ daily: '02:00', cron: '* * * * *' }, /exactly one of/],
    [{ daily: '24:00' }, /not a time of day/],
    [{ daily: '2pm' }, /not a time of day/],
    [{ weekly: { day: 'someday', time: '02:00' } }, /not a day of the week/],
    [{ cron: '61 * * * *' }, /minute 61 is out of range/],
  ];
  it.each(bad)('refuses %j', (input, message) => {
    expect(() => makeSpec(input)).toThrow(ScheduleSpecError);
    expect(() => makeSpec(input)).toThrow(message);
  });
});
