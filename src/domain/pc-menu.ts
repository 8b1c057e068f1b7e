/**
 * What a technician does at a PC, from either menu (iPXE's boot menu or the imaging client's):
 * one login check with one failure count per address, and one set of actions that run as the
 * command layer's technician actor, so a login at one PC can only act on that PC.
 */
import type { Database, TaskRecord, UserRecord } from './database.js';
import { checkLogin } from './users.js';
import { CommandError, type Actor, type Commands, type PcMenu } from './commands.js';
import { HostError } from './hosts.js';
import { TaskError } from './tasks.js';
import type { Logger } from '../lib/log.js';

/** Failed logins at PCs, per address: a few tries a minute, so guessing a password over the LAN is slow. */
export const LOGIN_FAILURES_PER_MINUTE = 5;
const LOGIN_WINDOW_MS = 60_000;
const LIMITER_MAX_ADDRESSES = 4096;

class LoginFailures {
  private readonly byIp = new Map<string, { start: number; count: number }>();

  blocked(ip: string, now: number): boolean {
    const e = this.byIp.get(ip);
    return e !== undefined && now - e.start < LOGIN_WINDOW_MS && e.count >= LOGIN_FAILURES_PER_MINUTE;
  }

  fail(ip: string, now: number): void {
    const e = this.byIp.get(ip);
    if (e && now - e.start < LOGIN_WINDOW_MS) {
      e.count += 1;
      return;
    }
    this.byIp.delete(ip);
    this.byIp.set(ip, { start: now, count: 1 });
    if (this.byIp.size > LIMITER_MAX_ADDRESSES) {
      const oldest = this.byIp.keys().next();
      if (!oldest.done) this.byIp.delete(oldest.value);
    }
  }
}

/**
 * Technician logins typed at a PC: one check against the appliance's users and one failure count
 * per address for both menus, so switching between them gives a password guesser no extra tries.
 */
export class TechnicianLogins {
  private readonly failures = new LoginFailures();

  constructor(private readonly db: Database) {}

  /** Too many failed logins from `ip` in the last minute: refuse before checking anything. */
  blocked(ip: string, now: number = Date.now()): boolean {
    return this.failures.blocked(ip, now);
  }

  /** The user, or null (and one more failure counted for `ip`). */
  async check(ip: string, username: string, password: string, now: number = Date.now()): Promise<UserRecord | null> {
    const user = await checkLogin(this.db, username, password);
    if (!user) this.failures.fail(ip, now);
    return user;
  }
}

/** The actor of a technician logged in at the PC with `mac`, sending from `ip`. */
export function technicianAt(mac: string, ip: string, user: string, via: PcMenu): Actor & { readonly kind: 'technician' } {
  return { kind: 'technician', name: user, via, mac, ip };
}

/** What a technician at a PC may ask for once logged in. */
export type TechnicianAction = 'register' | 'capture' | 'deploy' | 'start';

export interface TechnicianActionRequest {
  readonly mac: string;
  readonly what: TechnicianAction;
  /** Capture: the new image's name (default: named after the PC). Deploy: the image, which must have a committed version. */
  readonly image?: string;
  /** Where the request came from: a task's token is bound to it. */
  readonly ip: string;
  readonly user: string;
  readonly via: PcMenu;
}

export type TechnicianActionOutcome =
  | { readonly kind: 'registered'; readonly already: boolean }
  | { readonly kind: 'task'; readonly task: TaskRecord; readonly token: string }
  | { readonly kind: 'refused'; readonly status: 400 | 401 | 403 | 404 | 409 | 500; readonly message: string };

/**
 * Carries out one action a logged-in technician started at a PC, whichever menu sent it.
 * Refusals the technician can act on come back as `refused`; anything else throws.
 */
export async function performTechnicianAction(commands: Commands, logger: Logger, req: TechnicianActionRequest): Promise<TechnicianActionOutcome> {
  const { mac, ip, user, via } = req;
  const actor = technicianAt(mac, ip, user, via);
  try {
    switch (req.what) {
      case 'register': {
        const { already } = await commands.registerHost(actor, mac);
        logger.info({ mac, ip, user, via }, already ? `${via}: PC was registered already` : `${via}: PC registered`);
        return { kind: 'registered', already };
      }
      case 'capture':
        return { kind: 'task', ...(await commands.startAtPc(actor, { kind: 'capture', image: req.image })) };
      case 'deploy':
        return { kind: 'task', ...(await commands.startAtPc(actor, { kind: 'deploy', image: req.image ?? '' })) };
      case 'start':
        return { kind: 'task', ...(await commands.startAtPc(actor)) };
    }
  } catch (err) {
    if (err instanceof CommandError || err instanceof TaskError || err instanceof HostError) {
      logger.warn({ mac, ip, user, via, do: req.what, image: req.image?.slice(0, 80) }, `${via}: ${req.what} refused: ${err.message}`);
      return { kind: 'refused', status: err.status, message: err.message };
    }
    throw err;
  }
}
