/**
 * The admin page's verify button: a verify runs in the background and its last result per
 * image stays in memory for the pages and the API to show.
 */
import type { VerifyResult } from '../imaging/image-store.js';

/** Runs one verify: Commands.verifyImage as the person who pressed the button. */
export type RunVerify = (name: string, version: number | undefined) => Promise<VerifyResult>;

export interface VerifyState {
  readonly state: 'running' | 'ok' | 'failed';
  readonly version: number | null;
  readonly message: string;
  readonly startedAt: string;
  readonly finishedAt: string | null;
}

/**
 * Last verify result per image, in memory: a verify is cheap to repeat and a stale
 * "ok" after a restart would be worse than no answer.
 */
export class VerifyTracker {
  private readonly results = new Map<string, VerifyState>();

  constructor(private readonly onDone: (name: string, state: VerifyState) => void = () => undefined) {}

  get(name: string): VerifyState | undefined {
    return this.results.get(name);
  }

  /** Start a verify unless one is running; returns its state at once. */
  start(name: string, version: number | undefined, run: RunVerify): VerifyState {
    const current = this.results.get(name);
    if (current?.state === 'running') return current;
    const startedAt = new Date().toISOString();
    const running: VerifyState = { state: 'running', version: version ?? null, message: 'verifying…', startedAt, finishedAt: null };
    this.results.set(name, running);
    const promise = run(name, version).then(
      (r) => ({ ...running, version: r.version, state: r.ok ? 'ok' : 'failed', message: verifyMessage(r), finishedAt: new Date().toISOString() }) as VerifyState,
      (err: unknown) => ({ ...running, state: 'failed', message: err instanceof Error ? err.message : String(err), finishedAt: new Date().toISOString() }) as VerifyState,
    );
    this.pending.set(name, promise);
    void promise.then((done) => {
      this.pending.delete(name);
      this.results.set(name, done);
      this.onDone(name, done);
    });
    return running;
  }

  private readonly pending = new Map<string, Promise<VerifyState>>();

  /** For tests and scripts that want the outcome: resolves when the running verify ends. */
  async settled(name: string): Promise<VerifyState | undefined> {
    const p = this.pending.get(name);
    if (p) await p;
    return this.results.get(name);
  }

  rename(from: string, to: string): void {
    const r = this.results.get(from);
    this.results.delete(from);
    if (r) this.results.set(to, r);
  }
}

export function verifyMessage(r: VerifyResult): string {
  if (r.ok) return `version ${r.version}: all ${r.checkedChunks} chunks read back intact`;
  const first = r.damaged[0];
  return `version ${r.version}: ${r.damaged.length} damaged chunk${r.damaged.length === 1 ? '' : 's'} (first at byte ${first?.offset ?? '?'}: ${first?.reason ?? 'unknown'}); capture the image again or restore the store from a backup`;
}
