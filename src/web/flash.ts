/**
 * One message for the next page a session sees ("Host added.", or why a form was refused), shown
 * once. Kept in memory per session: a flash is for the redirect that follows, not for later.
 */
import type { FastifyRequest } from 'fastify';

export interface Flash {
  readonly message: string;
  readonly kind: 'notice' | 'error';
}

const flashes = new WeakMap<object, Flash>();

export function setFlash(req: FastifyRequest, message: string, kind: Flash['kind'] = 'notice'): boolean {
  if (!req.auth?.session) return false;
  flashes.set(req.auth.session, { message, kind });
  return true;
}

export function takeFlash(req: FastifyRequest): Flash | null {
  const s = req.auth?.session;
  if (!s) return null;
  const f = flashes.get(s) ?? null;
  flashes.delete(s);
  return f;
}
