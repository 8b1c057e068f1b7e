import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import request from 'supertest';
import type { BootFileProblem, NbdAccess, NbdUrlRequest, ServiceStatus } from '../../src/domain/running-server.js';
import { Commands } from '../../src/domain/commands.js';
import type { WakeSender } from '../../src/lib/wake-on-lan.js';
import type { HostService } from '../../src/domain/hosts.js';
import type { TaskService } from '../../src/domain/tasks.js';
import { setAdminPassword } from '../../src/domain/users.js';
import type { ImageStore } from '../../src/imaging/image-store.js';
import { importFile } from '../../src/imaging/image-import.js';
import { openTestDomain } from '../lib/domain.js';
import { buildWebApp, type WebAppOptions, type WebContext } from '../../src/web/app.js';

export const PASSWORD = 'correct horse battery';

export interface Harness {
  /** The web context, with the full services behind its read-only views (tests arrange state through them). */
  readonly ctx: WebContext & { readonly hosts: HostService; readonly tasks: TaskService };
  readonly app: FastifyInstance;
  readonly store: ImageStore;
  readonly dir: string;
  readonly nbdRequests: NbdUrlRequest[];
  close(): Promise<void>;
}

/** A small disk: an MBR with one Linux partition, some data, and a zero stretch. */
export function tinyDisk(size = 3 * 1024 * 1024): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt8(0x83, 446 + 4);
  b.writeUInt32LE(2048, 446 + 8);
  b.writeUInt32LE(size / 512 - 2048, 446 + 12);
  b[510] = 0x55;
  b[511] = 0xaa;
  for (let i = 1024 * 1024; i < 1024 * 1024 + 300_000; i++) b[i] = (i * 31) & 0xff;
  return b;
}

/** `bootFiles`: what the server's boot file check reports (default: all in place). */
export async function makeHarness(options: WebAppOptions & { admin?: boolean; images?: string[]; wake?: WakeSender; bootFiles?: readonly BootFileProblem[] } = {}): Promise<Harness> {
  const domain = await openTestDomain('netclone-web-');
  const { dir, config, logger, db, events, hosts, tasks, store } = domain;
  const nbdRequests: NbdUrlRequest[] = [];
  const services: ServiceStatus[] = [
    { name: 'http', state: 'running', detail: 'on 127.0.0.1' },
    { name: 'nbd', state: 'running', detail: 'on 0.0.0.0:10809' },
    { name: 'tftp', state: 'off', detail: 'not started in this test' },
    { name: 'dhcp', state: 'failed', detail: 'port 67 in use' },
  ];
  const nbd: NbdAccess = {
    async createUrl(req) {
      nbdRequests.push(req);
      return { uri: `nbd://${req.host ?? 'server'}:10809/ro-${req.image}-abc`, exportName: `ro-${req.image}-abc`, expiresAt: new Date(Date.now() + 3600_000).toISOString() };
    },
  };
  const commands = new Commands({ config, logger, db, events, hosts, tasks, store, nbd: () => nbd, wake: options.wake });
  const bootFiles = options.bootFiles ?? [];
  const ctx = { config, logger, db, events, hosts, tasks, commands, services: () => services, bootFiles: async () => bootFiles };
  if (options.admin !== false) await setAdminPassword(db, PASSWORD);
  for (const name of options.images ?? []) {
    const file = join(dir, `${name}.raw`);
    await writeFile(file, tinyDisk());
    await importFile(store, name, file, { source: 'test import' });
  }
  const { wake: _wake, admin: _admin, images: _images, bootFiles: _bootFiles, ...webOptions } = options;
  const app = await buildWebApp(ctx, { announceSetup: false, ...webOptions });
  await app.ready();
  return {
    ctx, app, store, dir, nbdRequests,
    async close() {
      await app.close();
      await domain.close();
    },
  };
}

export function csrfFrom(htmlText: string): string {
  const m = /name="_csrf" value="([^"]+)"/.exec(htmlText);
  if (!m) throw new Error('no CSRF field in page');
  return m[1];
}

/** A logged-in supertest agent and the CSRF token of its session. */
export async function login(app: FastifyInstance): Promise<{ agent: ReturnType<typeof request.agent>; csrf: string }> {
  const agent = request.agent(app.server);
  const page = await agent.get('/login').expect(200);
  const res = await agent.post('/login').type('form').send({ username: 'admin', password: PASSWORD, _csrf: csrfFrom(page.text) });
  if (res.status !== 303) throw new Error(`login failed: ${res.status} ${res.text.slice(0, 200)}`);
  const dash = await agent.get('/').expect(200);
  return { agent, csrf: csrfFrom(dash.text) };
}
