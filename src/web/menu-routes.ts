/**
 * The imaging client's menu mode (boot/client/lib/menu.sh; contract: boot/client/README.md):
 * for loaders that cannot POST a form (iPXE without PARAM_CMD, a Secure Boot chain), the PC
 * boots the imaging client with no task, the technician logs in there, and the client POSTs
 * the login and the chosen action here. The client then goes on with the task's token exactly
 * as if it had come on the kernel command line.
 *
 * - `POST /api/client/v1/menu/login` checks the technician against the appliance's users with
 *   the boot menu's failure limit per address (TechnicianLogins) and answers a short-lived
 *   session, bound to the address and MAC it was asked for, kept in memory only.
 * - `POST /api/client/v1/menu/action` with that session (`Authorization: Bearer`) runs the same
 *   rules as the boot menu's POST (performTechnicianAction, domain/pc-menu.ts).
 * - Nothing here answers a GET with anything but 405: no GET changes state.
 *
 * Registered by the boot routes, which hand it the login limiter they use too, in a plugin of its
 * own: the task-token hook of client-routes.ts is scoped to that plugin and never sees these routes.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { HostService } from '../domain/hosts.js';
import type { TaskService } from '../domain/tasks.js';
import { hashToken, newToken } from '../lib/tokens.js';
import { normalizeMac } from '../lib/mac.js';
import { plainAddress } from '../lib/ipv4.js';
import { MAX_PASSWORD_LENGTH } from '../domain/users.js';
import type { Logger } from '../lib/log.js';
import type { Commands } from '../domain/commands.js';
import { performTechnicianAction, technicianAt, type TechnicianLogins } from '../domain/pc-menu.js';

export interface MenuRoutesContext {
  readonly logger: Logger;
  readonly hosts: Pick<HostService, 'get'>;
  readonly tasks: Pick<TaskService, 'activeFor'>;
  /** The boot menu's login check and failure limit, shared. */
  readonly logins: TechnicianLogins;
  /** What a logged-in technician asks for runs as a command, as from the boot menu. */
  readonly commands: Commands;
}

/** Long enough to read the list and type an image name; short enough that a forgotten login dies soon. */
export const MENU_SESSION_MS = 5 * 60_000;
/** Logins are rate-limited per address, but many addresses may each hold one: the oldest goes first. */
const MAX_SESSIONS = 1024;

interface MenuSession {
  readonly ip: string;
  readonly mac: string;
  readonly user: string;
  readonly expiresAt: number;
}

const LoginSchema = Type.Object(
  {
    mac: Type.String({ maxLength: 40 }),
    username: Type.String({ minLength: 1, maxLength: 256 }),
    password: Type.String({ minLength: 1, maxLength: MAX_PASSWORD_LENGTH }),
  },
  { additionalProperties: false },
);
const ActionSchema = Type.Object(
  {
    do: Type.Union([Type.Literal('capture'), Type.Literal('deploy'), Type.Literal('register'), Type.Literal('start')]),
    image: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
  },
  { additionalProperties: false },
);

declare module 'fastify' {
  interface FastifyRequest {
    menuSession?: { readonly key: string; readonly session: MenuSession };
  }
}

/**
 * busybox wget, which the client uses, shows only the status line of a failed request, never its
 * body: the reason phrase carries the message too (ASCII without control characters, as HTTP wants).
 */
function refuse(reply: FastifyReply, status: number, message: string): FastifyReply {
  reply.raw.statusMessage = message.replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
  return reply.code(status).send({ error: message });
}

export function menuRoutes(ctx: MenuRoutesContext) {
  return async function plugin(app: FastifyInstance): Promise<void> {
    /** Keyed by the token's hash: a heap dump or a log of the map's keys holds no usable session. */
    const sessions = new Map<string, MenuSession>();

    const prune = (now: number): void => {
      for (const [key, s] of sessions) if (s.expiresAt <= now) sessions.delete(key);
      while (sessions.size >= MAX_SESSIONS) {
        const oldest = sessions.keys().next();
        if (oldest.done) break;
        sessions.delete(oldest.value);
      }
    };

    for (const url of ['/api/client/v1/menu/login', '/api/client/v1/menu/action']) {
      app.get(url, async (req, reply) => {
        ctx.logger.warn({ ip: plainAddress(req.ip), url }, 'client menu call sent as GET: refused, nothing changed');
        return refuse(reply.header('allow', 'POST'), 405, 'menu calls are POSTs; nothing was changed');
      });
    }

    app.post<{ Body: Static<typeof LoginSchema> }>(
      '/api/client/v1/menu/login',
      { schema: { body: LoginSchema }, attachValidation: true },
      async (req, reply) => {
        const ip = plainAddress(req.ip);
        if (req.validationError) {
          ctx.logger.warn({ ip, problem: req.validationError.message.slice(0, 200) }, 'client menu: malformed login refused');
          return refuse(reply, 400, 'a login needs a JSON body {"mac","username","password"} with non-empty strings');
        }
        const mac = normalizeMac(req.body.mac);
        if (!mac) {
          ctx.logger.warn({ ip, mac: req.body.mac.slice(0, 40) }, 'client menu: login with a malformed MAC refused');
          return refuse(reply, 400, 'mac is not a MAC address (expected aa:bb:cc:dd:ee:ff)');
        }
        if (ctx.logins.blocked(ip)) {
          ctx.logger.warn({ ip, mac }, 'client menu: login refused, too many failed logins from this address in the last minute');
          return refuse(reply, 429, 'too many failed logins from this PC, wait a minute and try again');
        }
        const user = await ctx.logins.check(ip, req.body.username, req.body.password);
        if (!user) {
          ctx.logger.warn({ ip, mac, user: req.body.username.slice(0, 64) }, 'client menu: wrong username or password');
          return refuse(reply, 401, 'wrong username or password');
        }
        const now = Date.now();
        prune(now);
        const session = newToken();
        sessions.set(hashToken(session), { ip, mac, user: user.username, expiresAt: now + MENU_SESSION_MS });
        const host = ctx.hosts.get(mac);
        const waiting = ctx.tasks.activeFor(mac);
        ctx.logger.info({ mac, ip, user: user.username }, `client menu: ${user.username} logged in at the PC; session bound to ${ip}`);
        return {
          session,
          expiresIn: MENU_SESSION_MS / 1000,
          host: { mac, name: host?.name ?? '', registered: host?.registered === true },
          images: await ctx.commands.imageNames(technicianAt(mac, ip, user.username, 'client menu')),
          // A task queued on the admin page (or one whose boot was not confirmed) can be started from here.
          task: waiting && (waiting.state === 'queued' || waiting.state === 'booting') ? { kind: waiting.kind, image: waiting.image } : null,
        };
      },
    );

    app.post<{ Body: Static<typeof ActionSchema> }>(
      '/api/client/v1/menu/action',
      {
        schema: { body: ActionSchema },
        attachValidation: true,
        // The session is checked before the body is read or validated, as for the task token:
        // a caller without a login learns nothing about what the body should be.
        onRequest: async (req: FastifyRequest, reply: FastifyReply) => {
          const ip = plainAddress(req.ip);
          const m = /^Bearer ([A-Za-z0-9_-]{16,200})$/.exec(req.headers.authorization ?? '');
          if (!m) {
            ctx.logger.warn({ ip }, 'client menu action without a login: refused');
            return refuse(reply, 401, 'log in first (POST /api/client/v1/menu/login), then send the session as Authorization: Bearer');
          }
          const key = hashToken(m[1]);
          const session = sessions.get(key);
          if (!session || session.expiresAt <= Date.now()) {
            if (session) sessions.delete(key);
            ctx.logger.warn({ ip, mac: session?.mac }, `client menu action refused: ${session ? 'the login expired' : 'unknown or spent session'}`);
            return refuse(reply, 401, 'this login expired or was used already; log in again');
          }
          if (session.ip !== ip) {
            ctx.logger.warn({ ip, mac: session.mac, boundTo: session.ip }, `client menu action refused: the login was made from ${session.ip}, not from ${ip}`);
            return refuse(reply, 403, 'this login belongs to another address; log in again at the PC');
          }
          req.menuSession = { key, session };
        },
      },
      async (req, reply) => {
        const ip = plainAddress(req.ip);
        const held = req.menuSession;
        if (!held) throw new Error('client menu action reached its handler without a checked session');
        const { key, session } = held;
        if (req.validationError) {
          ctx.logger.warn({ ip, mac: session.mac, problem: req.validationError.message.slice(0, 200) }, 'client menu: malformed action refused');
          return refuse(reply, 400, 'an action needs a JSON body {"do":"capture"|"deploy"|"register"|"start","image":NAME}');
        }
        if (req.body.do === 'deploy' && req.body.image === undefined) {
          ctx.logger.warn({ ip, mac: session.mac }, 'client menu: deploy without an image refused');
          return refuse(reply, 400, 'a deploy needs the image name');
        }
        ctx.logger.info({ mac: session.mac, ip, user: session.user, do: req.body.do, image: req.body.image }, `client menu: ${session.user} asks for ${req.body.do} at the PC`);
        const outcome = await performTechnicianAction(ctx.commands, ctx.logger, { mac: session.mac, what: req.body.do, image: req.body.image, ip, user: session.user, via: 'client menu' });
        if (outcome.kind === 'refused') return refuse(reply, outcome.status, outcome.message);
        // Single use: a successful action is what the login was for, and the PC now holds what it needs
        // (a task token, or its registration). A session left alive would let whatever runs at this
        // address queue another task for minutes with no one typing a password. A refused action
        // (unknown image, a task already waiting) keeps it, so the technician can choose again.
        sessions.delete(key);
        if (outcome.kind === 'registered') return { registered: true, already: outcome.already };
        return { task: outcome.task.id, token: outcome.token, kind: outcome.task.kind, image: outcome.task.image };
      },
    );
  };
}
