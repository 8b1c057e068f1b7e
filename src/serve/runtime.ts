/**
 * `netclone serve`: one process owning one data directory, running HTTP (admin page,
 * API, boot scripts, client API), NBD, TFTP, DHCP and the control socket. A network
 * boot service that cannot start (no root for port 67, loaders missing) is reported
 * clearly and the rest keeps running.
 */
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import type http from 'node:http';
import { PACKAGE_ROOT, type Config } from '../domain/config.js';
import { openCore, type OpenCore } from '../domain/data-dir.js';
import { SERVER_PURPOSE } from '../domain/lock.js';
import type { BootFileProblem, NbdAccess, NbdUrl, NbdUrlRequest, ServiceStatus } from '../domain/running-server.js';
import { NbdGrants } from '../transport/grants.js';
import { TransferMeter } from '../transport/transfer-meter.js';
import { TransferService } from '../domain/transfers.js';
import { StoreExportSource } from '../transport/store-exports.js';
import { startControlServer } from './control-server.js';
import { controlSocketPath } from './control-protocol.js';
import { CommandError } from '../domain/commands.js';
import { NbdServer } from '../nbd/server.js';
import { TftpServer } from '../pxe/tftp/server.js';
import { DhcpServer } from '../pxe/dhcp/server.js';
import { booterOptions, firmwareOfClientArch, policyBooter, serviceFacts } from '../domain/boot-policy.js';
import { buildWebApp } from '../web/app.js';
import { TechnicianLogins } from '../domain/pc-menu.js';
import { broadcastForHost, wakeSender, WOL_PORT } from '../lib/wake-on-lan.js';
import { Scheduler } from '../domain/scheduler.js';
import { startAlerts } from '../domain/alerts.js';
import { alertRoutes } from '../web/alert-routes.js';
import { bootRoutes } from '../web/boot-routes.js';
import { signedBootFiles } from './signed-boot.js';
import { clientRoutes } from '../web/client-routes.js';
import { ipToNumber } from '../lib/ipv4.js';
import { bootFixes, checkBootFiles, expectedStamps } from './boot-files.js';
import type { Logger } from '../lib/log.js';
import type { EventLog } from '../domain/events.js';
import { pruneAfterCaptures } from '../domain/retention-after-capture.js';

export interface RunningAppliance {
  readonly core: OpenCore;
  readonly ports: { readonly http: number; readonly nbd: number; readonly tftp: number | null };
  /** Runs the backup schedules; emits 'run' (onRun) when a run ends. */
  readonly scheduler: Scheduler;
  services(): ServiceStatus[];
  stop(): Promise<void>;
}

/** Our address for PXE clients: configured, else the interface's, else the first non-loopback IPv4. */
export function resolveServerIp(config: Config): { ip: string | null; why: string } {
  if (config.serverIp) return { ip: config.serverIp, why: 'server-ip' };
  const nets = networkInterfaces();
  if (config.interface) {
    const addr = nets[config.interface]?.find((a) => a.family === 'IPv4');
    return addr ? { ip: addr.address, why: `interface ${config.interface}` } : { ip: null, why: `interface ${config.interface} has no IPv4 address` };
  }
  for (const [name, addrs] of Object.entries(nets)) {
    const addr = addrs?.find((a) => a.family === 'IPv4' && !a.internal);
    if (addr) return { ip: addr.address, why: `first interface with an address (${name}); set --server-ip or --interface to be sure` };
  }
  return { ip: null, why: 'no network interface has an IPv4 address' };
}

function explainListenError(err: unknown, what: string, port: number): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EACCES') return `${what} needs port ${port}, which only root or CAP_NET_BIND_SERVICE may use (run as root, use the systemd unit, or pick a port above 1023)`;
  if (code === 'EADDRINUSE') return `${what} port ${port} is already in use by another program (another DHCP/TFTP server?)`;
  return `${what} did not start: ${(err as Error).message}`;
}

/** What to do when a capture failed because the image store's disk is full; empty for any other reason. */
export function diskFullAdvice(reason: string, imagesDir: string): string {
  if (!/\bENOSPC\b|no space left on device/i.test(reason)) return '';
  return `; the disk that holds ${imagesDir} is full: free space there ("netclone image gc" removes chunks no image uses, "netclone image rm" whole images) and capture again`;
}

export interface RejectionSafetyNet {
  /** Also record each unhandled rejection as an event, so the admin page shows it. */
  attach(events: EventLog): void;
  remove(): void;
}

/**
 * The serve process's last line of defence. Every promise in netclone has its failure handled
 * where it happens (a disk error fails that one operation); one that slips through is a bug.
 * Without this handler Node ends the process on it, taking every PC's boot and every running
 * capture down with one failed operation. With it the server logs the bug loudly, says what
 * to do, and keeps serving everyone else.
 */
export function installRejectionSafetyNet(logger: Logger): RejectionSafetyNet {
  let events: EventLog | null = null;
  const onRejection = (reason: unknown): void => {
    const err = reason instanceof Error ? reason : new Error(String(reason));
    const message =
      `internal error (a bug): an operation failed and nothing handled it: ${err.message}. ` +
      'The server keeps serving; the operation it belonged to did not finish. If a task or capture stops moving, cancel it and ' +
      'start it again, and report this log line with the lines before it';
    logger.fatal({ err, code: (err as NodeJS.ErrnoException).code }, message);
    if (events) void events.record('error', message);
  };
  process.on('unhandledRejection', onRejection);
  return {
    attach: (e) => {
      events = e;
    },
    remove: () => {
      process.off('unhandledRejection', onRejection);
    },
  };
}

export async function startAppliance(config: Config, logger: Logger): Promise<RunningAppliance> {
  const core = await openCore(config, logger, SERVER_PURPOSE, {
    // The magic packet goes out on the interface whose subnet holds the PC's last address.
    wake: wakeSender((ip) => ({ address: broadcastForHost(ip, config.interface).address, port: WOL_PORT })),
  });
  const statuses = new Map<ServiceStatus['name'], ServiceStatus>();
  const set = (s: ServiceStatus): void => {
    statuses.set(s.name, s);
  };
  const stoppers: Array<() => Promise<void>> = [];
  try {
    const interrupted = await core.tasks.failInterrupted();
    if (interrupted > 0) logger.warn({ interrupted }, 'tasks that were transferring when the server stopped are marked failed');
    if (core.store.crashed) {
      // A capture killed mid-way left chunk files no version names; they would hold disk space until a
      // technician ran gc. Collecting runs beside serving: readers and new captures pin what they use.
      logger.warn('the previous server stopped mid-write; removing chunk files no image version names (image gc)');
      core.store.gc().then(
        (g) => logger.info({ removedChunks: g.removedChunks, freedBytes: g.freedBytes, damagedManifests: g.damagedManifests }, 'orphan chunks left by the previous run removed'),
        (err: unknown) => logger.error({ err: (err as Error).message }, 'removing orphan chunks after a crash failed; run netclone image gc'),
      );
    }

    // Issue 13: each image's retention policy is applied when one of its captures ends done.
    stoppers.push(pruneAfterCaptures({ tasks: core.tasks, retention: core.commands.retention, store: core.store, events: core.events, logger: logger.child({ component: 'retention' }) }).stop);
    const grants = new NbdGrants(logger.child({ component: 'nbd-access' }));
    stoppers.push(() => grants.closeAll('server stopping'));
    const source = new StoreExportSource(core.store, logger);
    const transfers = new TransferService(source, grants, core.tasks, core.hosts, logger.child({ component: 'transfers' }));

    const nbdServer = new NbdServer({ resolver: grants, logger });
    const nbdAddr = await nbdServer.listen(config.nbdPort, config.listen);
    stoppers.unshift(() => nbdServer.close());
    set({ name: 'nbd', state: 'running', detail: `${config.listen}:${nbdAddr.port}` });

    const { ip: serverIp, why: ipWhy } = resolveServerIp(config);
    // A server bound to one address is only reachable there; otherwise use the address PCs see.
    const publicHost = config.listen !== '0.0.0.0' && config.listen !== '::' ? config.listen : serverIp ?? '127.0.0.1';
    const nbd: NbdAccess = {
      async createUrl(req: NbdUrlRequest): Promise<NbdUrl> {
        const host = req.host ?? publicHost;
        const ttlSeconds = req.ttlSeconds ?? config.urlTtlSeconds;
        let granted: { name: string; expiresAt: Date };
        if (req.write) {
          if (!req.size) throw new CommandError(400, 'a writable URL needs the disk size');
          const size = req.size;
          const meter = new TransferMeter('capture');
          granted = await grants.grant({
            kind: 'capture',
            image: req.image,
            ttlSeconds,
            meter,
            open: () =>
              source.openCapture(req.image, size, 512, 'nbd:// URL import', {
                onCommitted: (v) => void core.events.record('info', `image ${req.image} version ${v.version} committed from an nbd:// URL: ${meter.describe()}`),
                onFailed: (reason) => void core.events.record('warn', `capture of ${req.image} through an nbd:// URL failed: ${reason}${diskFullAdvice(reason, config.imagesDir)}`),
              }),
          });
        } else {
          // What a URL deploy moved is in the grant's close log line: no task or commit ends it.
          granted = await grants.grant({ kind: 'deploy', image: req.image, ttlSeconds, meter: new TransferMeter('deploy'), open: () => source.openDeploy(req.image) });
        }
        return { uri: `nbd://${host}:${nbdAddr.port}/${granted.name}`, exportName: granted.name, expiresAt: granted.expiresAt.toISOString() };
      },
    };
    core.nbd = nbd;

    // Said at startup, not first by a PC that picked "Capture". The pages check again on each view,
    // so a build run while the server is up clears the warning without a restart.
    const stamps = await expectedStamps(PACKAGE_ROOT);
    const fixes = bootFixes(config.bootDir, PACKAGE_ROOT);
    const bootFiles = (): Promise<BootFileProblem[]> => checkBootFiles(config.bootDir, stamps, fixes);
    for (const p of await bootFiles()) {
      logger[p.state === 'missing' ? 'error' : 'warn']({ bootFiles: p.files, fix: p.fix }, `${p.message}; to fix it run: ${p.fix}`);
    }

    // One boot policy for the whole server: DHCP and the boot routes ask the same instance.
    const booter = policyBooter(serviceFacts(core.hosts, core.tasks), booterOptions(config));
    const alerts = startAlerts(core, config.alerts, logger);
    stoppers.push(() => alerts.stop());
    const web = await buildWebApp(
      { config, logger, db: core.db, events: core.events, hosts: core.hosts, tasks: core.tasks, commands: core.commands, services: () => [...statuses.values()], bootFiles },
      {
        extraPlugins: [
          bootRoutes({
            config, logger: logger.child({ component: 'boot' }), hosts: core.hosts, tasks: core.tasks, bootAddresses: core.hosts.bootAddresses,
            commands: core.commands, logins: new TechnicianLogins(core.db), booter,
          }),
          clientRoutes({ config, logger: logger.child({ component: 'client-api' }), hosts: core.hosts, tasks: core.tasks, transfers, images: source, nbdPort: nbdAddr.port }),
          alertRoutes(alerts),
        ],
      },
    );
    await web.listen({ port: config.httpPort, host: config.listen });
    const httpPort = (web.server.address() as { port: number }).port;
    stoppers.unshift(() => web.close());
    set({ name: 'http', state: 'running', detail: `admin page on http://${publicHost}:${httpPort}/` });

    let tftpPort: number | null = null;
    const tftpRoot = path.join(config.bootDir, 'loaders');
    const tftp = new TftpServer({
      root: tftpRoot,
      port: config.tftpPort,
      bindAddress: config.listen,
      logger,
      busyPollMs: config.tftpBusyPoll ? 1 : 0,
      macOf: (address) => core.hosts.byIp(address)?.mac,
      virtualFiles: signedBootFiles({
        logger: logger.child({ component: 'boot' }), booter, hosts: core.hosts, tasks: core.tasks, bootAddresses: core.hosts.bootAddresses,
        httpBase: () => `${publicHost}:${httpPort}`, bootDir: config.bootDir, menuTimeoutSeconds: config.menuTimeoutSeconds,
      }),
    });
    try {
      await tftp.start();
      tftpPort = tftp.address().port;
      stoppers.unshift(() => tftp.stop());
      set({ name: 'tftp', state: 'running', detail: `${config.listen}:${tftpPort}, serving ${tftpRoot}` });
    } catch (err) {
      const why = explainListenError(err, 'TFTP', config.tftpPort);
      logger.error(why);
      set({ name: 'tftp', state: 'failed', detail: why });
    }

    if (config.dhcp === 'off') {
      set({ name: 'dhcp', state: 'off', detail: 'disabled (--dhcp off): PCs need boot options from your own DHCP server' });
    } else if (!serverIp) {
      const why = `DHCP ${config.dhcp} mode needs our address: ${ipWhy}; set --server-ip`;
      logger.error(why);
      set({ name: 'dhcp', state: 'failed', detail: why });
    } else {
      const exclude = [serverIp, ...(config.dhcpRouter ? [config.dhcpRouter] : [])];
      const dhcp = new DhcpServer({
        mode: config.dhcp,
        serverIp,
        httpPort,
        bindAddress: '0.0.0.0',
        pool: config.dhcpRange
          ? {
              start: config.dhcpRange.start,
              end: config.dhcpRange.end,
              netmask: config.dhcpNetmask,
              router: config.dhcpRouter ?? undefined,
              dns: config.dhcpDns,
              leaseSeconds: config.dhcpLeaseSeconds,
              exclude: exclude.filter((a) => ipToNumber(a) >= ipToNumber(config.dhcpRange!.start) && ipToNumber(a) <= ipToNumber(config.dhcpRange!.end)),
            }
          : undefined,
        leaseFile: path.join(config.dataDir, 'state', 'dhcp-leases.json'),
        booter,
        logger,
        hooks: {
          onPxeRequest: (info) => {
            if (info.ip) core.hosts.bootAddresses.note(info.mac, info.ip);
            core.hosts
              .sighted({ mac: info.mac, ip: info.ip ?? null, firmware: firmwareOfClientArch(info.arch), arch: info.arch === undefined ? null : String(info.arch), vendorClass: info.vendorClass ?? null })
              .catch((err: unknown) => logger.error({ err, mac: info.mac }, 'could not record a PXE sighting'));
          },
        },
      });
      try {
        await dhcp.start();
        stoppers.unshift(() => dhcp.stop());
        set({ name: 'dhcp', state: 'running', detail: `${config.dhcp} mode, answering as ${serverIp} (${ipWhy})` });
      } catch (err) {
        const why = explainListenError(err, 'DHCP', 67);
        logger.error(why);
        set({ name: 'dhcp', state: 'failed', detail: why });
      }
    }

    const control: http.Server = await startControlServer(core, controlSocketPath(config.dataDir), logger.child({ component: 'control' }));
    stoppers.unshift(() => new Promise<void>((resolve) => control.close(() => resolve())));
    set({ name: 'control', state: 'running', detail: controlSocketPath(config.dataDir) });

    const scheduler = new Scheduler({
      db: core.db, commands: core.commands, tasks: core.tasks, hosts: core.hosts, events: core.events, logger: logger.child({ component: 'scheduler' }),
      wake: wakeSender((ip) => ({ address: broadcastForHost(ip, config.interface).address, port: WOL_PORT })),
    });
    // Before start: runs the server slept through are marked missed as it starts, and are alerted too.
    alerts.watchScheduler(scheduler);
    await scheduler.start();
    stoppers.unshift(async () => scheduler.stop());

    logger.info({ services: [...statuses.values()] }, 'netclone is up');
    let stopping: Promise<void> | null = null;
    return {
      core,
      ports: { http: httpPort, nbd: nbdAddr.port, tftp: tftpPort },
      scheduler,
      services: () => [...statuses.values()],
      stop: () => {
        stopping ??= (async () => {
          for (const stop of stoppers) await stop().catch((err: unknown) => logger.error({ err }, 'error while stopping a service'));
          await core.close();
        })();
        return stopping;
      },
    };
  } catch (err) {
    for (const stop of stoppers) await stop().catch(() => undefined);
    await core.close();
    throw err;
  }
}
