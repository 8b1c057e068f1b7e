/**
 * Who may do what: every admin page and /api/v1 route needs a session (browser) or an
 * API token (scripts). The boot and thin-client routes are exempt here because they check
 * their own callers (a task's token, a technician's login at the PC, the address DHCP tied to
 * the MAC); static assets, login and setup are public.
 *
 * State-changing requests from a session must carry the CSRF token; token requests need not,
 * since a browser never attaches a bearer token by itself.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Database } from '../domain/database.js';
import { findApiToken } from '../domain/users.js';
import type { SessionStore, Session } from './sessions.js';
import type { Actor } from '../domain/commands.js';

export const SESSION_COOKIE = 'nc_session';

export interface AuthInfo {
  readonly kind: 'session' | 'token';
  readonly username: string;
  readonly session: Session | null;
}

declare module 'fastify' {
  interface FastifyRequest {
    auth: AuthInfo | null;
  }
}

/**
 * The person behind an admin request, for the command layer. Only routes behind the auth hook
 * call this: a request that reached them without a login is a bug, not a stranger.
 */
export function operatorOf(req: FastifyRequest): Actor {
  if (!req.auth) throw new Error(`${req.method} ${req.url.split('?')[0]} reached a command without a login`);
  return { kind: 'operator', name: req.auth.username, via: req.auth.kind === 'token' ? 'api' : 'admin page' };
}

export type RouteClass = 'external' | 'public' | 'api' | 'page';

const EXTERNAL_PREFIXES = ['/boot/', '/api/client/v1/'];
const PUBLIC_PATHS = new Set(['/login', '/setup', '/favicon.ico']);

/** Classify by the matched route pattern when there is one, else by the raw path (404s). */
export function routeClass(req: FastifyRequest): RouteClass {
  const pattern = req.routeOptions?.url;
  const path = (pattern ?? req.url.split('?')[0]) || '/';
  if (path === '/boot' || EXTERNAL_PREFIXES.some((p) => path.startsWith(p)) || path === '/api/client/v1') return 'external';
  if (PUBLIC_PATHS.has(path) || path.startsWith('/static/')) return 'public';
  if (path === '/api/v1' || path.startsWith('/api/')) return 'api';
  return 'page';
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Only same-site absolute paths: "//evil.example" and "https://…" are not. */
export function safeNext(next: unknown): string {
  if (typeof next !== 'string' || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\') || next.length > 500) return '/';
  if (next.startsWith('/login') || next.startsWith('/setup') || next.startsWith('/logout')) return '/';
  return next;
}

export function sessionFromCookie(req: FastifyRequest, sessions: SessionStore): Session | undefined {
  const raw = req.cookies[SESSION_COOKIE];
  if (!raw) return undefined;
  const unsigned = req.unsignCookie(raw);
  if (!unsigned.valid || !unsigned.value) return undefined;
  return sessions.touch(unsigned.value);
}

export function unauthorized(req: FastifyRequest, reply: FastifyReply, cls: RouteClass): FastifyReply {
  if (cls === 'api') {
    return reply
      .code(401)
      .header('WWW-Authenticate', 'Bearer realm="netclone"')
      .send({ statusCode: 401, error: 'Unauthorized', message: 'log in first, or send "Authorization: Bearer <token>" (create tokens with "netclone admin token create --name NAME")' });
  }
  const next = req.method === 'GET' ? req.url : '/';
  const location = `/login${next !== '/' ? `?next=${encodeURIComponent(next)}` : ''}`;
  if (req.headers['hx-request'] === 'true') {
    return reply.code(401).header('HX-Redirect', location).send('');
  }
  return reply.code(302).header('Location', location).send();
}

export function installAuthHooks(app: FastifyInstance, db: Database, sessions: SessionStore): void {
  app.decorateRequest('auth', null);

  app.addHook('onRequest', async (req, reply) => {
    const cls = routeClass(req);
    if (cls === 'external') return;
    const header = req.headers.authorization;
    if (cls === 'api' && typeof header === 'string' && header.length > 0) {
      const m = /^Bearer\s+(\S+)$/i.exec(header);
      const record = m ? await findApiToken(db, m[1]) : undefined;
      if (!record) {
        return reply
          .code(401)
          .header('WWW-Authenticate', 'Bearer realm="netclone", error="invalid_token"')
          .send({ statusCode: 401, error: 'Unauthorized', message: 'the API token is unknown or revoked; create a new one with "netclone admin token create --name NAME"' });
      }
      req.auth = { kind: 'token', username: `token:${record.name}`, session: null };
      return;
    }
    const session = sessionFromCookie(req, sessions);
    if (session) req.auth = { kind: 'session', username: session.username, session };
    if (cls === 'public') return;
    if (!req.auth) return unauthorized(req, reply, cls);
  });

  app.addHook('preHandler', (req, reply, done) => {
    const cls = routeClass(req);
    if (cls === 'external' || SAFE_METHODS.has(req.method) || req.auth?.kind === 'token') return done();
    app.csrfProtection(req, reply, done);
  });
}
