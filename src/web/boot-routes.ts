/**
 * What a network-booting PC talks to over HTTP: its per-MAC iPXE script, the menu's
 * actions, the iPXE loaders (UEFI HTTP boot) and the imaging client's kernel and
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
 *   (performTechnicianAction in domain/pc-menu.ts), which run as commands of the technician
 *   logged in at this PC.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../domain/config.js';
import type { LocalBoot, TaskRecord } from '../domain/database.js';
import type { BootAddresses } from '../domain/boot-addresses.js';
import type { HostService } from '../domain/hosts.js';
import type { TaskService } from '../domain/tasks.js';
import { MAX_PASSWORD_LENGTH } from '../domain/users.js';
import { normalizeMac } from '../lib/mac.js';
import type { Commands } from '../domain/commands.js';
import { performTechnicianAction, technicianAt, type TechnicianLogins } from '../domain/pc-menu.js';
import { menuRoutes } from './menu-routes.js';
import { firmwareOfIpxe, localBootMethod, platformOf, type Booter } from '../domain/boot-policy.js';
import {
  scriptChainUndionly, scriptClient, scriptDeployChoice, scriptLocal, scriptMenu, scriptNotice, scriptUnconfirmed, scriptUnfinishedDeploy, type ScriptContext,
} from '../pxe/ipxe-script.js';
import { plainAddress } from '../lib/ipv4.js';
import type { Logger } from '../lib/log.js';

export interface BootRoutesContext {
  readonly config: Config;
  readonly logger: Logger;
  /** Logins typed at a PC, shared by both menus. */
  readonly logins: TechnicianLogins;
  /** What a logged-in technician asks for runs as a command. */
  readonly commands: Commands;
  readonly hosts: HostService;
  readonly tasks: TaskService;
  /** Where DHCP saw each MAC lately; the runtime's DHCP service feeds it. */
  readonly bootAddresses: BootAddresses;
  /** The one boot policy, the same instance DHCP asks. */
  readonly booter: Booter<TaskRecord>;
}

/** The address:port the PC reached us on, unless the operator pinned one. */
export function httpBaseFor(req: FastifyRequest, config: Config): string {
  if (config.serverIp) return `${config.serverIp}:${config.httpPort}`;
  const local = plainAddress(req.socket.localAddress ?? '127.0.0.1');
  const host = local.includes(':') ? `[${local}]` : local;
  return `${host}:${req.socket.localPort ?? config.httpPort}`;
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
    const { logins, commands } = ctx;
    const scriptReply = (reply: FastifyReply, script: string): FastifyReply =>
      reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(script);
    const badMac = (reply: FastifyReply, ip: string, mac: unknown): FastifyReply => {
      ctx.logger.warn({ ip, mac: typeof mac === 'string' ? mac.slice(0, 40) : undefined }, 'boot request with a malformed MAC');
      return scriptReply(reply.code(400), '#!ipxe\necho netclone: bad or missing mac parameter (expected aa:bb:cc:dd:ee:ff)\nexit\n');
    };
    const contextFor = (req: FastifyRequest, mac: string): ScriptContext =>
      ({ httpBase: httpBaseFor(req, ctx.config), mac, menuTimeoutSeconds: ctx.config.menuTimeoutSeconds });

    // The policy decides; this route records the sighting first, then mints the token a 'client' decision needs.
    const { booter } = ctx;
    // What a UEFI HTTP boot may fetch here: the loaders the policy hands out over HTTP, the arm64 one included.
    const loaderFiles = new Set([...LOADER_FILES, ...(/^[A-Za-z0-9._-]+$/.test(ctx.config.arm64BootFile) ? [ctx.config.arm64BootFile] : [])]);
    app.get<{ Querystring: BootQuery }>('/boot/ipxe', async (req, reply) => {
      const ip = plainAddress(req.ip);
      const mac = normalizeMac(String(req.query.mac ?? ''));
      if (!mac) return badMac(reply, ip, req.query.mac);
      const platform = platformOf(req.query.platform);
      const { isNew } = await ctx.hosts.sighted({
        mac,
        ip,
        firmware: firmwareOfIpxe(platform, req.query.arch),
        arch: typeof req.query.arch === 'string' ? req.query.arch.slice(0, 32) : null,
      });
      const sctx = contextFor(req, mac);
      const chip = typeof req.query.chip === 'string' ? req.query.chip.slice(0, 32) : null;
      const decision = booter.script({ mac, platform, chip, address: ctx.bootAddresses.check(mac, ip) });
      const level = decision.kind === 'unconfirmed' ? 'warn' : 'info';
      ctx.logger[level]({ mac, ip, platform, chip, decision: decision.kind, newHost: isNew }, `boot: ${decision.reason}`);
      switch (decision.kind) {
        case 'chain-undionly':
          return scriptReply(reply, scriptChainUndionly(sctx, decision.loader));
        case 'client': {
          const token = await ctx.tasks.beginBoot(decision.task, ip);
          return scriptReply(reply, scriptClient(sctx, decision.task, token));
        }
        case 'unconfirmed':
          return scriptReply(reply, scriptUnconfirmed(sctx, decision.method, decision.pc, decision.task));
        case 'local':
          return scriptReply(reply, scriptLocal(decision.method, decision.reason));
        case 'unfinished':
          return scriptReply(reply, scriptUnfinishedDeploy(sctx, decision.method, decision.pc, decision.deploy, decision.active));
        case 'menu':
          return scriptReply(reply, scriptMenu(sctx, decision.method, decision.menu));
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
        return scriptReply(reply, scriptDeployChoice(sctx, method, await commands.imageNames(technicianAt(mac, ip, user.username, 'boot menu'))));
      }
      try {
        const outcome = await performTechnicianAction(commands, ctx.logger, {
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

    await app.register(menuRoutes({ logger: ctx.logger, hosts: ctx.hosts, tasks: ctx.tasks, commands, logins }));

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
      if (!loaderFiles.has(req.params.file)) return reply.code(404).type('text/plain').send('no such boot file\n');
      const ip = plainAddress(req.ip);
      ctx.logger.info({ ip, mac: ctx.hosts.byIp(ip)?.mac, file: req.params.file }, 'boot: serving an iPXE loader over HTTP');
      return sendFile(reply, path.join(ctx.config.bootDir, 'loaders', req.params.file), 'the iPXE loader (run npm run setup:boot)');
    });
  };
}
