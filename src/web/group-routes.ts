/**
 * Groups on the admin page: the groups page with each group's PCs and their live tasks, the
 * group actions (wake, capture, deploy all), putting a PC in a group, and a Wake button per PC.
 * Every action redirects back to the page it was sent from (its `back` field) with what happened.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { hostState, type GroupTaskResult, type WakeReport } from '../domain/commands.js';
import { isActive } from '../domain/tasks.js';
import type { TaskRecord } from '../domain/database.js';
import { operatorOf } from './auth.js';
import type { WebContext } from './context.js';
import { setFlash } from './flash.js';
import { backOf } from './form-return.js';
import type { SafeHtml } from './html.js';
import { csrfFor, renderPage } from './pages.js';
import { groupMembers, groupsPage, type GroupMember } from './pages/groups.js';
import { MacParams } from './schemas.js';

const GroupParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 64 }) });
const FormGroupTask = Type.Object({
  image: Type.Optional(Type.String({ maxLength: 64 })),
  wake: Type.Optional(Type.String({ maxLength: 8 })),
  after: Type.Optional(Type.String({ maxLength: 16 })),
  _csrf: Type.Optional(Type.String()),
});
const FormAssign = Type.Object({ mac: Type.String({ maxLength: 64 }), group: Type.Optional(Type.String({ maxLength: 100 })), _csrf: Type.Optional(Type.String()) });

function sendHtml(reply: FastifyReply, body: string | SafeHtml): FastifyReply {
  return reply.code(200).type('text/html; charset=utf-8').header('Cache-Control', 'no-store').send(typeof body === 'string' ? body : body.value);
}

/** "3 PCs woken" or which ones were not, in one flash line. */
function wakeSummary(reports: readonly WakeReport[], names: ReadonlyMap<string, string>): string {
  const label = (mac: string): string => names.get(mac) || mac;
  const failed = reports.filter((r) => !r.sent);
  const sent = reports.length - failed.length;
  const head = `Wake-on-LAN sent to ${sent} of ${reports.length} PC${reports.length === 1 ? '' : 's'}`;
  return failed.length === 0 ? `${head}.` : `${head}; not sent to ${failed.map((r) => `${label(r.mac)} (${r.detail})`).join('; ')}.`;
}

function taskSummary(kind: 'capture' | 'deploy', group: string, results: readonly GroupTaskResult[]): string {
  const ok = results.filter((r) => r.ok);
  const refused = results.filter((r) => !r.ok);
  const head = `${kind === 'capture' ? 'Capture' : 'Deploy'} queued for ${ok.length} of ${results.length} PCs in ${group}`;
  const woken = ok.filter((r) => r.wake?.sent).length;
  const wake = ok.some((r) => r.wake) ? `, ${woken} woken` : '';
  return `${head}${wake}${refused.length ? `; not for ${refused.map((r) => `${r.name || r.mac}: ${r.error ?? 'refused'}`).join('; ')}` : ''}.`;
}

export function registerGroupRoutes(app: FastifyInstance, ctx: WebContext, options: { scheduleHref?: (group: string) => string } = {}): void {
  const { commands } = ctx;
  const hide = { hide: true };

  const membersOf = (name: string): GroupMember[] => {
    const tasks = ctx.tasks.list();
    const key = name.toLowerCase();
    return ctx.hosts.list().filter((h) => h.group?.toLowerCase() === key).map((host) => {
      const mine = tasks.filter((t) => t.mac === host.mac);
      // The list is newest first: the active task if there is one, else the last.
      const task: TaskRecord | undefined = mine.find(isActive) ?? mine[0];
      return { host, state: hostState(host, mine), task };
    });
  };

  app.get('/groups', { schema: hide }, async (req, reply) => {
    const actor = operatorOf(req);
    const groups = commands.listGroups(actor).map((g) => ({ name: g.name, members: membersOf(g.name) }));
    const body = groupsPage({
      groups, hosts: ctx.hosts.list(), images: await commands.listImages(actor), csrf: csrfFor(req, reply),
      // The schedules page's form with this group as its target (app.ts passes schedule-routes' link).
      scheduleHref: options.scheduleHref ?? null,
    });
    return sendHtml(reply, renderPage(req, reply, { title: 'Groups', section: 'groups', body }));
  });

  app.get<{ Params: Static<typeof GroupParams> }>('/groups/:name/hosts', { schema: { ...hide, params: GroupParams } }, async (req, reply) =>
    sendHtml(reply, groupMembers(req.params.name, membersOf(req.params.name), csrfFor(req, reply))));

  app.post<{ Body: Static<typeof FormAssign> }>('/groups/assign', { schema: { ...hide, body: FormAssign } }, async (req, reply) => {
    const host = await commands.setHostGroup(operatorOf(req), req.body.mac, req.body.group ?? null);
    setFlash(req, host.group ? `${host.name || host.mac} is in ${host.group} now.` : `${host.name || host.mac} is in no group now.`);
    return reply.redirect(backOf(req) ?? '/groups', 303);
  });

  app.post<{ Params: Static<typeof MacParams> }>('/hosts/:mac/wake', { schema: { ...hide, params: MacParams } }, async (req, reply) => {
    const report = await commands.wakeHost(operatorOf(req), req.params.mac);
    const name = ctx.hosts.get(report.mac)?.name || report.mac;
    setFlash(req, report.sent ? `Wake-on-LAN sent to ${name}: ${report.detail}.` : `${name}: ${report.detail}.`, report.sent ? 'notice' : 'error');
    return reply.redirect(backOf(req) ?? `/hosts/${report.mac}`, 303);
  });

  app.post<{ Params: Static<typeof GroupParams> }>('/groups/:name/wake', { schema: { ...hide, params: GroupParams } }, async (req, reply) => {
    const reports = await commands.wakeGroup(operatorOf(req), req.params.name);
    const names = new Map(ctx.hosts.list().map((h) => [h.mac, h.name]));
    setFlash(req, wakeSummary(reports, names), reports.every((r) => r.sent) ? 'notice' : 'error');
    return reply.redirect(backOf(req) ?? '/groups', 303);
  });

  for (const kind of ['capture', 'deploy'] as const) {
    app.post<{ Params: Static<typeof GroupParams>; Body: Static<typeof FormGroupTask> }>(`/groups/:name/${kind}`, { schema: { ...hide, params: GroupParams, body: FormGroupTask } }, async (req, reply) => {
      const image = req.body.image?.trim() || undefined;
      const results = await commands.groupTask(operatorOf(req), req.params.name, {
        kind, image, wake: req.body.wake === 'on', after: req.body.after === 'poweroff' ? 'poweroff' : 'reboot',
      });
      setFlash(req, taskSummary(kind, req.params.name, results), results.every((r) => r.ok) ? 'notice' : 'error');
      return reply.redirect(backOf(req) ?? '/groups', 303);
    });
  }
}
