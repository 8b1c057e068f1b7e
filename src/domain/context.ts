/**
 * What the servers of one running appliance share. The web app, the boot routes and
 * the client API take this, never globals, so tests can build one on a temp dir.
 */
import type { Config } from './config.js';
import type { Database } from './database.js';
import type { EventLog } from './events.js';
import type { HostService } from './hosts.js';
import type { TaskService } from './tasks.js';
import type { Logger } from '../lib/log.js';

export interface ServiceStatus {
  readonly name: 'http' | 'nbd' | 'tftp' | 'dhcp' | 'control';
  readonly state: 'running' | 'off' | 'failed';
  /** e.g. "proxy mode on 0.0.0.0:67", or why it did not start. */
  readonly detail: string;
}

export interface NbdUrl {
  readonly uri: string;
  readonly exportName: string;
  readonly expiresAt: string;
}

export interface NbdUrlRequest {
  readonly image: string;
  readonly write: boolean;
  /** Required for a writable (capture) export: the disk size in bytes. */
  readonly size?: number;
  readonly ttlSeconds?: number;
  /** Host name or address to put in the URI (what the caller reached us on). */
  readonly host?: string;
}

export interface NbdAccess {
  /** Issue an unguessable export name for an image (read: newest version; write: a new capture). */
  createUrl(request: NbdUrlRequest): Promise<NbdUrl>;
}

export interface AppContextBase {
  readonly config: Config;
  readonly logger: Logger;
  readonly db: Database;
  readonly events: EventLog;
  readonly hosts: HostService;
  readonly tasks: TaskService;
  readonly nbd: NbdAccess;
  services(): ServiceStatus[];
}
