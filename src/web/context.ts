import type { FastifyPluginAsync } from 'fastify';
import type { Config } from '../domain/config.js';
import type { Database } from '../domain/database.js';
import type { EventLog } from '../domain/events.js';
import type { HostService } from '../domain/hosts.js';
import type { TaskService } from '../domain/tasks.js';
import type { Commands } from '../domain/commands.js';
import type { BootFileProblem, ServiceStatus } from '../domain/running-server.js';
import type { Logger } from '../lib/log.js';

/**
 * What the admin web app is handed. Every change goes through `commands`, except the first-run
 * setup's admin password (no operator exists yet to run it as); hosts, tasks and events are read
 * here for the pages' views, and the database only for logins, setup, the session secret and
 * API tokens.
 */
export interface WebContext {
  readonly config: Config;
  readonly logger: Logger;
  readonly db: Database;
  readonly events: EventLog;
  readonly hosts: Pick<HostService, 'list' | 'get' | 'require'>;
  readonly tasks: Pick<TaskService, 'list' | 'require'>;
  readonly commands: Commands;
  services(): ServiceStatus[];
  /** The loaders or imaging client that are missing or out of date, checked again on each call; empty when all are in place. */
  bootFiles(): Promise<readonly BootFileProblem[]>;
}
export interface WebAppOptions {
  /** The boot script and thin-client routes (`/boot/*`, `/api/client/v1/*`); they bring their own auth. */
  readonly extraPlugins?: readonly FastifyPluginAsync[];
  /** Login / setup attempts per client address per window (default 10 per minute). */
  readonly loginRateLimit?: { readonly max: number; readonly timeWindowMs: number };
  /** Idle session lifetime (default 8 hours). */
  readonly sessionIdleSeconds?: number;
  /** Log the first-run setup link (default true). */
  readonly announceSetup?: boolean;
  /** Fastify's own request logging (default off: our handlers log what matters). */
  readonly logRequests?: boolean;
}
