/**
 * The imaging client's API (contract: boot/client/README.md). Authenticated by the
 * task's one-time token in `Authorization: Bearer`, and by nothing else: an admin
 * session cookie is not accepted here, and a token only ever reaches its own task.
 * A token is bound to the address it was issued to (the PC's) and starts one transfer.
 * The check runs on request, before the body is parsed or validated: a caller without
 * a valid token learns nothing about the body schema.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { Config } from '../domain/config.js';
import { transportOf, type HardwareReport, type TaskRecord } from '../domain/database.js';
import type { HostService } from '../domain/hosts.js';
import type { TaskService } from '../domain/tasks.js';
import { TransferError, type ExportSource, type TransferService } from '../domain/transfers.js';
import { normalizeMac } from '../lib/mac.js';
import { plainAddress } from '../lib/ipv4.js';
import { httpBaseFor } from './boot-routes.js';
import { clientChunkRoutes } from './client-chunk-routes.js';
import type { Logger } from '../lib/log.js';

export interface ClientRoutesContext {
  readonly config: Config;
  readonly logger: Logger;
  readonly hosts: HostService;
  readonly tasks: TaskService;
  readonly transfers: TransferService;
  readonly images: Pick<ExportSource, 'latest'>;
  /** The port the NBD server actually listens on (it may have been 0 = any). */
  readonly nbdPort: number;
}

const Str = (max: number) => Type.String({ maxLength: max });
const DiskSchema = Type.Object({
  name: Type.String({ pattern: '^[A-Za-z0-9_.-]{1,32}$' }),
  size: Type.Integer({ minimum: 0, maximum: 2 ** 53 }),
  model: Type.Optional(Str(128)),
  serial: Type.Optional(Str(128)),
  logicalSectorSize: Type.Integer({ minimum: 512, maximum: 65536 }),
  physicalSectorSize: Type.Optional(Type.Integer({ minimum: 512, maximum: 1048576 })),
  rotational: Type.Optional(Type.Boolean()),
  removable: Type.Optional(Type.Boolean()),
  transport: Type.Optional(Str(32)),
});
const HardwareSchema = Type.Object({
  dmi: Type.Object({ vendor: Str(128), model: Str(128), serial: Str(128), uuid: Str(64) }),
  disks: Type.Array(DiskSchema, { maxItems: 64 }),
  nics: Type.Array(Type.Object({ name: Str(32), mac: Str(32), driver: Str(64), speed: Str(16) }), { maxItems: 64 }),
  secureBoot: Type.Optional(Type.Union([Type.Literal('on'), Type.Literal('off'), Type.Literal('bios')])),
});
const StartSchema = Type.Object({
  disk: Type.Object({
    name: Type.String({ pattern: '^[A-Za-z0-9_.-]{1,32}$' }),
    size: Type.Integer({ minimum: 1, maximum: 2 ** 53 }),
    logicalSectorSize: Type.Integer({ minimum: 512, maximum: 65536 }),
    serial: Type.Optional(Str(128)),
  }),
});
const Count = Type.Optional(Type.Integer({ minimum: 0, maximum: 2 ** 53 }));
const ProgressSchema = Type.Object({
  phase: Type.Union([Type.Literal('transferring'), Type.Literal('verifying')]),
  message: Type.Optional(Str(500)),
  // The imaging agent's counters (chunk transport); bytes on the wire are counted by the server.
  examined: Count,
  reusedChunks: Count,
  sentChunks: Count,
  zeroChunks: Count,
  totalChunks: Count,
});
const ResultSchema = Type.Object({ ok: Type.Boolean(), message: Type.Optional(Str(2000)), digest: Type.Optional(Type.Union([Type.String({ pattern: '^[0-9a-f]{64}$' }), Type.Null()])) });

declare module 'fastify' {
  interface FastifyRequest {
    clientTask?: TaskRecord;
  }
}

export function clientRoutes(ctx: ClientRoutesContext) {
  return async function plugin(app: FastifyInstance): Promise<void> {
    const deny = (reply: FastifyReply, code: 401 | 403, message: string): FastifyReply =>
      reply.code(code).send({ error: message });

    app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
      const ip = plainAddress(req.ip);
      const url = req.url.slice(0, 200);
      const auth = req.headers.authorization ?? '';
      const m = /^Bearer ([A-Za-z0-9_-]{16,200})$/.exec(auth);
      if (!m) {
        ctx.logger.warn({ ip, url }, 'client API call without a task token');
        return deny(reply, 401, 'a task token is required (Authorization: Bearer TOKEN from the kernel command line)');
      }
      const task = ctx.tasks.byToken(m[1]);
      if (!task) {
        ctx.logger.warn({ ip, url }, 'client API call with a wrong or spent task token');
        return deny(reply, 403, 'this task token is not valid (wrong, or its task has ended); reboot the PC to start over');
      }
      if (task.clientIp !== ip) {
        ctx.logger.warn(
          { ip, url, mac: task.mac, task: task.id, boundTo: task.clientIp },
          `client API call refused: the token of task ${task.id} was issued to ${task.clientIp ?? 'no address'}, not to ${ip}`,
        );
        return deny(reply, 403, 'this task token belongs to another address; reboot the PC to start over');
      }
      req.clientTask = task;
      // Any call is a sign of life: a task whose client goes silent fails (TaskService.checkLiveness).
      ctx.tasks.heard(task);
    });

    app.get<{ Querystring: { mac?: string } }>('/api/client/v1/task', async (req, reply) => {
      const task = req.clientTask as TaskRecord;
      const mac = normalizeMac(String(req.query.mac ?? ''));
      if (!mac) return reply.code(400).send({ error: 'mac query parameter missing or malformed' });
      if (mac !== task.mac) {
        ctx.logger.warn({ mac, task: task.id, taskMac: task.mac }, 'client asked for a task with another MAC than the task names');
        return deny(reply, 403, `this token belongs to another PC (${task.mac})`);
      }
      // A deploy of a named version (issue 13) answers with that version's size and digest: the NBD client checks its read-back against them.
      const info = task.kind === 'deploy' ? await ctx.images.latest(task.image, task.version) : null;
      if (task.kind === 'deploy' && !info) {
        const why = task.version === undefined ? `image ${task.image} has no committed version` : `image ${task.image} has no version ${task.version} any more; queue the deploy again with a version the image has`;
        await ctx.tasks.fail(task, why);
        return reply.code(409).send({ error: why });
      }
      ctx.logger.info({ mac, task: task.id }, 'client fetched its task');
      await ctx.tasks.note(task, `client ${plainAddress(req.ip)} fetched the task`);
      return {
        id: task.id,
        kind: task.kind,
        transport: transportOf(task),
        image: task.image,
        diskSerial: task.diskSerial,
        after: task.after,
        imageInfo: info ? { size: info.size, sectorSize: info.sectorSize, chunkSize: info.chunkSize, digest: info.digest } : null,
      };
    });

    app.post<{ Body: Static<typeof HardwareSchema> }>('/api/client/v1/hardware', { schema: { body: HardwareSchema } }, async (req) => {
      const task = req.clientTask as TaskRecord;
      const report: HardwareReport = {
        dmi: req.body.dmi,
        disks: req.body.disks.map((d) => ({
          name: d.name, size: d.size, model: d.model ?? '', serial: d.serial ?? '', logicalSectorSize: d.logicalSectorSize,
          physicalSectorSize: d.physicalSectorSize ?? d.logicalSectorSize, rotational: d.rotational ?? false,
          removable: d.removable ?? false, transport: d.transport ?? '',
        })),
        nics: req.body.nics,
        ...(req.body.secureBoot !== undefined ? { secureBoot: req.body.secureBoot } : {}),
        reportedAt: new Date().toISOString(),
      };
      await ctx.hosts.setHardware(task.mac, report);
      ctx.logger.info({ mac: task.mac, disks: report.disks.length }, 'client reported its hardware');
      return { ok: true };
    });

    app.post<{ Body: Static<typeof StartSchema> }>('/api/client/v1/start', { schema: { body: StartSchema } }, async (req, reply) => {
      const task = req.clientTask as TaskRecord;
      const ip = plainAddress(req.ip);
      const nbdHost = httpBaseFor(req, ctx.config).replace(/:\d+$/, '');
      if (!ctx.tasks.claimStart(task)) {
        ctx.logger.warn({ ip, mac: task.mac, task: task.id }, 'client start refused: this token already started a transfer');
        return reply.code(409).send({ error: 'this task token already started a transfer; reboot the PC for a new one' });
      }
      try {
        const answer = await ctx.transfers.begin(task, { ...req.body.disk, serial: req.body.disk.serial ?? '' }, ip, nbdHost, ctx.nbdPort);
        ctx.logger.info({ mac: task.mac, task: task.id, disk: req.body.disk.name, transport: answer.transport }, `client starts the ${task.kind}`);
        return answer;
      } catch (err) {
        if (err instanceof TransferError) {
          // 503: nothing was opened yet (a fitted version is being prepared); the client asks again with this token.
          if (err.status === 503) ctx.tasks.releaseStart(task);
          return reply.code(err.status).send({ error: err.message });
        }
        throw err;
      }
    });

    app.post<{ Body: Static<typeof ProgressSchema> }>('/api/client/v1/progress', { schema: { body: ProgressSchema } }, async (req) => {
      const task = req.clientTask as TaskRecord;
      const b = req.body;
      if (b.examined !== undefined && (task.state === 'running' || task.state === 'verifying')) {
        ctx.tasks.chunkProgress(task, b.examined, { reused: b.reusedChunks ?? 0, sent: b.sentChunks ?? 0, zero: b.zeroChunks ?? 0, total: b.totalChunks ?? 0 });
      }
      if (b.phase === 'verifying' && task.state === 'running') await ctx.tasks.markVerifying(task, 'reading the disk back to check it');
      else if (b.message) await ctx.tasks.note(task, b.message);
      return { ok: true };
    });

    await app.register(clientChunkRoutes({ logger: ctx.logger, transfers: ctx.transfers }));

    app.post<{ Body: Static<typeof ResultSchema> }>('/api/client/v1/result', { schema: { body: ResultSchema } }, async (req, reply) => {
      const task = req.clientTask as TaskRecord;
      try {
        const done = await ctx.transfers.finish(task, req.body.ok, req.body.message ?? '', req.body.digest ?? null);
        return { state: done.state, reason: done.reason };
      } catch (err) {
        if (err instanceof TransferError) {
          // 503: nothing was opened yet (a fitted version is being prepared); the client asks again with this token.
          if (err.status === 503) ctx.tasks.releaseStart(task);
          return reply.code(err.status).send({ error: err.message });
        }
        throw err;
      }
    });
  };
}
