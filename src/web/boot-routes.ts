/**
 * What a network-booting PC talks to over HTTP: its per-MAC iPXE script, the menu's
 * actions, the iPXE EFI binary (UEFI HTTP boot) and the imaging client's kernel and
 * initrd. No login: a PC has none. The policy decides; this file only carries it out.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../appliance/config.js';
import type { Firmware } from '../appliance/database.js';
import type { HostService } from '../appliance/hosts.js';
import type { TaskService } from '../appliance/tasks.js';
import { normalizeMac } from '../appliance/mac.js';
import { decideBoot, type IpxePlatform } from '../pxe/boot-policy.js';
import { scriptChainUndionly, scriptClient, scriptLocal, scriptMenu, type ScriptContext } from '../pxe/ipxe-script.js';
import { plainAddress } from '../appliance/addresses.js';
import type { Logger } from '../log.js';

export interface BootRoutesContext {
  readonly config: Config;
  readonly logger: Logger;
  readonly hosts: HostService;
  readonly tasks: TaskService;
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
  do?: string;
  image?: string;
}

const CLIENT_FILES: Record<string, string> = { vmlinuz: 'dist/vmlinuz', 'initrd.img': 'dist/initrd.img' };
const LOADER_FILES = new Set(['ipxe.efi', 'snponly.efi', 'undionly.kpxe']);

export function bootRoutes(ctx: BootRoutesContext) {
  return async function plugin(app: FastifyInstance): Promise<void> {
    const scriptReply = (reply: FastifyReply, script: string): FastifyReply =>
      reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(script);

    const macOf = (req: FastifyRequest<{ Querystring: BootQuery }>, reply: FastifyReply): string | null => {
      const mac = normalizeMac(String(req.query.mac ?? ''));
      if (!mac) {
        ctx.logger.warn({ ip: req.ip, mac: req.query.mac }, 'boot script asked for with a malformed MAC');
        void reply.code(400).type('text/plain').send('#!ipxe\necho netclone: bad or missing mac parameter (expected aa:bb:cc:dd:ee:ff)\nexit\n');
        return null;
      }
      return mac;
    };

    app.get<{ Querystring: BootQuery }>('/boot/ipxe', async (req, reply) => {
      const mac = macOf(req, reply);
      if (!mac) return reply;
      const platform = platformOf(req.query.platform);
      const { host, isNew } = await ctx.hosts.sighted({
        mac,
        ip: plainAddress(req.ip),
        firmware: firmwareOf(platform, req.query.arch),
        arch: typeof req.query.arch === 'string' ? req.query.arch.slice(0, 32) : null,
      });
      const sctx: ScriptContext = { httpBase: httpBaseFor(req, ctx.config), mac, menuTimeoutSeconds: ctx.config.menuTimeoutSeconds };
      const task = ctx.tasks.activeFor(mac);
      const decision = decideBoot(host, task, { platform, chip: req.query.chip ?? null }, {
        defaultLocalBoot: ctx.config.localBoot,
        biosUndionlyHop: true,
      });
      ctx.logger.info({ mac, platform, chip: req.query.chip, decision: decision.kind, newHost: isNew }, `boot: ${decision.reason}`);
      switch (decision.kind) {
        case 'chain-undionly':
          return scriptReply(reply, scriptChainUndionly(sctx));
        case 'client': {
          const token = await ctx.tasks.beginBoot(decision.task);
          return scriptReply(reply, scriptClient(sctx, decision.task, token));
        }
        case 'local':
          return scriptReply(reply, scriptLocal(decision.method, decision.reason));
        case 'menu':
          return scriptReply(reply, scriptMenu(sctx, decision.method, await ctx.imageNames(), { registered: decision.registered, name: host.name }));
      }
    });

    app.get<{ Querystring: BootQuery }>('/boot/ipxe/action', async (req, reply) => {
      const mac = macOf(req, reply);
      if (!mac) return reply;
      const base = httpBaseFor(req, ctx.config);
      const again = `#!ipxe\nchain http://${base}/boot/ipxe?mac=\${net0/mac}&platform=\${platform}&arch=\${buildarch}&chip=\${net0/chip}\n`;
      const what = req.query.do;
      try {
        if (what === 'register') {
          await ctx.hosts.add(mac);
          ctx.logger.info({ mac }, 'boot menu: PC registered');
          return scriptReply(reply, scriptLocal(ctx.config.localBoot, 'registered; booting the local disk'));
        }
        if (what === 'capture') {
          const host = ctx.hosts.get(mac);
          const image = (host?.name ? host.name.replace(/[^A-Za-z0-9._-]/g, '-') : `pc-${mac.replace(/:/g, '')}`).slice(0, 64);
          await ctx.hosts.add(mac);
          await ctx.tasks.create({ kind: 'capture', mac, image });
          ctx.logger.info({ mac, image }, 'boot menu: capture requested at the PC');
          return scriptReply(reply, again);
        }
        if (what === 'deploy' && typeof req.query.image === 'string') {
          const names = await ctx.imageNames();
          if (!names.includes(req.query.image)) return scriptReply(reply.code(404), `#!ipxe\necho netclone: no image by that name\nprompt --timeout 5000 ||\n${again.slice(7)}`);
          await ctx.hosts.add(mac);
          await ctx.tasks.create({ kind: 'deploy', mac, image: req.query.image });
          ctx.logger.info({ mac, image: req.query.image }, 'boot menu: deploy requested at the PC');
          return scriptReply(reply, again);
        }
      } catch (err) {
        ctx.logger.warn({ mac, err: (err as Error).message }, 'boot menu action refused');
        return scriptReply(reply.code(409), `#!ipxe\necho netclone: ${(err as Error).message.replace(/[^A-Za-z0-9 ._:()-]/g, '_')}\nprompt --timeout 10000 ||\nexit\n`);
      }
      return scriptReply(reply.code(400), '#!ipxe\necho netclone: unknown menu action\nexit\n');
    });

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
      const rel = CLIENT_FILES[req.params.file];
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
