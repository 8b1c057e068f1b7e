/**
 * Which versions of an image a retention policy keeps: pure, no I/O.
 *
 * The rules mean what restic's `forget --keep-*` means (restic internal/data/snapshot_policy.go,
 * ApplyPolicy), followed exactly:
 * - The versions are walked newest first. Each rule is evaluated on its own, and a version is kept
 *   when any rule keeps it (the results are ORed).
 * - keep-last N keeps the N newest versions.
 * - keep-hourly/daily/weekly/monthly N: a version is kept when its hour/day/ISO week/month differs
 *   from that of the last version this rule kept, until the rule has kept N versions. So each of
 *   the N newest periods that hold a version keeps its newest version; periods without a version do
 *   not count.
 * - When a rule still has room after the walk reaches the oldest version, the oldest version is
 *   kept for it too (restic ≥ 0.17, "oldest daily snapshot"): a short history keeps its beginning.
 *
 * Proxmox Backup Server differs in one point: its rules run in order (last, hourly, daily, …) and a
 * period already covered by a version an earlier rule kept does not count against a later rule, so
 * `keep-last 3 keep-daily 2` keeps two more days there, none here when the last three span two
 * days. We follow restic: it is the one whose documented examples and test tables the tests
 * reproduce, and a rule's count then reads the same whatever other rules say.
 *
 * Periods are those of the server's local time zone (a PC backed up at 23:30 belongs to that
 * evening's day, as a technician reads the dates on the page), or UTC when asked (tests).
 *
 * Beyond restic: an empty policy keeps everything (restic refuses to run one), a protected version
 * or one a task uses is always kept, and so is the newest version: an image never loses its last
 * good version to a policy, whatever the numbers say (keep-hourly 1 of a version captured in the
 * future by a PC with a wrong clock would otherwise pick an older one).
 */

export interface RetentionPolicy {
  readonly keepLast?: number;
  readonly keepHourly?: number;
  readonly keepDaily?: number;
  readonly keepWeekly?: number;
  readonly keepMonthly?: number;
}

export const POLICY_KEYS = ['keepLast', 'keepHourly', 'keepDaily', 'keepWeekly', 'keepMonthly'] as const;
export type PolicyKey = (typeof POLICY_KEYS)[number];

/** The largest count a rule takes: more than any store holds, small enough to stay an integer everywhere. */
export const MAX_KEEP = 100_000;

export class RetentionPolicyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RetentionPolicyError';
  }
}

/** The kebab-case flag of a policy key (`keepDaily` → `keep-daily`), as the CLI and messages name it. */
export function policyFlag(key: PolicyKey): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/**
 * A policy from untrusted input (JSON, a stored file): each present key a whole number 0…MAX_KEEP;
 * 0 switches the rule off and is dropped. Unknown keys are refused so a typo is not a silent no-op.
 */
export function parsePolicy(raw: unknown): RetentionPolicy {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new RetentionPolicyError('a retention policy is an object such as {"keepDaily": 7}');
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (!(POLICY_KEYS as readonly string[]).includes(k)) throw new RetentionPolicyError(`"${k.slice(0, 40)}" is not a retention rule; the rules are ${POLICY_KEYS.join(', ')}`);
    if (v === undefined || v === null) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_KEEP) {
      throw new RetentionPolicyError(`--${policyFlag(k as PolicyKey)} takes a whole number from 0 to ${MAX_KEEP}, not "${String(v).slice(0, 40)}"`);
    }
    if (v > 0) out[k] = v;
  }
  return out as RetentionPolicy;
}

export function isEmptyPolicy(p: RetentionPolicy): boolean {
  return POLICY_KEYS.every((k) => !p[k]);
}

/** "keep-last 3, keep-daily 7", or "no rules (keeps everything)". */
export function describePolicy(p: RetentionPolicy): string {
  const parts = POLICY_KEYS.filter((k) => p[k]).map((k) => `${policyFlag(k)} ${p[k]}`);
  return parts.length > 0 ? parts.join(', ') : 'no rules (keeps everything)';
}

export interface RetentionInput {
  readonly version: number;
  /** When the version was committed (ISO 8601 or a Date). */
  readonly created: string | Date;
  readonly protected?: boolean;
  /** Why tasks need this version ("deploy task 3f… for aa:bb:…"); non-empty keeps it. */
  readonly inUse?: readonly string[];
}

export type KeepRule = 'newest' | 'protected' | 'in use' | 'no policy' | 'last' | 'hourly' | 'daily' | 'weekly' | 'monthly';

export interface KeepReason {
  readonly rule: KeepRule;
  /** For people: "last 3", "daily 2026-12-01", "protected", "in use by deploy task …". */
  readonly text: string;
}

export interface RetentionDecision {
  readonly version: number;
  readonly created: string;
  readonly keep: boolean;
  /** Empty exactly when the version goes. */
  readonly reasons: readonly KeepReason[];
}

export interface RetentionOptions {
  /** Periods in UTC instead of the server's local time zone. */
  readonly utc?: boolean;
}

interface Parts {
  readonly y: number;
  readonly m: number;
  readonly d: number;
  readonly h: number;
  readonly dow: number;
}

function partsOf(t: Date, utc: boolean): Parts {
  return utc
    ? { y: t.getUTCFullYear(), m: t.getUTCMonth() + 1, d: t.getUTCDate(), h: t.getUTCHours(), dow: t.getUTCDay() }
    : { y: t.getFullYear(), m: t.getMonth() + 1, d: t.getDate(), h: t.getHours(), dow: t.getDay() };
}

const p2 = (n: number): string => String(n).padStart(2, '0');

/** ISO 8601 week of a calendar date: weeks start on Monday, week 1 holds the year's first Thursday. */
export function isoWeek(y: number, m: number, d: number): { year: number; week: number } {
  // Calendar arithmetic on a UTC date, whatever zone the date came from.
  const date = new Date(Date.UTC(y, m - 1, d));
  const dow = (date.getUTCDay() + 6) % 7; // Monday 0 … Sunday 6
  date.setUTCDate(date.getUTCDate() - dow + 3); // the Thursday of this week decides its year
  const year = date.getUTCFullYear();
  const firstThursday = new Date(Date.UTC(year, 0, 4));
  firstThursday.setUTCDate(firstThursday.getUTCDate() - ((firstThursday.getUTCDay() + 6) % 7) + 3);
  const week = 1 + Math.round((date.getTime() - firstThursday.getTime()) / (7 * 86_400_000));
  return { year, week };
}

type Bucket = (p: Parts) => string;

const BUCKETS: ReadonlyArray<{ key: PolicyKey; rule: KeepRule; bucket: Bucket | null }> = [
  { key: 'keepLast', rule: 'last', bucket: null },
  { key: 'keepHourly', rule: 'hourly', bucket: (p) => `${p.y}-${p2(p.m)}-${p2(p.d)} ${p2(p.h)}:00` },
  { key: 'keepDaily', rule: 'daily', bucket: (p) => `${p.y}-${p2(p.m)}-${p2(p.d)}` },
  {
    key: 'keepWeekly', rule: 'weekly', bucket: (p) => {
      const w = isoWeek(p.y, p.m, p.d);
      return `${w.year}-W${p2(w.week)}`;
    },
  },
  { key: 'keepMonthly', rule: 'monthly', bucket: (p) => `${p.y}-${p2(p.m)}` },
];

function timeOf(created: string | Date): number {
  const t = created instanceof Date ? created.getTime() : Date.parse(created);
  if (Number.isNaN(t)) throw new RetentionPolicyError(`"${String(created).slice(0, 40)}" is not a date`);
  return t;
}

/**
 * One decision per version, in the order given. The walk is newest first: by commit time, and
 * for equal times the higher version number (committed later) first.
 */
export function applyRetention(versions: readonly RetentionInput[], policy: RetentionPolicy, opts: RetentionOptions = {}): RetentionDecision[] {
  const utc = opts.utc === true;
  const order = versions
    .map((v, i) => ({ v, i, t: timeOf(v.created) }))
    .sort((a, b) => b.t - a.t || b.v.version - a.v.version);
  const newest = versions.reduce<number | null>((n, v) => (n === null || v.version > n ? v.version : n), null);
  const empty = isEmptyPolicy(policy);
  const left = BUCKETS.map((b) => policy[b.key] ?? 0);
  const last: Array<string | null> = BUCKETS.map(() => null);
  const reasons = new Map<number, KeepReason[]>();
  order.forEach(({ v, i, t }, nr) => {
    const why: KeepReason[] = [];
    if (v.version === newest) why.push({ rule: 'newest', text: 'newest version' });
    if (v.protected) why.push({ rule: 'protected', text: 'protected' });
    for (const use of v.inUse ?? []) why.push({ rule: 'in use', text: `in use by ${use}` });
    if (empty) why.push({ rule: 'no policy', text: 'no retention rules' });
    const parts = partsOf(new Date(t), utc);
    const oldest = nr === order.length - 1;
    BUCKETS.forEach((b, k) => {
      if (left[k] <= 0) return;
      // keep-last puts every version in a bucket of its own, as restic's `always` does.
      const val = b.bucket ? b.bucket(parts) : `#${nr}`;
      if (val === last[k] && !oldest) return;
      const count = policy[b.key] ?? 0;
      const text = b.bucket ? `${b.rule} ${val}` : `last ${count}`;
      why.push({ rule: b.rule, text: val === last[k] ? `oldest ${text}` : text });
      last[k] = val;
      left[k]--;
    });
    reasons.set(i, why);
  });
  return versions.map((v, i) => {
    const why = reasons.get(i) ?? [];
    return { version: v.version, created: new Date(timeOf(v.created)).toISOString(), keep: why.length > 0, reasons: why };
  });
}
