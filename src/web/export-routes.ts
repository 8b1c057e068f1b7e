/**
 * Inventory and task history as CSV, for the spreadsheet an office keeps of its PCs:
 * GET /api/v1/hosts.csv (the hosts list's filters apply) and /api/v1/tasks.csv, or
 * GET /api/v1/hosts and /api/v1/tasks with "Accept: text/csv". Under /api/v1, so a session
 * (the page's links) or an API token (scripts) is needed like for the rest of the API.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { HostRecord, TaskRecord } from '../domain/database.js';
import { hostState, requireMac, type HostState } from '../domain/commands.js';
import type { WebContext } from './context.js';
import { csvDocument, type CsvCell } from './csv.js';
import { filterHosts, groupOf, parseHostFilter } from './host-filter.js';

const HOST_HEADER = [
  'name', 'mac', 'ip', 'registered', 'group', 'state', 'vendor', 'model', 'serial', 'firmware', 'arch',
  'disks', 'nics', 'assigned image', 'first seen', 'last seen', 'hardware reported',
];

const TASK_HEADER = [
  'id', 'created', 'kind', 'image', 'mac', 'host', 'state', 'started', 'finished', 'seconds',
  'disk', 'disk serial', 'disk bytes', 'covered bytes', 'wire bytes', 'version', 'reason',
];

function hostRow(h: HostRecord, state: HostState): CsvCell[] {
  const hw = h.hardware;
  // Several disks or NICs share one cell ("; " between them): one row per PC is what a spreadsheet of PCs wants.
  const disks = hw?.disks.map((d) => [d.name, `${d.size} bytes`, d.model, d.serial ? `serial ${d.serial}` : '', d.transport].filter(Boolean).join(' ')).join('; ') ?? '';
  const nics = hw?.nics.map((n) => [n.name, n.mac, n.driver, n.speed].filter(Boolean).join(' ')).join('; ') ?? '';
  return [
    h.name, h.mac, h.ip, h.registered, groupOf(h), state, hw?.dmi.vendor, hw?.dmi.model, hw?.dmi.serial, h.firmware, h.arch,
    disks, nics, h.assignedImage, h.firstSeen, h.lastSeen, hw?.reportedAt,
  ];
}

function taskRow(t: TaskRecord, hostName: string): CsvCell[] {
  const seconds = t.startedAt && t.finishedAt ? Math.round((Date.parse(t.finishedAt) - Date.parse(t.startedAt)) / 1000) : null;
  return [
    t.id, t.createdAt, t.kind, t.image, t.mac, hostName, t.state, t.startedAt, t.finishedAt, seconds,
    t.disk?.name, t.disk?.serial, t.disk?.size ?? t.progress.total, t.progress.bytes, t.result?.bytesOnWire ?? t.progress.wireBytes,
    t.result?.version, t.reason,
  ];
}

const HostCsvQuery = Type.Object({
  q: Type.Optional(Type.String({ maxLength: 100 })),
  model: Type.Optional(Type.String({ maxLength: 200 })),
  group: Type.Optional(Type.String({ maxLength: 100 })),
  state: Type.Optional(Type.String({ maxLength: 20 })),
});
const TaskCsvQuery = Type.Object({ mac: Type.Optional(Type.String({ maxLength: 64 })) });

/** True when the caller asked for CSV over JSON (an explicit text/csv at least as preferred as application/json). */
export function wantsCsv(accept: string | undefined): boolean {
  if (!accept) return false;
  let csv = 0;
  let json = 0;
  for (const part of accept.split(',')) {
    const [type, ...params] = part.trim().toLowerCase().split(';');
    const qParam = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    const q = qParam ? Number(qParam.slice(2)) : 1;
    if (!Number.isFinite(q)) continue;
    if (type.trim() === 'text/csv') csv = Math.max(csv, q);
    if (type.trim() === 'application/json') json = Math.max(json, q);
  }
  return csv > 0 && csv >= json;
}

export function registerExportRoutes(app: FastifyInstance, ctx: WebContext): void {
  const stamp = (): string => new Date().toISOString().slice(0, 10);
  const sendCsv = (reply: FastifyReply, what: string, body: string): FastifyReply =>
    reply.code(200)
      .type('text/csv; charset=utf-8')
      .header('Content-Disposition', `attachment; filename="netclone-${what}-${stamp()}.csv"`)
      .header('Cache-Control', 'no-store')
      .send(body);

  const hostsCsv = (query: unknown): string => {
    const tasks = ctx.tasks.list();
    const hosts = ctx.hosts.list();
    const states = new Map(hosts.map((h) => [h.mac, hostState(h, tasks)]));
    return csvDocument(HOST_HEADER, filterHosts(hosts, states, parseHostFilter(query)).map((h) => hostRow(h, states.get(h.mac) ?? 'idle')));
  };
  const tasksCsv = (mac: string | undefined): string => {
    const names = new Map(ctx.hosts.list().map((h) => [h.mac, h.name]));
    const tasks = ctx.tasks.list(mac ? { mac: requireMac(mac) } : {});
    return csvDocument(TASK_HEADER, tasks.map((t) => taskRow(t, names.get(t.mac) ?? '')));
  };

  const security: Array<Record<string, string[]>> = [{ bearer: [] }, { session: [] }];
  app.get<{ Querystring: Static<typeof HostCsvQuery> }>('/api/v1/hosts.csv', {
    schema: { tags: ['hosts'], summary: 'Inventory as CSV (hardware, group, state); q, model, group and state filter like the hosts list', security, querystring: HostCsvQuery },
  }, async (req, reply) => sendCsv(reply, 'hosts', hostsCsv(req.query)));

  app.get<{ Querystring: Static<typeof TaskCsvQuery> }>('/api/v1/tasks.csv', {
    schema: { tags: ['tasks'], summary: 'Task history as CSV, newest first; mac limits it to one PC', security, querystring: TaskCsvQuery },
  }, async (req, reply) => sendCsv(reply, 'tasks', tasksCsv(req.query.mac)));

  // The JSON routes answer CSV too when asked for it: one URL for scripts that negotiate.
  app.addHook('preHandler', async (req: FastifyRequest, reply: FastifyReply) => {
    if (req.method !== 'GET' || !wantsCsv(req.headers.accept)) return;
    const route = req.routeOptions.url;
    const query = (req.query ?? {}) as Record<string, unknown>;
    if (route === '/api/v1/hosts') return sendCsv(reply, 'hosts', hostsCsv(query));
    if (route === '/api/v1/tasks') return sendCsv(reply, 'tasks', tasksCsv(typeof query.mac === 'string' ? query.mac : undefined));
  });
}
