/**
 * Leases on disk: one JSON file, replaced atomically by lib/durable-write (temp, fsync, rename, fsync directory)
 * so a crash or power cut leaves either the old or the new file, never half of one.
 */
import { readFile, rename } from 'node:fs/promises';
import { writeFileDurably } from '../../lib/durable-write.js';
import type { Logger } from '../../lib/log.js';
import type { LeaseRecord, LeaseState } from './leases.js';

const FORMAT_VERSION = 1;
const states: readonly LeaseState[] = ['offered', 'bound', 'released', 'declined'];

interface LeaseFile {
  version: number;
  leases: LeaseRecord[];
}

function isRecord(v: unknown): v is LeaseRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return (
    typeof r.ip === 'string' &&
    typeof r.clientKey === 'string' &&
    typeof r.mac === 'string' &&
    typeof r.state === 'string' &&
    (states as readonly string[]).includes(r.state) &&
    typeof r.expiresAt === 'number' &&
    Number.isFinite(r.expiresAt) &&
    (r.hostname === undefined || typeof r.hostname === 'string')
  );
}

export class LeaseStore {
  private writing: Promise<void> = Promise.resolve();
  private pending: LeaseRecord[] | undefined;

  constructor(
    readonly path: string,
    private readonly log: Logger,
  ) {}

  /**
   * Missing file → no leases. An unreadable file is moved aside (not overwritten) so an admin can
   * recover it, and we start empty: clients then re-request their addresses, which we grant if free.
   */
  async load(): Promise<LeaseRecord[]> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    try {
      const parsed = JSON.parse(text) as Partial<LeaseFile>;
      if (!Array.isArray(parsed.leases)) throw new Error('no "leases" array');
      const good = parsed.leases.filter(isRecord);
      if (good.length !== parsed.leases.length) {
        this.log.warn({ path: this.path, dropped: parsed.leases.length - good.length }, 'lease file had malformed entries; ignoring them');
      }
      return good;
    } catch (err) {
      const aside = `${this.path}.corrupt-${Date.now()}`;
      await rename(this.path, aside);
      this.log.error({ path: this.path, movedTo: aside, err: (err as Error).message }, 'lease file unreadable; moved aside, starting with no leases');
      return [];
    }
  }

  /**
   * Persist a snapshot. Concurrent calls coalesce: while one write runs, only the newest pending
   * snapshot is written next. Resolves once a write containing this snapshot (or a newer one) is durable.
   */
  save(records: LeaseRecord[]): Promise<void> {
    this.pending = records;
    // A failed earlier write must not poison every later one.
    const run = this.writing
      .catch(() => undefined)
      .then(async () => {
        const next = this.pending;
        if (!next) return;
        this.pending = undefined;
        await this.writeAtomic(next);
      });
    this.writing = run;
    return run;
  }

  private async writeAtomic(records: LeaseRecord[]): Promise<void> {
    const body: LeaseFile = { version: FORMAT_VERSION, leases: records };
    await writeFileDurably(this.path, JSON.stringify(body, null, 1), { mode: 0o644 });
  }
}
