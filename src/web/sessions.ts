/**
 * Admin sessions, held in memory: the cookie carries only a random id (signed with the
 * appliance's session secret), so logout and a password change on the Settings page end
 * sessions at once.
 * A restart logs everyone out, which an appliance can afford.
 */
import { randomBytes } from 'node:crypto';

export interface Session {
  readonly id: string;
  readonly username: string;
  readonly createdAt: number;
  expiresAt: number;
}

/** However active, a session ends after a week. */
const ABSOLUTE_LIFETIME_MS = 7 * 24 * 3600 * 1000;
const MAX_SESSIONS = 1000;

export class SessionStore {
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly idleMs: number) {}

  create(username: string, now = Date.now()): Session {
    this.sweep(now);
    if (this.sessions.size >= MAX_SESSIONS) {
      // The oldest session goes: someone logging in a thousand times should not exhaust memory.
      const oldest = this.sessions.keys().next().value;
      if (oldest !== undefined) this.sessions.delete(oldest);
    }
    const session: Session = { id: randomBytes(32).toString('base64url'), username, createdAt: now, expiresAt: now + this.idleMs };
    this.sessions.set(session.id, session);
    return session;
  }

  /** The live session for an id, its idle timer refreshed. */
  touch(id: string, now = Date.now()): Session | undefined {
    const s = this.sessions.get(id);
    if (!s) return undefined;
    if (s.expiresAt <= now || now - s.createdAt > ABSOLUTE_LIFETIME_MS) {
      this.sessions.delete(id);
      return undefined;
    }
    s.expiresAt = now + this.idleMs;
    return s;
  }

  destroy(id: string): void {
    this.sessions.delete(id);
  }

  destroyAllFor(username: string): void {
    for (const [id, s] of this.sessions) if (s.username === username) this.sessions.delete(id);
  }

  private sweep(now: number): void {
    for (const [id, s] of this.sessions) if (s.expiresAt <= now) this.sessions.delete(id);
  }
}
