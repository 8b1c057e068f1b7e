import type { Database, EventRecord } from './database.js';
import { DurableJsonFile, type DatabaseWriteError } from './durable-json-file.js';
import type { Logger } from '../lib/log.js';

const MAX_EVENTS = 2000;
/** While the database cannot be saved, its retries fail every few seconds: log the first and then one in this many. */
const LOG_EVERY_NTH_FAILURE = 12;

/**
 * Things a technician wants to see afterwards ("PC aa:bb… booted the client",
 * "capture of win11 failed: disk smaller than image"), kept in the database and shown
 * on the pages, which read them from memory when they poll.
 *
 * Recording an event never fails its caller: an event reports something that already
 * happened, so a database that cannot be saved (disk full) must not turn a finished
 * operation into a failed one, nor leave a promise rejected that nobody awaits. The
 * event stays in memory, where the pages read it, and is saved with the next write that succeeds.
 */
export class EventLog {
  constructor(
    private readonly db: Database,
    private readonly logger: Logger,
  ) {
    const adapter = db.adapter;
    if (adapter instanceof DurableJsonFile) {
      adapter.on('writeFailed', (err: DatabaseWriteError, failures: number) => {
        if (failures === 1 || failures % LOG_EVERY_NTH_FAILURE === 0) this.logger.error({ code: err.code, failuresInARow: failures }, err.message);
        // The admin page shows it too; saved along with everything else once a write succeeds.
        if (failures === 1) this.keep('error', err.message);
      });
      adapter.on('recovered', (failures: number) => {
        const message = `the database ${adapter.file} is saved again after ${failures} failed attempts`;
        this.logger.warn({ failuresInARow: failures }, message);
        this.keep('info', message);
      });
    }
  }

  /** Adds an event to the in-memory list without saving it (the next write carries it). */
  private keep(level: EventRecord['level'], message: string, mac: string | null = null): void {
    const event: EventRecord = { at: new Date().toISOString(), level, mac, message };
    this.db.data.events.push(event);
    if (this.db.data.events.length > MAX_EVENTS) this.db.data.events.splice(0, this.db.data.events.length - MAX_EVENTS);
  }

  async record(level: EventRecord['level'], message: string, mac: string | null = null): Promise<void> {
    this.logger[level]({ mac: mac ?? undefined }, message);
    this.keep(level, message, mac);
    try {
      await this.db.write();
    } catch (err) {
      // The adapter has logged the write failure itself; this line ties it to the event.
      this.logger.warn({ err: (err as Error).message }, `event kept in memory only until the database can be saved: ${message}`);
    }
  }

  recent(limit = 50, mac?: string): EventRecord[] {
    const all = mac ? this.db.data.events.filter((e) => e.mac === mac) : this.db.data.events;
    return all.slice(-limit).reverse();
  }
}
