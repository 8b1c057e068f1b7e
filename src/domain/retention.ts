/**
 * Pruning images by their retention policy (issue 13), where the tasks are known: which versions
 * tasks still need, the decision (src/imaging/retention.ts), the removal (the store checks protect
 * flags, tasks and the newest version again under its lock), gc, and an event saying what went.
 */
import type { ImageStore } from '../imaging/image-store.js';
import { POLICY_KEYS, applyRetention, describePolicy, parsePolicy, policyFlag, RetentionPolicyError, type RetentionDecision, type RetentionPolicy } from '../imaging/retention.js';
import type { TaskRecord } from './database.js';
import type { EventLog } from './events.js';
import { isActive, type TaskService } from './tasks.js';
import type { Logger } from '../lib/log.js';

export interface RetentionDeps {
  readonly store: ImageStore;
  readonly tasks: TaskService;
  readonly events: EventLog;
  readonly logger: Logger;
  /** The configured keep-versions: the policy of an image that has none (keep-last N). */
  readonly keepVersions: number;
}

/** Where the policy of a prune came from. */
export type PolicySource = 'given' | 'stored' | 'keep-versions';

export interface PruneResult {
  readonly image: string;
  readonly policy: RetentionPolicy;
  readonly policySource: PolicySource;
  readonly dryRun: boolean;
  /** Newest first. */
  readonly decisions: readonly RetentionDecision[];
  /** Versions removed (none on a dry run), ascending. */
  readonly removed: readonly number[];
  /** Versions the policy dropped that were still there to keep when the store removed the others (a task took one meanwhile). */
  readonly spared: readonly number[];
  readonly gc: { readonly removedChunks: number; readonly freedBytes: number } | null;
}

/**
 * The policy the keep flags give (`keep-last: "3"` from the CLI, `keepLast: 3` through JSON), or
 * undefined when none is given. Throws RetentionPolicyError for a count that is not a whole number.
 */
export function policyFromFlags(args: Readonly<Record<string, unknown>>): RetentionPolicy | undefined {
  const raw: Record<string, number> = {};
  let any = false;
  for (const key of POLICY_KEYS) {
    const v = args[policyFlag(key)] ?? args[key];
    if (v === undefined || v === null) continue;
    any = true;
    const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d{1,9}$/.test(v.trim()) ? Number(v.trim()) : NaN;
    if (Number.isNaN(n)) throw new RetentionPolicyError(`--${policyFlag(key)} takes a whole number, not "${String(v).slice(0, 40)}"`);
    raw[key] = n;
  }
  return any ? parsePolicy(raw) : undefined;
}

const mib = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;

/** A task's version, when it names one (deploys of a chosen version; issue 13). */
function taskVersion(t: TaskRecord): number | undefined {
  const v = (t as TaskRecord & { version?: unknown }).version;
  return typeof v === 'number' ? v : undefined;
}

export class RetentionService {
  constructor(private readonly deps: RetentionDeps) {}

  /**
   * The versions of `image` that active tasks use, with who uses them. An active deploy uses the
   * version it deploys, or the newest when it names none. A capture in progress uses no committed
   * version to restore, but the newest is its dedup base (an upload's chunks are checked against it),
   * so it counts as used. Without `newest` (the store's hook, which keeps the newest anyway) only
   * versions tasks name are returned.
   */
  versionsInUse(image: string, newest?: number): Map<number, string[]> {
    const out = new Map<number, string[]>();
    const add = (v: number | undefined, why: string): void => {
      if (v === undefined) return;
      out.set(v, [...(out.get(v) ?? []), why]);
    };
    for (const t of this.deps.tasks.list({ active: true })) {
      if (t.image !== image || !isActive(t)) continue;
      if (t.kind === 'deploy') add(taskVersion(t) ?? newest, `deploy task ${t.id} for ${t.mac}`);
      else add(newest, `capture task ${t.id} for ${t.mac} (its dedup base)`);
    }
    return out;
  }

  /**
   * Applies `policy` (or the image's stored one, or keep-last keep-versions) to `image`: decides per
   * version, and unless `dryRun` removes the versions that go, runs gc and records an event.
   */
  async prune(image: string, opts: { policy?: RetentionPolicy; dryRun?: boolean } = {}): Promise<PruneResult> {
    const { store } = this.deps;
    const stored = (await store.meta(image)).retention;
    const policySource: PolicySource = opts.policy ? 'given' : stored ? 'stored' : 'keep-versions';
    const policy = opts.policy ?? stored ?? { keepLast: this.deps.keepVersions };
    const details = await store.show(image);
    const newest = details.latestVersion;
    const inUse = this.versionsInUse(image, newest);
    const decisions = applyRetention(
      details.versions.map((v) => ({ version: v.version, created: v.created, protected: v.protected, inUse: inUse.get(v.version) ?? [] })),
      policy,
    ).sort((a, b) => b.version - a.version);
    const drop = decisions.filter((d) => !d.keep).map((d) => d.version);
    const dryRun = opts.dryRun === true;
    if (dryRun || drop.length === 0) return { image, policy, policySource, dryRun, decisions, removed: [], spared: [], gc: null };
    const removed = await store.removeVersions(image, drop);
    const spared = drop.filter((v) => !removed.includes(v));
    let gc: PruneResult['gc'] = null;
    if (removed.length > 0) {
      const g = await store.gc();
      gc = { removedChunks: g.removedChunks, freedBytes: g.freedBytes };
      await this.deps.events.record('info', `image ${image}: retention (${describePolicy(policy)}) removed version${removed.length === 1 ? '' : 's'} ${removed.join(', ')}; gc freed ${mib(g.freedBytes)} in ${g.removedChunks} chunk${g.removedChunks === 1 ? '' : 's'}`);
    }
    this.deps.logger.info({ image, policy, removed, spared }, 'retention applied');
    return { image, policy, policySource, dryRun, decisions, removed, spared, gc };
  }
}
