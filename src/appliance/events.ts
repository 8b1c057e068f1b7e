import { EventEmitter } from 'node:events';
import type { Database, EventRecord } from './database.js';
import type { Logger } from '../log.js';

const MAX_EVENTS = 2000;

/**
 * Things a technician wants to see afterwards ("PC aa:bb… booted the client",
 * "capture of win11 failed: disk smaller than image"), kept in the database and
 * pushed to live pages.
 */
export class EventLog extends EventEmitter {
  constructor(private readonly db: Database, private readonly logger: Logger) {
    super();
  }

  async record(level: EventRecord['level'], message: string, mac: string | null = null): Promise<void> {
    const event: EventRecord = { at: new Date().toISOString(), level, mac, message };
    this.logger[level]({ mac: mac ?? undefined }, message);
    this.db.data.events.push(event);
    if (this.db.data.events.length > MAX_EVENTS) this.db.data.events.splice(0, this.db.data.events.length - MAX_EVENTS);
    await this.db.write();
    this.emit('event', event);
  }

  recent(limit = 50, mac?: string): EventRecord[] {
    const all = mac ? this.db.data.events.filter((e) => e.mac === mac) : this.db.data.events;
    return all.slice(-limit).reverse();
  }
}
