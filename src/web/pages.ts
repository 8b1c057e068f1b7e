/** The admin pages: full pages for navigation, small fragments for htmx polling, form actions that redirect back. */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { isActive } from '../domain/tasks.js';
import { checkLogin, hasAdmin, setAdminPassword, setupTokenValid, ADMIN_USERNAME, UserError } from '../domain/users.js';
import { hostState, type HostPatch } from '../domain/commands.js';
import type { VerifyTracker } from './verify-tracker.js';
import { diskUsage, requestHost } from './api.js';
import { operatorOf, SESSION_COOKIE, safeNext } from './auth.js';
import type { WebContext } from './context.js';
import type { SafeHtml } from './html.js';
import { html } from './html.js';
import type { SessionStore } from './sessions.js';
import { csrfField, page, type PageFrame } from './pages/layout.js';
import { setFlash, takeFlash } from './flash.js';
import { backOf, withBackFields } from './form-return.js';
import { dashboard } from './pages/dashboard.js';
import { protectionOf } from '../domain/protection-data.js';
import { addHostForm, hostPage, hostsTable } from './pages/hosts.js';
import { deployFormFor, taskFormInput, unconfirmedMismatch } from './deploy-form.js';
import { hostFilterForm, hostList } from './pages/host-list.js';
import { filterChoices, filterHosts, hostFilterQuery, parseHostFilter } from './host-filter.js';
import { imagePage, imagesTable, urlBox, verifyBox } from './pages/images.js';
import { activeTasks, taskDetail, taskHistory, taskProgress } from './pages/tasks.js';
import { loginForm, settingsPage, setupForm, setupInvalid } from './pages/auth.js';
import { IMAGE_PATTERN, MacParams, ImageParams, TaskParams, VersionParams } from './schemas.js';

const csrfCache = new WeakMap<FastifyRequest, string>();

/** One CSRF token per request (each generateCsrf call without a cookie would mint a new secret). */
export function csrfFor(req: FastifyRequest, reply: FastifyReply): string {
  let token = csrfCache.get(req);
  if (!token) {
    token = reply.generateCsrf();
    csrfCache.set(req, token);
  }
  return token;
}

export interface PageDeps {
  readonly ctx: WebContext;
  readonly verifier: VerifyTracker;
  readonly sessions: SessionStore;
  readonly cookie: { readonly secure: boolean };
  readonly loginLimit: { readonly max: number; readonly timeWindow: number };
}

export function renderPage(req: FastifyRequest, reply: FastifyReply, frame: Omit<PageFrame, 'csrf' | 'username' | 'notice' | 'noticeKind'>): string {
  const username = req.auth?.kind === 'session' ? req.auth.username : null;
  const csrf = csrfFor(req, reply);
  const flash = takeFlash(req);
  return withBackFields(page({ ...frame, csrf, username, notice: flash?.message ?? null, noticeKind: flash?.kind }).value, req, csrfField(csrf).value);
}

function sendHtml(reply: FastifyReply, body: string | SafeHtml, status = 200): FastifyReply {
  return reply.code(status).type('text/html; charset=utf-8').header('Cache-Control', 'no-store').send(typeof body === 'string' ? body : body.value);
}

const FormMac = Type.Object({ mac: Type.String({ maxLength: 64 }), name: Type.Optional(Type.String({ maxLength: 64 })), _csrf: Type.Optional(Type.String()) });
const FormHost = Type.Object({
  name: Type.Optional(Type.String({ maxLength: 64 })),
  assignedImage: Type.Optional(Type.String({ maxLength: 64 })),
  localBoot: Type.Optional(Type.Union([Type.Literal(''), Type.Literal('exit'), Type.Literal('sanboot')])),
  efiLoader: Type.Optional(Type.Union([Type.Literal('snponly.efi'), Type.Literal('ipxe.efi')])),
  uefiBoot: Type.Optional(Type.Union([Type.Literal(''), Type.Literal('ipxe'), Type.Literal('signed')])),
  _csrf: Type.Optional(Type.String()),
});
const FormTask = Type.Object({
  image: Type.Optional(Type.String({ maxLength: 64 })), wake: Type.Optional(Type.String({ maxLength: 8 })), mainPartition: Type.Optional(Type.String({ maxLength: 16 })),
  version: Type.Optional(Type.String({ maxLength: 16 })), diskSerial: Type.Optional(Type.String({ maxLength: 128 })), after: Type.Optional(Type.String({ maxLength: 16 })), force: Type.Optional(Type.String({ maxLength: 8 })),
  _csrf: Type.Optional(Type.String()),
});
const FormRename = Type.Object({ to: Type.String({ pattern: IMAGE_PATTERN }), _csrf: Type.Optional(Type.String()) });
const FormLogin = Type.Object({ username: Type.String({ maxLength: 128 }), password: Type.String({ maxLength: 1024 }), next: Type.Optional(Type.String({ maxLength: 500 })), _csrf: Type.Optional(Type.String()) });
const FormSetup = Type.Object({ token: Type.String({ maxLength: 200 }), password: Type.String({ maxLength: 1024 }), confirm: Type.String({ maxLength: 1024 }), _csrf: Type.Optional(Type.String()) });
const FormToken = Type.Object({ name: Type.String({ maxLength: 64 }), _csrf: Type.Optional(Type.String()) });
const FormPassword = Type.Object({ current: Type.String({ maxLength: 1024 }), password: Type.String({ maxLength: 1024 }), _csrf: Type.Optional(Type.String()) });
const TokenIdParams = Type.Object({ id: Type.String({ maxLength: 64, pattern: '^[A-Za-z0-9-]+$' }) });

export function registerPages(app: FastifyInstance, deps: PageDeps): void {
  const { ctx, verifier, sessions } = deps;
  const { commands } = ctx;
  const hide = { hide: true };

  const names = (): Map<string, string> => new Map(ctx.hosts.list().map((h) => [h.mac, h.name]));

  const startSession = (reply: FastifyReply, username: string): void => {
    const session = sessions.create(username);
    reply.setCookie(SESSION_COOKIE, session.id, {
      // No max-age: the server ends idle sessions; the browser drops the cookie when it closes.
      path: '/', httpOnly: true, sameSite: 'strict', secure: deps.cookie.secure, signed: true,
    });
  };

  // Login, setup, logout
  app.get<{ Querystring: { next?: string } }>('/login', { schema: hide }, async (req, reply) => {
    if (req.auth) return reply.redirect(safeNext(req.query.next), 303);
    return sendHtml(reply, renderPage(req, reply, { title: 'Log in', section: 'none', body: loginForm(csrfFor(req, reply), null, safeNext(req.query.next), !hasAdmin(ctx.db)) }));
  });

  app.post<{ Body: Static<typeof FormLogin> }>('/login', {
    schema: { ...hide, body: FormLogin },
    config: { rateLimit: deps.loginLimit },
  }, async (req, reply) => {
    const user = await checkLogin(ctx.db, req.body.username, req.body.password);
    if (!user) {
      req.log.warn({ username: req.body.username.slice(0, 64), ip: req.ip }, 'failed admin login');
      return sendHtml(reply, renderPage(req, reply, { title: 'Log in', section: 'none', body: loginForm(csrfFor(req, reply), 'Wrong username or password.', safeNext(req.body.next), !hasAdmin(ctx.db)) }), 401);
    }
    startSession(reply, user.username);
    return reply.redirect(safeNext(req.body.next), 303);
  });

  app.get<{ Querystring: { token?: string } }>('/setup', { schema: hide, config: { rateLimit: deps.loginLimit } }, async (req, reply) => {
    const token = typeof req.query.token === 'string' ? req.query.token : '';
    if (!setupTokenValid(ctx.db, token)) return sendHtml(reply, renderPage(req, reply, { title: 'Setup', section: 'none', body: setupInvalid() }), 403);
    return sendHtml(reply, renderPage(req, reply, { title: 'Setup', section: 'none', body: setupForm(csrfFor(req, reply), token, null) }));
  });

  app.post<{ Body: Static<typeof FormSetup> }>('/setup', { schema: { ...hide, body: FormSetup }, config: { rateLimit: deps.loginLimit } }, async (req, reply) => {
    if (!setupTokenValid(ctx.db, req.body.token)) return sendHtml(reply, renderPage(req, reply, { title: 'Setup', section: 'none', body: setupInvalid() }), 403);
    const again = (message: string): FastifyReply =>
      sendHtml(reply, renderPage(req, reply, { title: 'Setup', section: 'none', body: setupForm(csrfFor(req, reply), req.body.token, message) }), 400);
    if (req.body.password !== req.body.confirm) return again('The two passwords differ.');
    try {
      await setAdminPassword(ctx.db, req.body.password);
    } catch (e) {
      if (e instanceof UserError) return again(`Not set: ${e.message}.`);
      throw e;
    }
    await ctx.events.record('info', 'admin password set through the setup link');
    startSession(reply, ADMIN_USERNAME);
    return reply.redirect('/', 303);
  });

  app.post('/logout', { schema: hide }, async (req, reply) => {
    if (req.auth?.session) sessions.destroy(req.auth.session.id);
    reply.clearCookie(SESSION_COOKIE, { path: '/' });
    return reply.redirect('/login', 303);
  });

  // Dashboard
  app.get('/', { schema: hide }, async (req, reply) => {
    const hosts = ctx.hosts.list();
    const body = dashboard({
      services: ctx.services(),
      bootFiles: await ctx.bootFiles(),
      disk: await diskUsage(ctx.config.imagesDir),
      imagesDir: ctx.config.imagesDir,
      active: ctx.tasks.list({ active: true }),
      events: ctx.events.recent(15),
      counts: { hosts: hosts.length, images: (await commands.listImages(operatorOf(req))).length, unregistered: hosts.filter((h) => !h.registered).length },
      csrf: csrfFor(req, reply),
      names: names(),
      protection: protectionOf(ctx.db.data, new Date()),
      space: await commands.storeSpace(operatorOf(req)).catch(() => null),
    });
    return sendHtml(reply, renderPage(req, reply, { title: 'Dashboard', section: 'dashboard', body }));
  });

  // Hosts
  const hostStates = (): Map<string, ReturnType<typeof hostState>> => {
    const tasks = ctx.tasks.list();
    return new Map(ctx.hosts.list().map((h) => [h.mac, hostState(h, tasks)]));
  };

  app.get('/hosts', { schema: hide }, async (req, reply) => {
    const all = ctx.hosts.list();
    const states = hostStates();
    const filter = parseHostFilter(req.query);
    const shown = filterHosts(all, states, filter);
    const table = hostsTable(shown, states, hostFilterQuery(filter), csrfFor(req, reply));
    const body = html`<h1>Hosts</h1>${all.length > 0 ? hostFilterForm(filter, filterChoices(all)) : ''}${hostList(filter, shown.length, all.length, table)}${addHostForm(csrfFor(req, reply))}`;
    return sendHtml(reply, renderPage(req, reply, { title: 'Hosts', section: 'hosts', body }));
  });

  app.get('/hosts/table', { schema: hide }, async (req, reply) => {
    const states = hostStates();
    const filter = parseHostFilter(req.query);
    return sendHtml(reply, hostsTable(filterHosts(ctx.hosts.list(), states, filter), states, hostFilterQuery(filter), csrfFor(req, reply)));
  });

  app.post<{ Body: Static<typeof FormMac> }>('/hosts', { schema: { ...hide, body: FormMac } }, async (req, reply) => {
    const host = await commands.addHost(operatorOf(req), req.body.mac, req.body.name?.trim());
    setFlash(req, `Host ${host.mac} added.`);
    return reply.redirect(`/hosts/${host.mac}`, 303);
  });

  app.get<{ Params: Static<typeof MacParams> }>('/hosts/:mac', { schema: { ...hide, params: MacParams } }, async (req, reply) => {
    const host = ctx.hosts.require(req.params.mac);
    const tasks = ctx.tasks.list({ mac: host.mac });
    const images = await commands.listImages(operatorOf(req));
    const body = hostPage({
      host, state: hostState(host, tasks), active: tasks.find(isActive), tasks, events: ctx.events.recent(20, host.mac),
      images, csrf: csrfFor(req, reply),
      // The query is the deploy form's fields: it re-renders itself from here when the image, version or disk changes.
      deploy: await deployFormFor(commands, operatorOf(req), host, images, req.query as Record<string, unknown>, csrfFor(req, reply)),
    });
    return sendHtml(reply, renderPage(req, reply, { title: host.name || host.mac, section: 'hosts', body }));
  });

  app.post<{ Params: Static<typeof MacParams>; Body: Static<typeof FormHost> }>('/hosts/:mac', { schema: { ...hide, params: MacParams, body: FormHost } }, async (req, reply) => {
    const patch: HostPatch = {};
    if (req.body.name !== undefined) patch.name = req.body.name.trim();
    if (req.body.assignedImage !== undefined) patch.assignedImage = req.body.assignedImage === '' ? null : req.body.assignedImage;
    if (req.body.localBoot !== undefined) patch.localBoot = req.body.localBoot === '' ? null : req.body.localBoot;
    if (req.body.efiLoader !== undefined) patch.efiLoader = req.body.efiLoader;
    if (req.body.uefiBoot !== undefined) patch.uefiBoot = req.body.uefiBoot === '' ? null : req.body.uefiBoot;
    const host = await commands.updateHost(operatorOf(req), req.params.mac, patch);
    setFlash(req, `Saved ${host.name || host.mac}.`);
    return reply.redirect(`/hosts/${host.mac}`, 303);
  });

  app.post<{ Params: Static<typeof MacParams> }>('/hosts/:mac/delete', { schema: { ...hide, params: MacParams } }, async (req, reply) => {
    const host = ctx.hosts.require(req.params.mac);
    await commands.removeHost(operatorOf(req), host.mac);
    setFlash(req, `Host ${host.name || host.mac} removed.`);
    return reply.redirect('/hosts', 303);
  });

  for (const kind of ['capture', 'deploy'] as const) {
    app.post<{ Params: Static<typeof MacParams>; Body: Static<typeof FormTask> }>(`/hosts/:mac/${kind}`, { schema: { ...hide, params: MacParams, body: FormTask } }, async (req, reply) => {
      const { input, choice } = taskFormInput(kind, req.params.mac, req.body, ctx.hosts.get(req.params.mac));
      // Another PC model: back to the form, which shows why and asks for "Deploy anyway".
      const confirm = await unconfirmedMismatch(commands, operatorOf(req), input, choice);
      if (confirm) {
        setFlash(req, confirm.message);
        return reply.redirect(confirm.back, 303);
      }
      const { task, wake } = await commands.startTask(operatorOf(req), input);
      setFlash(req, `${kind === 'capture' ? 'Capture' : 'Deploy'} of ${task.image} queued: network-boot the PC now${wake ? `; ${wake.detail}` : ''}.`);
      return reply.redirect(`/hosts/${task.mac}`, 303);
    });
  }

  // Images
  app.get('/images', { schema: hide }, async (req, reply) => {
    const space = await commands.storeSpace(operatorOf(req)).catch(() => null);
    const body = html`<h1>Images</h1>${imagesTable(await commands.listImages(operatorOf(req)), (n) => verifier.get(n), space)}`;
    return sendHtml(reply, renderPage(req, reply, { title: 'Images', section: 'images', body }));
  });

  app.get<{ Params: Static<typeof ImageParams> }>('/images/:name', { schema: { ...hide, params: ImageParams } }, async (req, reply) => {
    const image = await commands.showImage(operatorOf(req), req.params.name);
    const body = imagePage({ image, verify: verifier.get(req.params.name), csrf: csrfFor(req, reply) });
    return sendHtml(reply, renderPage(req, reply, { title: req.params.name, section: 'images', body }));
  });

  app.post<{ Params: Static<typeof ImageParams> }>('/images/:name/verify', { schema: { ...hide, params: ImageParams } }, async (req, reply) => {
    const actor = operatorOf(req);
    await commands.checkVerifiable(actor, req.params.name);
    const state = verifier.start(req.params.name, undefined, (name, version) => commands.verifyImage(actor, name, { version }));
    if (req.headers['hx-request'] === 'true') return sendHtml(reply, verifyBox(req.params.name, state, csrfFor(req, reply)));
    return reply.redirect(`/images/${req.params.name}`, 303);
  });

  app.get<{ Params: Static<typeof ImageParams> }>('/images/:name/verify-status', { schema: { ...hide, params: ImageParams } }, async (req, reply) =>
    sendHtml(reply, verifyBox(req.params.name, verifier.get(req.params.name), csrfFor(req, reply))));

  app.post<{ Params: Static<typeof ImageParams> }>('/images/:name/url', { schema: { ...hide, params: ImageParams } }, async (req, reply) => {
    const url = await commands.imageUrl(operatorOf(req), { image: req.params.name, write: false, host: requestHost(req.headers.host) });
    if (req.headers['hx-request'] === 'true') return sendHtml(reply, urlBox(url, req.params.name, csrfFor(req, reply)));
    setFlash(req, `nbd:// URL (read-only, until ${url.expiresAt}): ${url.uri}`);
    return reply.redirect(`/images/${req.params.name}`, 303);
  });

  app.post<{ Params: Static<typeof ImageParams>; Body: Static<typeof FormRename> }>('/images/:name/rename', { schema: { ...hide, params: ImageParams, body: FormRename } }, async (req, reply) => {
    await commands.renameImage(operatorOf(req), req.params.name, req.body.to);
    setFlash(req, `Image ${req.params.name} is now called ${req.body.to}.`);
    return reply.redirect(`/images/${req.body.to}`, 303);
  });

  app.post<{ Params: Static<typeof VersionParams> }>('/images/:name/versions/:n/delete', { schema: { ...hide, params: VersionParams } }, async (req, reply) => {
    await commands.removeVersion(operatorOf(req), req.params.name, req.params.n);
    setFlash(req, `Version ${req.params.n} of ${req.params.name} deleted.`);
    const left = (await commands.imageNames(operatorOf(req))).includes(req.params.name);
    return reply.redirect(left ? `/images/${req.params.name}` : '/images', 303);
  });

  // Tasks
  app.get('/tasks', { schema: hide }, async (req, reply) => {
    const n = names();
    const body = html`<h1>Tasks</h1><section><h2>Running and queued</h2>${activeTasks(ctx.tasks.list({ active: true }), csrfFor(req, reply), n)}</section>
<section class="card"><header><h2>History</h2><a class="right" href="/api/v1/tasks.csv" download>Export as CSV</a></header>${taskHistory(ctx.tasks.list({ active: false }).slice(0, 200), n)}</section>`;
    return sendHtml(reply, renderPage(req, reply, { title: 'Tasks', section: 'tasks', body }));
  });

  app.get('/tasks/active', { schema: hide }, async (req, reply) =>
    sendHtml(reply, activeTasks(ctx.tasks.list({ active: true }), csrfFor(req, reply), names())));

  app.get<{ Params: Static<typeof TaskParams> }>('/tasks/:id', { schema: { ...hide, params: TaskParams } }, async (req, reply) => {
    const task = ctx.tasks.require(req.params.id);
    const body = taskDetail(task, csrfFor(req, reply), ctx.hosts.get(task.mac)?.name ?? '');
    return sendHtml(reply, renderPage(req, reply, { title: `${task.kind} ${task.image}`, section: 'tasks', body }));
  });

  app.get<{ Params: Static<typeof TaskParams> }>('/tasks/:id/progress', { schema: { ...hide, params: TaskParams } }, async (req, reply) =>
    sendHtml(reply, taskProgress(ctx.tasks.require(req.params.id))));

  app.post<{ Params: Static<typeof TaskParams> }>('/tasks/:id/cancel', { schema: { ...hide, params: TaskParams } }, async (req, reply) => {
    const task = await commands.cancelTask(operatorOf(req), req.params.id);
    setFlash(req, `${task.kind} of ${task.image} on ${task.mac} cancelled.`);
    return reply.redirect(backOf(req) ?? `/tasks/${task.id}`, 303);
  });

  // Settings: API tokens and the admin password
  const settings = async (req: FastifyRequest, reply: FastifyReply, created: { name: string; token: string } | null): Promise<FastifyReply> =>
    sendHtml(reply, renderPage(req, reply, { title: 'Settings', section: 'settings', body: settingsPage(commands.listApiTokens(operatorOf(req)), csrfFor(req, reply), created) }));

  app.get('/settings', { schema: hide }, async (req, reply) => settings(req, reply, null));

  app.post<{ Body: Static<typeof FormToken> }>('/settings/tokens', { schema: { ...hide, body: FormToken } }, async (req, reply) => {
    const created = await commands.createApiToken(operatorOf(req), req.body.name.trim());
    // Shown once, in this response; a redirect would have to carry the secret somewhere. htmx keeps
    // /settings in the address bar, where a reload shows the page rather than "Not found".
    reply.header('HX-Push-Url', '/settings');
    return settings(req, reply, { name: created.record.name, token: created.token });
  });

  app.post<{ Params: Static<typeof TokenIdParams> }>('/settings/tokens/:id/revoke', { schema: { ...hide, params: TokenIdParams } }, async (req, reply) => {
    const record = await commands.revokeApiToken(operatorOf(req), req.params.id);
    setFlash(req, `Token ${record.name} revoked.`);
    return reply.redirect('/settings', 303);
  });

  app.post<{ Body: Static<typeof FormPassword> }>('/settings/password', { schema: { ...hide, body: FormPassword }, config: { rateLimit: deps.loginLimit } }, async (req, reply) => {
    const username = req.auth?.kind === 'session' ? req.auth.username : ADMIN_USERNAME;
    if (!(await checkLogin(ctx.db, username, req.body.current))) throw new UserError(400, 'the current password is wrong');
    // Ends every session of this user, this one too; the person who changed it stays logged in.
    await commands.setAdminPassword(operatorOf(req), req.body.password);
    startSession(reply, username);
    return reply.redirect('/settings', 303);
  });
}
