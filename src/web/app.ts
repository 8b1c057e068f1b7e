/**
 * The web app: admin pages, the /api/v1 JSON API, login, and whatever extra plugins the
 * server (serve/runtime.ts) passes in (boot script and thin-client API). Built from a context,
 * never from globals, so tests run it on a temp data directory.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import cookie from '@fastify/cookie';
import formbody from '@fastify/formbody';
import helmet from '@fastify/helmet';
import rateLimit from '@fastify/rate-limit';
import csrf from '@fastify/csrf-protection';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { PACKAGE_ROOT } from '../domain/config.js';
import { ensureSessionSecret, issueSetupToken } from '../domain/users.js';
import { registerApi } from './api.js';
import { registerProtectionRoutes } from './protection-routes.js';
import { registerExportRoutes } from './export-routes.js';
import { returnRefusedForm } from './form-return.js';
import { registerGroupRoutes } from './group-routes.js';
import { registerScheduleRoutes, scheduleHrefForGroup } from './schedule-routes.js';
import { registerRetentionRoutes } from './retention-routes.js';
import { installAuthHooks } from './auth.js';
import { VerifyTracker } from './verify-tracker.js';
import type { WebAppOptions, WebContext } from './context.js';
import { classifyError, sendProblem } from './errors.js';
import { html } from './html.js';
import { registerPages, renderPage } from './pages.js';
import { SessionStore } from './sessions.js';

export type { WebContext, WebAppOptions } from './context.js';

const DEFAULT_IDLE_SECONDS = 8 * 3600;

/**
 * How long the HTTP server waits for a client, and how many it serves at once. Without these a
 * client that sends its request a byte at a time (or never finishes its headers) holds a
 * connection for ever, and enough of them starve the admin page and the PCs' boot scripts.
 */
export interface HttpLimits {
  /** The whole request, headers and body, must arrive within this. */
  readonly requestTimeoutMs: number;
  /** The headers must arrive within this. */
  readonly headersTimeoutMs: number;
  /**
   * A connection with no traffic either way for this long is closed. Above the longest answer
   * the server may think about: the imaging client's result waits up to 2 min for a capture commit.
   */
  readonly connectionTimeoutMs: number;
  /** How often Node checks the two request timeouts (its default, 30 s, would let a slow client stay that much longer). */
  readonly timeoutCheckMs: number;
  /** Connections beyond this are closed as they arrive. */
  readonly maxConnections: number;
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  requestTimeoutMs: 30_000,
  headersTimeoutMs: 15_000,
  connectionTimeoutMs: 180_000,
  timeoutCheckMs: 2_000,
  maxConnections: 1024,
};

interface StaticFile {
  readonly body: Buffer;
  readonly type: string;
}

/** The few files we serve, read once: no file-system path ever comes from a request. */
function loadStaticFiles(): Map<string, StaticFile> {
  const require = createRequire(import.meta.url);
  const publicDir = path.join(PACKAGE_ROOT, 'src', 'web', 'public');
  return new Map([
    ['htmx.min.js', { body: readFileSync(require.resolve('htmx.org/dist/htmx.min.js')), type: 'text/javascript; charset=utf-8' }],
    ['app.css', { body: readFileSync(path.join(publicDir, 'app.css')), type: 'text/css; charset=utf-8' }],
    ['favicon.svg', { body: readFileSync(path.join(publicDir, 'favicon.svg')), type: 'image/svg+xml' }],
  ]);
}

export async function buildWebApp(ctx: WebContext, options: WebAppOptions & { readonly httpLimits?: HttpLimits } = {}): Promise<FastifyInstance> {
  const limits = options.httpLimits ?? DEFAULT_HTTP_LIMITS;
  const app = Fastify({
    requestTimeout: limits.requestTimeoutMs,
    connectionTimeout: limits.connectionTimeoutMs,
    http: { headersTimeout: limits.headersTimeoutMs, connectionsCheckingInterval: limits.timeoutCheckMs },
    loggerInstance: ctx.logger.child({ component: 'web' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: !options.logRequests }),
    bodyLimit: 1024 * 1024,
    trustProxy: false,
    // An unknown field is a typo the caller wants to hear about, not something to drop silently.
    ajv: { customOptions: { removeAdditional: false } },
  });
  app.server.maxConnections = limits.maxConnections;
  let lastDropLog = 0;
  let dropped = 0;
  app.server.on('drop', (data?: { remoteAddress?: string }) => {
    dropped++;
    const now = Date.now();
    if (now - lastDropLog < 60_000) return;
    lastDropLog = now;
    ctx.logger.warn(
      { from: data?.remoteAddress, dropped, maxConnections: limits.maxConnections },
      `HTTP connections refused: ${limits.maxConnections} are open already (a client holding many connections, or a very busy network)`,
    );
    dropped = 0;
  });
  const secure = ctx.config.secureCookies;
  const idleSeconds = options.sessionIdleSeconds ?? DEFAULT_IDLE_SECONDS;
  const sessions = new SessionStore(idleSeconds * 1000);
  const verifier = new VerifyTracker((name, state) => {
    void ctx.events.record(state.state === 'ok' ? 'info' : 'error', `verify of image ${name}: ${state.message}`);
  });
  ctx.commands.onImageRenamed((from, to) => verifier.rename(from, to));
  ctx.commands.onPasswordChanged((username) => sessions.destroyAllFor(username));
  const loginLimit = { max: options.loginRateLimit?.max ?? 10, timeWindow: options.loginRateLimit?.timeWindowMs ?? 60_000 };

  await app.register(cookie, { secret: await ensureSessionSecret(ctx.db) });
  await app.register(formbody, { bodyLimit: 64 * 1024 });
  await app.register(helmet, {
    contentSecurityPolicy: {
      useDefaults: true,
      directives: {
        'default-src': ["'self'"],
        'script-src': ["'self'"],
        'style-src': ["'self'"],
        'img-src': ["'self'", 'data:'],
        'connect-src': ["'self'"],
        'form-action': ["'self'"],
        'frame-ancestors': ["'none'"],
        // On plain HTTP (the usual LAN appliance) upgrading requests would break every page.
        'upgrade-insecure-requests': secure ? [] : null,
      },
    },
    strictTransportSecurity: secure ? undefined : false,
  });
  await app.register(rateLimit, { global: false });
  await app.register(csrf, {
    sessionPlugin: '@fastify/cookie',
    cookieKey: '_csrf',
    cookieOpts: { path: '/', sameSite: 'strict', httpOnly: true, secure, signed: true },
  });
  await app.register(swagger, {
    openapi: {
      info: { title: 'netclone API', version: '1', description: 'Hosts, images, tasks and events of a netclone appliance. Authenticate with "Authorization: Bearer <token>" (netclone admin token create --name NAME).' },
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer' },
          session: { type: 'apiKey', in: 'cookie', name: 'nc_session' },
        },
      },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: true });

  installAuthHooks(app, ctx.db, sessions);

  const pageFor = (req: Parameters<typeof renderPage>[0], reply: Parameters<typeof renderPage>[1]) => (message: string, status: number): string =>
    renderPage(req, reply, {
      title: status === 404 ? 'Not found' : 'Problem',
      section: 'none',
      body: html`<section class="card narrow"><h1>${status === 404 ? 'Not found' : 'That did not work'}</h1><p class="error">${message}</p><p><a href="/">Back to the dashboard</a></p></section>`,
    });

  app.setErrorHandler((error, req, reply) => {
    const problem = classifyError(error);
    if (problem.status >= 500) req.log.error({ err: error, url: req.url }, 'request failed');
    else req.log.debug({ status: problem.status, url: req.url, message: problem.message }, 'request refused');
    return returnRefusedForm(req, reply, problem) ?? sendProblem(req, reply, problem, pageFor(req, reply));
  });

  app.setNotFoundHandler((req, reply) =>
    sendProblem(req, reply, { status: 404, message: `nothing at ${req.url.split('?')[0].slice(0, 200)}` }, pageFor(req, reply)));

  const files = loadStaticFiles();
  app.get<{ Params: { file: string } }>('/static/:file', { schema: { hide: true } }, async (req, reply) => {
    const f = files.get(req.params.file);
    if (!f) return sendProblem(req, reply, { status: 404, message: 'no such file' }, pageFor(req, reply));
    return reply.type(f.type).header('Cache-Control', 'public, max-age=3600').send(f.body);
  });
  app.get('/favicon.ico', { schema: { hide: true } }, async (_req, reply) => {
    const f = files.get('favicon.svg');
    return reply.type('image/svg+xml').header('Cache-Control', 'public, max-age=86400').send(f?.body);
  });

  // Before the API: its Accept: text/csv hook must be in place when the JSON routes are added.
  registerExportRoutes(app, ctx);
  registerApi(app, ctx, verifier);
  registerProtectionRoutes(app, ctx);
  registerPages(app, { ctx, verifier, sessions, cookie: { secure }, loginLimit });
  registerGroupRoutes(app, ctx, { scheduleHref: scheduleHrefForGroup });
  registerScheduleRoutes(app, ctx);
  registerRetentionRoutes(app, ctx, verifier);

  for (const plugin of options.extraPlugins ?? []) await app.register(plugin);

  if (options.announceSetup !== false) {
    const token = await issueSetupToken(ctx.db);
    if (token) {
      const host = ctx.config.serverIp ?? 'SERVER';
      ctx.logger.warn(
        { setup: `/setup?token=${token}` },
        `no admin password yet: open http://${host}:${ctx.config.httpPort}/setup?token=${token} to set it (or run "netclone admin passwd")`,
      );
    }
  }
  return app;
}

