/**
 * What a network-booting PC talks to over HTTP: its per-MAC iPXE script, the menu's
 * actions, the iPXE EFI binary (UEFI HTTP boot) and the imaging client's kernel and
 * initrd. The policy decides; this file only carries it out.
 *
 * Who gets what:
 * - The boot script is public (DHCP points PCs at it). It carries a task token only when it is
 *   asked for from the address DHCP tied to that MAC lately (BootAddresses); the token is bound
 *   to that address. Anyone else gets a script without a token, and the real PC's token stands.
 * - Menu actions (register, capture, deploy, start a waiting task) change state, so they are
 *   POST only and need a technician's login typed at the PC (iPXE `login`), checked against the
 *   appliance's users. A GET there changes nothing. Image names are listed only after a login.
 *   The same actions come from the imaging client in menu mode (menu-routes.ts) for loaders that
 *   cannot POST: both go through one login check (TechnicianLogins) and one set of rules
 *   (performTechnicianAction).
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../domain/config.js';
import type { Database, Firmware, HostRecord, LocalBoot, TaskRecord, UserRecord } from '../domain/database.js';
import type { BootAddresses } from '../domain/boot-addresses.js';
import type { HostService } from '../domain/hosts.js';
import type { TaskService } from '../domain/tasks.js';
import { checkLogin, MAX_PASSWORD_LENGTH } from '../domain/users.js';
import { normalizeMac } from '../lib/mac.js';
import { HostError } from '../domain/hosts.js';
import { TaskError } from '../domain/tasks.js';
import { isValidImageName } from '../imaging/names.js';
import { menuRoutes } from './menu-routes.js';
import { decideBoot, localBootMethod, type IpxePlatform } from '../domain/boot-policy.js';
import {
  scriptChainUndionly, scriptClient, scriptDeployChoice, scriptLocal, scriptMenu, scriptNotice, scriptUnconfirmed, scriptUnfinishedDeploy, type ScriptContext,
} from '../pxe/ipxe-script.js';
import { plainAddress } from '../lib/addresses.js';
import type { Logger } from '../lib/log.js';

export interface BootRoutesContext {
  readonly config: Config;
  readonly logger: Logger;
  /** For technician logins at the PC (the appliance's users). */
  readonly db: Database;
  readonly hosts: HostService;
  readonly tasks: TaskService;
  /** Where DHCP saw each MAC lately; the runtime's DHCP service feeds it. */
  readonly bootAddresses: BootAddresses;
  /** Names of images with a committed version, for the menu. */
  imageNames(): Promise<string[]>;
}

/** The address:port the PC reached us on, unless the operator pinned one. */
export function httpBaseFor(req: FastifyRequest, config: Config): string {
  if (config.serverIp) return `${config.serverIp}:${config.httpPort}`;
  const local = plainAddress(req.socket.localAddress ?? '127.0.0.1');
  const host = local.includes(':') ? `[${local}]` : local;
  return `${host}:${req.socket.localPort ?? config.httpPort}`;
}

function platformOf(value: unknown): IpxePlatform {
  return value === 'pcbios' || value === 'efi' ? value : 'unknown';
}

function firmwareOf(platform: IpxePlatform, arch: unknown): Firmware {
  if (platform === 'pcbios') return 'bios';
  if (platform === 'efi') return arch === 'arm64' ? 'arm64' : 'uefi';
  return 'unknown';
}

interface BootQuery {
  mac?: string;
  platform?: string;
  arch?: string;
  chip?: string;
}

/** What the menu's form POSTs carry (see loginAndPost in ipxe-script.ts). */
type ActionBody = Partial<Record<'mac' | 'platform' | 'do' | 'image' | 'username' | 'password', unknown>>;

type Action = 'register' | 'capture' | 'deploy-list' | 'deploy' | 'start';
const ACTIONS: ReadonlySet<string> = new Set<Action>(['register', 'capture', 'deploy-list', 'deploy', 'start']);

// Own-property lookups only: a Map, so "__proto__" or "constructor" is just an unknown file.
const CLIENT_FILES: ReadonlyMap<string, string> = new Map([['vmlinuz', 'dist/vmlinuz'], ['initrd.img', 'dist/initrd.img']]);
const LOADER_FILES: ReadonlySet<string> = new Set(['ipxe.efi', 'snponly.efi', 'undionly.kpxe']);

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
 * Technician logins typed at a PC, from the iPXE menu or the imaging client's menu: one check
 * against the appliance's users and one failure count per address for both, so switching between
 * them gives a password guesser no extra tries.
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

/** What a technician at a PC may ask for once logged in. */
export type TechnicianAction = 'register' | 'capture' | 'deploy' | 'start';

export interface TechnicianActionRequest {
  readonly mac: string;
  readonly what: TechnicianAction;
  /** Capture: the new image's name (default: defaultCaptureImage). Deploy: the image, which must have a committed version. */
  readonly image?: string;
  /** Where the request came from: a task's token is bound to it. */
  readonly ip: string;
  readonly user: string;
  /** Which menu the technician used, for the log. */
  readonly via: 'boot menu' | 'client menu';
}

export type TechnicianActionOutcome =
  | { readonly kind: 'registered'; readonly already: boolean }
  | { readonly kind: 'task'; readonly task: TaskRecord; readonly token: string }
  | { readonly kind: 'refused'; readonly status: 400 | 403 | 404 | 409; readonly message: string };

/** A capture started at the PC is named after it: its name as an image name, else pc-<mac digits>. */
export function defaultCaptureImage(host: Pick<HostRecord, 'name'> | undefined, mac: string): string {
  const fromName = host?.name ? host.name.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').replace(/\.\.+/g, '.').slice(0, 64) : '';
  return fromName && isValidImageName(fromName) ? fromName : `pc-${mac.replace(/:/g, '')}`;
}

export interface TechnicianActionContext {
  readonly logger: Logger;
  readonly hosts: HostService;
  readonly tasks: TaskService;
  imageNames(): Promise<string[]>;
}

/**
 * The rules of every action a logged-in technician starts at a PC, whichever menu sent it.
 * A task created or started here gets a fresh token bound to `ip`, the address the technician
 * sent the request from, so the imaging client there (and only there) can use it.
 * Refusals the technician can act on come back as `refused`; anything else throws.
 */
export async function performTechnicianAction(ctx: TechnicianActionContext, req: TechnicianActionRequest): Promise<TechnicianActionOutcome> {
  const { mac, ip, user, via } = req;
  const handOut = async (task: TaskRecord): Promise<TechnicianActionOutcome> => {
    const token = await ctx.tasks.beginBoot(task, ip);
    ctx.logger.info({ mac, ip, task: task.id, user, via }, `${via}: ${task.kind} of ${task.image} starts at the PC; its token is bound to ${ip}`);
    return { kind: 'task', task, token };
  };
  const refuse = (status: 400 | 403 | 404 | 409, message: string): TechnicianActionOutcome => {
    ctx.logger.warn({ mac, ip, user, via, do: req.what, image: req.image?.slice(0, 80) }, `${via}: ${req.what} refused: ${message}`);
    return { kind: 'refused', status, message };
  };
  try {
    switch (req.what) {
      case 'register': {
        const already = ctx.hosts.get(mac)?.registered === true;
        await ctx.hosts.register(mac);
        ctx.logger.info({ mac, ip, user, via }, already ? `${via}: PC was registered already` : `${via}: PC registered`);
        return { kind: 'registered', already };
      }
      case 'capture': {
        const image = req.image ?? defaultCaptureImage(ctx.hosts.get(mac), mac);
        if (!isValidImageName(image)) {
          return refuse(400, `"${image.slice(0, 80)}" is not a valid image name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
        }
        await ctx.hosts.register(mac);
        return await handOut(await ctx.tasks.create({ kind: 'capture', mac, image }));
      }
      case 'deploy': {
        const image = req.image ?? '';
        if (!(await ctx.imageNames()).includes(image)) return refuse(404, 'no image by that name has a committed version, nothing was changed');
        await ctx.hosts.register(mac);
        return await handOut(await ctx.tasks.create({ kind: 'deploy', mac, image }));
      }
      case 'start': {
        const task = ctx.tasks.activeFor(mac);
        if (!task || (task.state !== 'queued' && task.state !== 'booting')) return refuse(409, 'no task waits for this PC');
        return await handOut(task);
      }
    }
  } catch (err) {
    if (err instanceof TaskError || err instanceof HostError) return refuse(err.status, err.message);
    throw err;
  }
}

/** iPXE sends `${username:uristring}`: percent-encoded once more inside the form encoding. */
function credential(value: unknown): string | null {
  if (typeof value !== 'string' || value.length === 0 || value.length > 3 * MAX_PASSWORD_LENGTH) return null;
  try {
    return decodeURIComponent(value);
  } catch {
    return null;
  }
}

export function bootRoutes(ctx: BootRoutesContext) {
  return async function plugin(app: FastifyInstance): Promise<void> {
    const logins = new TechnicianLogins(ctx.db);
    const scriptReply = (reply: FastifyReply, script: string): FastifyReply =>
      reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(script);
    const badMac = (reply: FastifyReply, ip: string, mac: unknown): FastifyReply => {
      ctx.logger.warn({ ip, mac: typeof mac === 'string' ? mac.slice(0, 40) : undefined }, 'boot request with a malformed MAC');
      return scriptReply(reply.code(400), '#!ipxe\necho netclone: bad or missing mac parameter (expected aa:bb:cc:dd:ee:ff)\nexit\n');
    };
    const contextFor = (req: FastifyRequest, mac: string): ScriptContext =>
      ({ httpBase: httpBaseFor(req, ctx.config), mac, menuTimeoutSeconds: ctx.config.menuTimeoutSeconds });

    app.get<{ Querystring: BootQuery }>('/boot/ipxe', async (req, reply) => {
      const ip = plainAddress(req.ip);
      const mac = normalizeMac(String(req.query.mac ?? ''));
      if (!mac) return badMac(reply, ip, req.query.mac);
      const platform = platformOf(req.query.platform);
      const { host, isNew } = await ctx.hosts.sighted({
        mac,
        ip,
        firmware: firmwareOf(platform, req.query.arch),
        arch: typeof req.query.arch === 'string' ? req.query.arch.slice(0, 32) : null,
      });
      const sctx = contextFor(req, mac);
      const task = ctx.tasks.activeFor(mac);
      const chip = typeof req.query.chip === 'string' ? req.query.chip.slice(0, 32) : null;
      const decision = decideBoot(host, task, { platform, chip, address: ctx.bootAddresses.check(mac, ip) }, {
        defaultLocalBoot: ctx.config.localBoot,
        biosUndionlyHop: true,
      }, ctx.tasks.lastStartedDeploy(mac));
      const level = decision.kind === 'unconfirmed' ? 'warn' : 'info';
      ctx.logger[level]({ mac, ip, platform, chip, decision: decision.kind, newHost: isNew }, `boot: ${decision.reason}`);
      const menuHost = { registered: host.registered, name: host.name };
      switch (decision.kind) {
        case 'chain-undionly':
          return scriptReply(reply, scriptChainUndionly(sctx));
        case 'client': {
          const token = await ctx.tasks.beginBoot(decision.task, ip);
          return scriptReply(reply, scriptClient(sctx, decision.task, token));
        }
        case 'unconfirmed':
          return scriptReply(reply, scriptUnconfirmed(sctx, decision.method, menuHost, decision.task));
        case 'local':
          return scriptReply(reply, scriptLocal(decision.method, decision.reason));
        case 'unfinished':
          return scriptReply(reply, scriptUnfinishedDeploy(sctx, decision.method, menuHost, decision.deploy, decision.active));
        case 'menu':
          return scriptReply(reply, scriptMenu(sctx, decision.method, menuHost));
      }
    });

    app.get<{ Querystring: BootQuery & { do?: string } }>('/boot/ipxe/action', async (req, reply) => {
      ctx.logger.warn(
        { ip: plainAddress(req.ip), mac: typeof req.query.mac === 'string' ? req.query.mac.slice(0, 40) : undefined, do: typeof req.query.do === 'string' ? req.query.do.slice(0, 20) : undefined },
        'boot menu action sent as GET: refused, nothing changed (actions are POSTs with a technician login; a GET may come from any web page)',
      );
      return scriptReply(
        reply.code(405).header('allow', 'POST'),
        '#!ipxe\necho netclone: menu actions are sent as POST with a login, nothing was changed\nexit\n',
      );
    });

    app.post<{ Body: ActionBody }>('/boot/ipxe/action', async (req, reply) => {
      const ip = plainAddress(req.ip);
      const body: ActionBody = req.body !== null && typeof req.body === 'object' ? req.body : {};
      const mac = normalizeMac(typeof body.mac === 'string' ? body.mac : '');
      if (!mac) return badMac(reply, ip, body.mac);
      const sctx = contextFor(req, mac);
      const what = typeof body.do === 'string' && ACTIONS.has(body.do) ? (body.do as Action) : null;
      if (!what) {
        ctx.logger.warn({ ip, mac, do: typeof body.do === 'string' ? body.do.slice(0, 20) : undefined }, 'boot menu: unknown action refused');
        return scriptReply(reply.code(400), '#!ipxe\necho netclone: unknown menu action\nexit\n');
      }
      if (logins.blocked(ip)) {
        ctx.logger.warn({ ip, mac, do: what }, `boot menu: ${what} refused, too many failed logins from this address in the last minute`);
        return scriptReply(reply, scriptNotice(sctx, 'too many failed logins from this PC, wait a minute and try again'));
      }
      const username = credential(body.username);
      const password = credential(body.password);
      if (username === null || password === null) {
        ctx.logger.warn({ ip, mac, do: what }, `boot menu: ${what} refused, no login was sent; nothing changed`);
        return scriptReply(reply, scriptNotice(sctx, 'this action needs a login, nothing was changed'));
      }
      const user = await logins.check(ip, username, password);
      if (!user) {
        ctx.logger.warn({ ip, mac, do: what, user: username.slice(0, 64) }, `boot menu: ${what} refused, wrong username or password; nothing changed`);
        return scriptReply(reply, scriptNotice(sctx, 'wrong username or password, nothing was changed'));
      }
      const method: LocalBoot = localBootMethod(ctx.hosts.get(mac), platformOf(body.platform), ctx.config.localBoot);
      if (what === 'deploy-list') {
        ctx.logger.info({ mac, ip, user: user.username }, 'boot menu: image list shown at the PC');
        return scriptReply(reply, scriptDeployChoice(sctx, method, await ctx.imageNames()));
      }
      try {
        const outcome = await performTechnicianAction(ctx, {
          mac, what, ip, user: user.username, via: 'boot menu',
          image: what === 'deploy' ? (typeof body.image === 'string' ? body.image : '') : undefined,
        });
        switch (outcome.kind) {
          case 'registered':
            return scriptReply(reply, scriptLocal(method, outcome.already ? 'this PC was registered already, booting the local disk' : 'registered, booting the local disk'));
          case 'task':
            return scriptReply(reply, scriptClient(sctx, outcome.task, outcome.token));
          case 'refused':
            return scriptReply(reply, scriptNotice(sctx, outcome.message));
        }
      } catch (err) {
        const message = (err as Error).message;
        ctx.logger.warn({ mac, ip, do: what, err: message }, 'boot menu action refused');
        return scriptReply(reply, scriptNotice(sctx, message));
      }
    });

    await app.register(menuRoutes({ logger: ctx.logger, hosts: ctx.hosts, tasks: ctx.tasks, imageNames: () => ctx.imageNames(), logins, act: (r) => performTechnicianAction(ctx, r) }));

    const sendFile = async (reply: FastifyReply, file: string, what: string): Promise<FastifyReply> => {
      try {
        const st = await stat(file);
        return reply.type('application/octet-stream').header('content-length', st.size).send(createReadStream(file));
      } catch {
        ctx.logger.error({ file }, `${what} is missing`);
        return reply.code(404).type('text/plain').send(`${what} is missing on the server (${path.basename(file)})\n`);
      }
    };

    app.get<{ Params: { file: string } }>('/boot/client/:file', async (req, reply) => {
      const rel = CLIENT_FILES.get(req.params.file);
      if (!rel) return reply.code(404).type('text/plain').send('no such client file\n');
      const ip = plainAddress(req.ip);
      ctx.logger.info({ ip, mac: ctx.hosts.byIp(ip)?.mac, file: req.params.file }, 'boot: serving the imaging client');
      return sendFile(reply, path.join(ctx.config.bootDir, rel), 'the imaging client (run npm run build:client)');
    });

    app.get<{ Params: { file: string } }>('/boot/:file', async (req, reply) => {
      if (!LOADER_FILES.has(req.params.file)) return reply.code(404).type('text/plain').send('no such boot file\n');
      const ip = plainAddress(req.ip);
      ctx.logger.info({ ip, mac: ctx.hosts.byIp(ip)?.mac, file: req.params.file }, 'boot: serving an iPXE loader over HTTP');
      return sendFile(reply, path.join(ctx.config.bootDir, 'loaders', req.params.file), 'the iPXE loader (run npm run setup:boot)');
    });
  };
}
