/**
 * Opening an appliance's data directory: the lock, the database and the image store.
 * Used by `netclone serve` and by CLI commands when no server runs.
 */
import { mkdir } from 'node:fs/promises';
import type { Config } from './config.js';
import { openDatabase, forgetDatabase } from './database.js';
import { EventLog } from './events.js';
import { HostService } from './hosts.js';
import { TaskService } from './tasks.js';
import { acquireLock, type DataLock } from './lock.js';
import { ImageStore } from '../imaging/image-store.js';
import type { NbdAccess } from './running-server.js';
import { Commands, type CommandDeps } from './commands.js';
import type { WakeSender } from '../lib/wake-on-lan.js';
import type { Logger } from '../lib/log.js';

/** One open data directory: its services, its store, and the commands over them. */
export interface Core extends Omit<CommandDeps, 'nbd' | 'wake' | 'authorize'> {
  readonly commands: Commands;
  /** Present only inside a running server: NBD URLs need a live NBD listener. */
  nbd: NbdAccess | null;
}

export interface OpenCore extends Core {
  readonly lock: DataLock;
  close(): Promise<void>;
}

export interface CoreOptions {
  readonly nbd?: NbdAccess | null;
  /** How commands wake a PC; a running server passes a broadcast sender on its interface. */
  readonly wake?: WakeSender;
}

export async function openCore(config: Config, logger: Logger, purpose: string, options: CoreOptions = {}): Promise<OpenCore> {
  await mkdir(config.dataDir, { recursive: true });
  const lock = await acquireLock(config.dataDir, purpose);
  try {
    const db = await openDatabase(config.dataDir);
    const events = new EventLog(db, logger.child({ component: 'events' }));
    const store = await ImageStore.open(config.imagesDir, { logger, keepVersions: config.keepVersions });
    let nbdAccess = options.nbd ?? null;
    const hosts = new HostService(db, events, { logger: logger.child({ component: 'hosts' }) });
    const tasks = new TaskService(db, events, {
      logger: logger.child({ component: 'tasks' }),
      liveness: { silenceSeconds: config.clientTimeoutSeconds, examineSeconds: config.clientExamineTimeoutSeconds },
    });
    const commands = new Commands({
      config, logger: logger.child({ component: 'commands' }), db, events, hosts, tasks, store, nbd: () => nbdAccess, wake: options.wake,
    });
    return {
      commands,
      config,
      logger,
      db,
      events,
      hosts,
      tasks,
      store,
      get nbd() {
        return nbdAccess;
      },
      set nbd(v: NbdAccess | null) {
        nbdAccess = v;
      },
      lock,
      async close() {
        // Their pending coalesced saves go out with the write below; no timer may touch the file after it.
        tasks.stopTimers();
        hosts.stopTimers();
        await store.close();
        await db.write();
        forgetDatabase(config.dataDir);
        await lock.release();
      },
    };
  } catch (err) {
    await lock.release();
    throw err;
  }
}
