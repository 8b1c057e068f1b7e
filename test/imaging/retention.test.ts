import { describe, expect, it } from 'vitest';
import { applyRetention, describePolicy, isoWeek, parsePolicy, type RetentionInput, type RetentionPolicy } from '../../src/imaging/retention.js';
import { RESTIC_CASES, RESTIC_SNAPSHOTS } from './restic-policy-cases.js';

/** "2014-09-01 10:20:30.1" (UTC, as restic's tables write it) as an ISO time. */
const iso = (t: string): string => `${t.replace(' ', 'T')}Z`;

/** Versions numbered in commit order: by time, equal times in the order listed (as restic's stable sort keeps them). */
function versionsOf(times: readonly string[]): { versions: RetentionInput[]; timeOf: Map<number, string> } {
  const sorted = times.map((t, i) => ({ t, i })).sort((a, b) => Date.parse(iso(a.t)) - Date.parse(iso(b.t)) || b.i - a.i);
  const timeOf = new Map<number, string>();
  const versions = sorted.map(({ t }, n) => {
    timeOf.set(n + 1, t);
    return { version: n + 1, created: iso(t) };
  });
  return { versions, timeOf };
}

/** Kept versions as [time, rules] newest first, the rules as restic names them ("daily", "oldest daily", "last+daily"). */
function kept(times: readonly string[], policy: RetentionPolicy): Array<[string, string]> {
  const { versions, timeOf } = versionsOf(times);
  return applyRetention(versions, policy, { utc: true })
    .filter((d) => d.keep)
    .sort((a, b) => b.version - a.version)
    .map((d) => [
      timeOf.get(d.version) ?? '?',
      d.reasons.filter((r) => r.rule !== 'newest').map((r) => `${r.text.startsWith('oldest ') ? 'oldest ' : ''}${r.rule}`).join('+'),
    ]);
}

describe('retention: restic forget test tables', () => {
  it.each(RESTIC_CASES.map((c) => [c.restic, describePolicy(c.policy), c] as const))('restic table %i (%s): same snapshots kept for the same reasons', (_n, _d, c) => {
    const got = kept(RESTIC_SNAPSHOTS, c.policy);
    // Equal times (restic's table repeats some) make the order among them arbitrary: compare sorted.
    const norm = (rows: ReadonlyArray<readonly [string, string]>): string[] => rows.map((r) => `${r[0]} ${r[1]}`).sort();
    expect(norm(got)).toEqual(norm(c.kept));
  });
});

describe('retention: restic documentation examples', () => {
  // doc/060_forget.rst "Removing snapshots according to a policy": backups every weekday for two
  // weeks, an extra one on Fridays, none on the second Wednesday.
  const twoWeeks = [
    '2025-04-21 11:00:00', '2025-04-22 11:00:00', '2025-04-23 11:00:00', '2025-04-24 11:00:00', '2025-04-25 11:00:00',
    '2025-04-25 23:00:00', '2025-04-28 11:00:00', '2025-04-29 11:00:00', '2025-05-01 11:00:00', '2025-05-02 11:00:00',
    '2025-05-02 23:00:00',
  ];

  it('--keep-daily 5 keeps the newest snapshot of each of the last five days that have one', () => {
    expect(kept(twoWeeks, { keepDaily: 5 }).map((r) => r[0])).toEqual([
      '2025-05-02 23:00:00', '2025-05-01 11:00:00', '2025-04-29 11:00:00', '2025-04-28 11:00:00', '2025-04-25 23:00:00',
    ]);
  });

  it('--keep-last 3 keeps the three newest, whatever their days', () => {
    expect(kept(twoWeeks, { keepLast: 3 })).toEqual([
      ['2025-05-02 23:00:00', 'last'], ['2025-05-02 11:00:00', 'last'], ['2025-05-01 11:00:00', 'last'],
    ]);
  });

  it('--keep-last 3 --keep-daily 2: the rules count on their own and the results are ORed', () => {
    expect(kept(twoWeeks, { keepLast: 3, keepDaily: 2 })).toEqual([
      ['2025-05-02 23:00:00', 'last+daily'], ['2025-05-02 11:00:00', 'last'], ['2025-05-01 11:00:00', 'last+daily'],
    ]);
  });

  it('--keep-weekly 2 keeps the last snapshot of each of the two newest ISO weeks (Monday to Sunday)', () => {
    expect(kept(twoWeeks, { keepWeekly: 2 }).map((r) => r[0])).toEqual(['2025-05-02 23:00:00', '2025-04-25 23:00:00']);
  });

  it('daily backups: --keep-daily 7 --keep-weekly 5 --keep-monthly 12 keep 7 dailies, 4 more weeklies and 11 more month ends', () => {
    // As the doc's hundred-year example, over three years ending on Sunday 2025-11-30, so the seven
    // dailies are exactly one ISO week and the month of the newest backup is covered by it.
    const days: string[] = [];
    for (let t = Date.UTC(2022, 11, 1, 12); t <= Date.UTC(2025, 10, 30, 12); t += 86_400_000) days.push(new Date(t).toISOString().replace('T', ' ').slice(0, 19));
    const got = kept(days, { keepDaily: 7, keepWeekly: 5, keepMonthly: 12 });
    const dates = got.map((r) => r[0].slice(0, 10));
    const dailies = ['2025-11-30', '2025-11-29', '2025-11-28', '2025-11-27', '2025-11-26', '2025-11-25', '2025-11-24'];
    const weeklies = ['2025-11-23', '2025-11-16', '2025-11-09', '2025-11-02'];
    const monthEnds = ['2025-10-31', '2025-09-30', '2025-08-31', '2025-07-31', '2025-06-30', '2025-05-31', '2025-04-30', '2025-03-31', '2025-02-28', '2025-01-31', '2024-12-31'];
    expect(dates).toEqual([...dailies, ...weeklies, ...monthEnds]);
    expect(got[0][1]).toBe('daily+weekly+monthly');
  });
});

describe('retention: what netclone adds', () => {
  const v = (version: number, created: string, extra: Partial<RetentionInput> = {}): RetentionInput => ({ version, created: iso(created), ...extra });

  it('an empty policy keeps every version', () => {
    const d = applyRetention([v(1, '2026-01-01 10:00:00'), v(2, '2026-01-01 11:00:00')], {});
    expect(d.map((x) => x.keep)).toEqual([true, true]);
    expect(d[0].reasons.map((r) => r.rule)).toEqual(['no policy']);
  });

  it('protected and in-use versions are kept with their reasons; the others go', () => {
    const d = applyRetention([
      v(1, '2026-01-01 10:00:00', { protected: true }),
      v(2, '2026-01-02 10:00:00', { inUse: ['deploy task t1 for aa:bb:cc:dd:ee:01'] }),
      v(3, '2026-01-03 10:00:00'),
      v(4, '2026-01-04 10:00:00'),
    ], { keepLast: 1 }, { utc: true });
    expect(d.map((x) => [x.version, x.keep, x.reasons.map((r) => r.text)])).toEqual([
      [1, true, ['protected']],
      [2, true, ['in use by deploy task t1 for aa:bb:cc:dd:ee:01']],
      [3, false, []],
      [4, true, ['newest version', 'last 1']],
    ]);
  });

  it('the newest version is kept even when its clock put it before older versions', () => {
    const d = applyRetention([v(1, '2026-03-01 10:00:00'), v(2, '2026-01-01 10:00:00')], { keepLast: 1 }, { utc: true });
    expect(d.map((x) => [x.version, x.keep])).toEqual([[1, true], [2, true]]);
    expect(d[1].reasons.map((r) => r.rule)).toEqual(['newest']);
  });

  it('reasons name the period: "daily 2026-12-01", "hourly 2026-12-01 14:00", "weekly 2026-W49", "monthly 2026-12"', () => {
    const d = applyRetention([v(1, '2026-12-01 14:10:00'), v(2, '2026-12-02 09:00:00')], { keepHourly: 2, keepDaily: 2, keepWeekly: 1, keepMonthly: 1 }, { utc: true });
    expect(d[0].reasons.map((r) => r.text)).toEqual(['hourly 2026-12-01 14:00', 'daily 2026-12-01']);
    expect(d[1].reasons.map((r) => r.text)).toEqual(['newest version', 'hourly 2026-12-02 09:00', 'daily 2026-12-02', 'weekly 2026-W49', 'monthly 2026-12']);
  });

  it('periods are the server\'s local days unless UTC is asked for', () => {
    // 23:30 UTC and 00:30 UTC the next day: two UTC days; in a zone 3 h ahead, one local day.
    const versions = [v(1, '2026-06-01 23:30:00'), v(2, '2026-06-02 00:30:00')];
    expect(applyRetention(versions, { keepDaily: 5 }, { utc: true }).map((x) => x.keep)).toEqual([true, true]);
    const before = process.env.TZ;
    process.env.TZ = 'Etc/GMT-3'; // UTC+3: both are on 2 June locally
    try {
      expect(applyRetention(versions, { keepDaily: 5 }).map((x) => [x.keep, x.reasons.map((r) => r.text)])).toEqual([
        [true, ['oldest daily 2026-06-02']], [true, ['newest version', 'daily 2026-06-02']],
      ]);
      expect(applyRetention(versions, { keepDaily: 1 }).map((x) => x.keep)).toEqual([false, true]);
    } finally {
      if (before === undefined) delete process.env.TZ;
      else process.env.TZ = before;
    }
  });

  it('ISO weeks: 2026-12-31 is in 2026-W53, 2027-01-04 in 2027-W01, 2024-12-30 in 2025-W01', () => {
    expect(isoWeek(2026, 12, 31)).toEqual({ year: 2026, week: 53 });
    expect(isoWeek(2027, 1, 4)).toEqual({ year: 2027, week: 1 });
    expect(isoWeek(2024, 12, 30)).toEqual({ year: 2025, week: 1 });
    expect(isoWeek(2021, 1, 3)).toEqual({ year: 2020, week: 53 });
  });

  it('parsePolicy drops zeros and refuses unknown rules and bad counts', () => {
    expect(parsePolicy({ keepLast: 3, keepDaily: 0 })).toEqual({ keepLast: 3 });
    expect(() => parsePolicy({ keepYearly: 2 })).toThrow(/not a retention rule/);
    expect(() => parsePolicy({ keepDaily: -1 })).toThrow(/--keep-daily takes a whole number/);
    expect(() => parsePolicy({ keepDaily: 1.5 })).toThrow(/whole number/);
    expect(describePolicy({ keepLast: 3, keepDaily: 7 })).toBe('keep-last 3, keep-daily 7');
  });
});
