/**
 * The web app with the real boot-script and imaging-client routes, as the appliance runs them
 * (src/serve/runtime.ts), on a temp data directory. Requests go through fastify's inject with a
 * chosen remote address, so one test can play the PC and a stranger on the LAN. The boot and
 * client-API log lines are kept for assertions on what the server says and why.
 */
import { Writable } from 'node:stream';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { pino } from 'pino';
import { resolveConfig } from '../../src/domain/config.js';
import { forgetDatabase, openDatabase, type Database } from '../../src/domain/database.js';
import { EventLog } from '../../src/domain/events.js';
import { HostService } from '../../src/domain/hosts.js';
import { TaskService } from '../../src/domain/tasks.js';
import { setAdminPassword } from '../../src/domain/users.js';
import { NbdGrants } from '../../src/transport/grants.js';
import { StoreExportSource } from '../../src/transport/store-exports.js';
import { TransferService } from '../../src/domain/transfers.js';
import { BootAddresses } from '../../src/domain/boot-addresses.js';
import { ImageStore } from '../../src/imaging/image-store.js';
import { importFile } from '../../src/imaging/image-import.js';
import { nullLogger } from '../../src/lib/log.js';
import { Commands } from '../../src/domain/commands.js';
import { TechnicianLogins } from '../../src/domain/pc-menu.js';
import { booterOptions, policyBooter, serviceFacts } from '../../src/domain/boot-policy.js';
import { buildWebApp } from '../../src/web/app.js';
import { bootRoutes } from '../../src/web/boot-routes.js';
import { clientRoutes } from '../../src/web/client-routes.js';
import { PASSWORD, tinyDisk } from './helpers.js';

export const PC_IP = '10.0.0.5';
export const STRANGER_IP = '10.0.0.66';

export interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly [key: string]: unknown;
}

export interface BootHarness {
  readonly app: FastifyInstance;
  readonly db: Database;
  readonly hosts: HostService;
  readonly tasks: TaskService;
  readonly addresses: BootAddresses;
  readonly logs: LogLine[];
  /** GET the boot script of `mac` as iPXE would ask for it, from `ip`. */
  bootScript(mac: string, ip: string): Promise<LightMyRequestResponse>;
  /** POST a boot-menu form as iPXE's `params` would send it (credentials uristring-encoded, then form-encoded). */
  action(ip: string, fields: Record<string, string>, login?: { username: string; password: string }): Promise<LightMyRequestResponse>;
  /** Call the client API from `ip`. */
  client(ip: string, method: 'GET' | 'POST', url: string, token: string | null, body?: unknown): Promise<LightMyRequestResponse>;
  close(): Promise<void>;
}

export const TECHNICIAN = { username: 'admin', password: PASSWORD } as const;

export function tokenIn(script: string): string | null {
  return /netclone\.token=([A-Za-z0-9_-]+)/.exec(script)?.[1] ?? null;
}

export async function makeBootHarness(options: { images?: string[] } = {}): Promise<BootHarness> {
  const dir = await mkdtemp(join(tmpdir(), 'netclone-boot-'));
  // The tests on this harness play an NBD client after start; the chunk transport has test/web/client-chunks.test.ts.
  const config = resolveConfig({ data: dir, transport: 'nbd' });
  const quiet = nullLogger();
  const logs: LogLine[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line) as LogLine);
      done();
    },
  });
  const logger = pino({ level: 'info' }, sink);
  const db = await openDatabase(dir);
  const events = new EventLog(db, quiet);
  const hosts = new HostService(db, events);
  const tasks = new TaskService(db, events);
  const store = await ImageStore.open(config.imagesDir, { logger: quiet, workers: 1 });
  await setAdminPassword(db, PASSWORD);
  for (const name of options.images ?? []) {
    const file = join(dir, `${name}.raw`);
    await writeFile(file, tinyDisk());
    await importFile(store, name, file, { source: 'test import' });
  }
  const grants = new NbdGrants(quiet);
  const source = new StoreExportSource(store, quiet);
  const transfers = new TransferService(source, grants, tasks, hosts, quiet);
  const addresses = new BootAddresses();
  // These tests never ask for nbd:// URLs; a call would be a test bug, so say so.
  const commands = new Commands({
    config, logger, db, events, hosts, tasks, store,
    nbd: () => ({ createUrl: () => Promise.reject(new Error('the boot harness has no NBD URL service')) }),
  });
  const app = await buildWebApp(
    { config, logger: quiet, db, events, hosts, tasks, commands, services: () => [], bootFiles: async () => [] },
    {
      announceSetup: false,
      extraPlugins: [
        bootRoutes({ config, logger, hosts, tasks, bootAddresses: addresses, commands, logins: new TechnicianLogins(db), booter: policyBooter(serviceFacts(hosts, tasks), booterOptions(config)) }),
        clientRoutes({ config, logger, hosts, tasks, transfers, images: source, nbdPort: 10809 }),
      ],
    },
  );
  await app.ready();
  return {
    app, db, hosts, tasks, addresses, logs,
    bootScript: (mac, ip) => app.inject({ method: 'GET', url: `/boot/ipxe?mac=${mac}&platform=efi&arch=x86_64&chip=undionly`, remoteAddress: ip }),
    action(ip, fields, login) {
      const form = new URLSearchParams({ platform: 'efi', ...fields });
      if (login) {
        form.set('username', encodeURIComponent(login.username));
        form.set('password', encodeURIComponent(login.password));
      }
      return app.inject({
        method: 'POST', url: '/boot/ipxe/action', remoteAddress: ip,
        headers: { 'content-type': 'application/x-www-form-urlencoded' }, payload: form.toString(),
      });
    },
    client(ip, method, url, token, body) {
      const headers: Record<string, string> = {};
      if (token) headers.authorization = `Bearer ${token}`;
      if (body !== undefined) headers['content-type'] = 'application/json';
      return app.inject({ method, url, remoteAddress: ip, headers, payload: body === undefined ? undefined : JSON.stringify(body) });
    },
    async close() {
      await app.close();
      await grants.closeAll('test over');
      await store.close();
      forgetDatabase(dir);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
