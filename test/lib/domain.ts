/**
 * A data directory opened the way the server opens one, minus the lock and the network: database,
 * events, hosts, tasks and the image store in a temp dir. Tests build web apps and commands on it.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { CommandDeps } from '../../src/domain/commands.js';
import { resolveConfig } from '../../src/domain/config.js';
import { forgetDatabase, openDatabase } from '../../src/domain/database.js';
import { EventLog } from '../../src/domain/events.js';
import { HostService } from '../../src/domain/hosts.js';
import { TaskService } from '../../src/domain/tasks.js';
import { ImageStore } from '../../src/imaging/image-store.js';
import { nullLogger } from '../../src/lib/log.js';

export interface TestDomain extends Omit<CommandDeps, 'nbd' | 'wake' | 'authorize'> {
  readonly dir: string;
  /** Closes the store, forgets the database and removes the directory. */
  close(): Promise<void>;
}

export async function openTestDomain(prefix = 'netclone-test-', logger: Logger = nullLogger()): Promise<TestDomain> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const config = resolveConfig({ data: dir });
  const db = await openDatabase(dir);
  const events = new EventLog(db, logger);
  const hosts = new HostService(db, events);
  const tasks = new TaskService(db, events);
  const store = await ImageStore.open(config.imagesDir, { logger, workers: 1 });
  return {
    dir, config, logger, db, events, hosts, tasks, store,
    async close() {
      await store.close();
      forgetDatabase(dir);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
