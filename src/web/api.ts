/** The JSON API under /api/v1: everything the admin page can do, for scripts. */
import { statfs } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import type { Static } from '@sinclair/typebox';
import type { HostRecord } from '../domain/database.js';
import { hostState, requireMac, type HostState } from '../domain/commands.js';
import { layoutFreeBytes, type ImageDetails } from '../imaging/image-details.js';
import type { DiskLayout } from '../imaging/disk-layout.js';
import type { WebContext } from './context.js';
import type { VerifyTracker } from './verify-tracker.js';
import { operatorOf } from './auth.js';
import * as S from './schemas.js';

export interface DiskUsage {
  readonly total: number;
  readonly free: number;
}

export async function diskUsage(dir: string): Promise<DiskUsage | null> {
  try {
    const s = await statfs(dir);
    return { total: s.blocks * s.bsize, free: s.bavail * s.bsize };
  } catch {
    return null;
  }
}

/** A layout for the API: the partitions' facts, and the free chunk runs summed to bytes (scripts want the amount, not the map). */
export function layoutView(l: DiskLayout): Static<typeof S.DiskLayoutView> {
  return {
    scheme: l.scheme,
    diskGuid: l.diskGuid,
    partitions: l.partitions.map((p) => ({
      index: p.index, typeId: p.typeId, guid: p.guid, name: p.name, filesystem: p.filesystem, label: p.label, uuid: p.uuid,
      startBytes: p.startBytes, sizeBytes: p.sizeBytes, usedBytes: p.usedBytes, minSizeBytes: p.minSizeBytes, mode: p.mode, note: p.note,
    })),
    freeBytes: layoutFreeBytes(l),
  };
}

const err = { 400: S.ErrorBody, 401: S.ErrorBody, 403: S.ErrorBody, 404: S.ErrorBody, 409: S.ErrorBody };

export function registerApi(app: FastifyInstance, ctx: WebContext, verifier: VerifyTracker): void {
  const { commands } = ctx;
  const hostView = (h: HostRecord): HostRecord & { state: HostState } => ({ ...h, state: hostState(h, ctx.tasks.list({ mac: h.mac })) });
  const verifyOf = (name: string): Static<typeof S.VerifyStatus> | null => verifier.get(name) ?? null;
  const imageView = (d: ImageDetails): Static<typeof S.ImageDetail> => ({
    name: d.name, latestVersion: d.latestVersion, size: d.size, dataBytes: d.dataBytes, storedBytes: d.storedBytes,
    exclusiveBytes: d.exclusiveBytes, sharedBytes: d.sharedBytes, retention: d.retention,
    compressionRatio: d.compressionRatio, dedupSavings: d.dedupSavings,
    versions: d.versions.map((v) => ({
      version: v.version, size: v.size, created: v.created, source: v.source, digest: v.digest, dataBytes: v.dataBytes, storedBytes: v.storedBytes,
      previousVersion: v.previousVersion, changedBytes: v.changedBytes, changedStoredBytes: v.changedStoredBytes, protected: v.protected, note: v.note,
      sourceMac: v.sourceMac, sourceName: v.sourceName ?? null,
    })),
    partitionTable: d.partitionTable ? { scheme: d.partitionTable.scheme, partitions: d.partitionTable.partitions.map((p) => ({ index: p.index, typeName: p.typeName, name: p.name, sizeBytes: p.sizeBytes, filesystem: p.filesystem })) } : null,
    partitionError: d.partitionError,
    layout: d.layout ? layoutView(d.layout) : null,
    layoutError: d.layoutError,
    fitsDiskBytes: d.fitsDiskBytes,
    lastVerify: verifyOf(d.name),
  });
  const security: Array<Record<string, string[]>> = [{ bearer: [] }, { session: [] }];

  app.get('/api/v1/status', { schema: { tags: ['status'], summary: 'Services, boot files, store space, counts', security, response: { 200: S.Status, ...err } } }, async (req) => {
    const disk = await diskUsage(ctx.config.imagesDir);
    return {
      services: ctx.services(),
      bootFiles: await ctx.bootFiles(),
      store: { path: ctx.config.imagesDir, totalBytes: disk?.total ?? null, freeBytes: disk?.free ?? null },
      hosts: ctx.hosts.list().length,
      images: (await commands.listImages(operatorOf(req))).length,
      activeTasks: ctx.tasks.list({ active: true }).length,
    };
  });

  // Hosts
  app.get('/api/v1/hosts', { schema: { tags: ['hosts'], summary: 'All PCs, newest sighting first', security, response: { 200: { type: 'array', items: S.Host }, ...err } } }, async () =>
    ctx.hosts.list().map(hostView));

  app.get<{ Params: Static<typeof S.MacParams> }>('/api/v1/hosts/:mac', { schema: { tags: ['hosts'], security, params: S.MacParams, response: { 200: S.Host, ...err } } }, async (req) =>
    hostView(ctx.hosts.require(req.params.mac)));

  app.post<{ Body: Static<typeof S.NewHost> }>('/api/v1/hosts', { schema: { tags: ['hosts'], summary: 'Register a PC by MAC', security, body: S.NewHost, response: { 201: S.Host, ...err } } }, async (req, reply) => {
    const host = await commands.addHost(operatorOf(req), req.body.mac, req.body.name);
    return reply.code(201).send(hostView(host));
  });

  app.patch<{ Params: Static<typeof S.MacParams>; Body: Static<typeof S.HostPatch> }>('/api/v1/hosts/:mac', {
    schema: { tags: ['hosts'], summary: 'Rename, assign an image, set local boot', security, params: S.MacParams, body: S.HostPatch, response: { 200: S.Host, ...err } },
  }, async (req) => hostView(await commands.updateHost(operatorOf(req), req.params.mac, req.body)));

  app.delete<{ Params: Static<typeof S.MacParams> }>('/api/v1/hosts/:mac', { schema: { tags: ['hosts'], security, params: S.MacParams, response: { 204: { type: 'null' }, ...err } } }, async (req, reply) => {
    await commands.removeHost(operatorOf(req), req.params.mac);
    return reply.code(204).send();
  });

  // Images
  app.get('/api/v1/images', { schema: { tags: ['images'], security, response: { 200: { type: 'array', items: S.ImageSummary }, ...err } } }, async (req) =>
    (await commands.listImages(operatorOf(req))).map((i) => ({ ...i, lastVerify: verifyOf(i.name) })));

  app.get<{ Params: Static<typeof S.ImageParams> }>('/api/v1/images/:name', { schema: { tags: ['images'], security, params: S.ImageParams, response: { 200: S.ImageDetail, ...err } } }, async (req) => {
    return imageView(await commands.showImage(operatorOf(req), req.params.name));
  });

  app.post<{ Params: Static<typeof S.ImageParams>; Body: Static<typeof S.VerifyBody> | undefined }>('/api/v1/images/:name/verify', {
    schema: { tags: ['images'], summary: 'Start a verify; poll GET /api/v1/images/:name for lastVerify', security, params: S.ImageParams, body: S.VerifyBody, response: { 202: S.VerifyStatus, ...err } },
  }, async (req, reply) => {
    const actor = operatorOf(req);
    await commands.checkVerifiable(actor, req.params.name);
    return reply.code(202).send(verifier.start(req.params.name, req.body?.version, (name, version) => commands.verifyImage(actor, name, { version })));
  });

  app.post<{ Params: Static<typeof S.ImageParams>; Body: Static<typeof S.RenameBody> }>('/api/v1/images/:name/rename', {
    schema: { tags: ['images'], security, params: S.ImageParams, body: S.RenameBody, response: { 200: S.ImageDetail, ...err } },
  }, async (req) => {
    await commands.renameImage(operatorOf(req), req.params.name, req.body.to);
    return imageView(await commands.showImage(operatorOf(req), req.body.to));
  });

  app.delete<{ Params: Static<typeof S.VersionParams> }>('/api/v1/images/:name/versions/:n', {
    schema: { tags: ['images'], security, params: S.VersionParams, response: { 204: { type: 'null' }, ...err } },
  }, async (req, reply) => {
    await commands.removeVersion(operatorOf(req), req.params.name, req.params.n);
    return reply.code(204).send();
  });

  app.post<{ Params: Static<typeof S.ImageParams>; Body: Static<typeof S.UrlBody> | undefined }>('/api/v1/images/:name/url', {
    schema: { tags: ['images'], summary: 'A read-only nbd:// URL for the newest version', security, params: S.ImageParams, body: S.UrlBody, response: { 200: S.NbdUrlBody, ...err } },
  }, async (req) => commands.imageUrl(operatorOf(req), { image: req.params.name, write: false, ttlSeconds: req.body?.ttlSeconds, host: requestHost(req.headers.host) }));

  // Tasks
  app.get<{ Querystring: Static<typeof S.TaskQuery> }>('/api/v1/tasks', { schema: { tags: ['tasks'], security, querystring: S.TaskQuery, response: { 200: { type: 'array', items: S.Task }, ...err } } }, async (req) => {
    const list = commands.listTasks(operatorOf(req), { mac: req.query.mac, active: req.query.active });
    return list.slice(0, req.query.limit ?? 200);
  });

  app.get<{ Params: Static<typeof S.TaskParams> }>('/api/v1/tasks/:id', { schema: { tags: ['tasks'], security, params: S.TaskParams, response: { 200: S.Task, ...err } } }, async (req) =>
    commands.showTask(operatorOf(req), req.params.id));

  app.post<{ Body: Static<typeof S.NewTask> }>('/api/v1/tasks', { schema: { tags: ['tasks'], summary: 'Queue a capture or deploy', security, body: S.NewTask, response: { 201: S.StartedTask, ...err } } }, async (req, reply) => {
    const result = await commands.startTask(operatorOf(req), req.body);
    return reply.code(201).send(result);
  });

  app.post<{ Params: Static<typeof S.TaskParams> }>('/api/v1/tasks/:id/cancel', { schema: { tags: ['tasks'], security, params: S.TaskParams, response: { 200: S.Task, ...err } } }, async (req) =>
    commands.cancelTask(operatorOf(req), req.params.id));

  // Events
  app.get<{ Querystring: Static<typeof S.EventQuery> }>('/api/v1/events', { schema: { tags: ['events'], security, querystring: S.EventQuery, response: { 200: { type: 'array', items: S.Event }, ...err } } }, async (req) =>
    ctx.events.recent(req.query.limit ?? 100, req.query.mac ? requireMac(req.query.mac) : undefined));

  // API tokens (a script with a token may manage tokens too, like the CLI)
  app.get('/api/v1/tokens', { schema: { tags: ['tokens'], security, response: { 200: { type: 'array', items: S.TokenRecord }, ...err } } }, async (req) => commands.listApiTokens(operatorOf(req)));

  app.post<{ Body: Static<typeof S.TokenBody> }>('/api/v1/tokens', {
    schema: { tags: ['tokens'], summary: 'Create a token; the token is in this response only', security, body: S.TokenBody, response: { 201: Type_TokenCreated, ...err } },
  }, async (req, reply) => {
    const created = await commands.createApiToken(operatorOf(req), req.body.name);
    return reply.code(201).send({ ...created.record, token: created.token });
  });

  app.delete<{ Params: { id: string } }>('/api/v1/tokens/:id', {
    schema: { tags: ['tokens'], security, params: S.TaskParams, response: { 204: { type: 'null' }, ...err } },
  }, async (req, reply) => {
    await commands.revokeApiToken(operatorOf(req), req.params.id);
    return reply.code(204).send();
  });
}

const Type_TokenCreated = { ...S.TokenRecord, properties: { ...S.TokenRecord.properties, token: { type: 'string' } }, required: [...(S.TokenRecord.required ?? []), 'token'] };

/** The host name the caller reached us on, for URLs it can use; only a plain host[:port] is trusted. */
export function requestHost(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/.exec(header);
  return m ? m[1] : undefined;
}
