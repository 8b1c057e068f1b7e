/**
 * Backup schedules on the web (issue 13): the JSON API (/api/v1/schedules, a host's group, Wake-on-LAN,
 * groups and group tasks) and the Schedules page (list, add form, remove). Everything goes through the
 * commands, so the API, the page and the CLI refuse the same things with the same words.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { hostState } from '../domain/commands.js';
import type { HostRecord } from '../domain/database.js';
import type { ScheduleView } from '../domain/schedules.js';
import { WEEKDAYS } from '../domain/schedule-time.js';
import { operatorOf } from './auth.js';
import type { WebContext } from './context.js';
import { setFlash } from './flash.js';
import { html, type SafeHtml } from './html.js';
import { formatTime } from './format.js';
import { csrfFor, renderPage } from './pages.js';
import { csrfField, emptyState } from './pages/layout.js';
import * as S from './schemas.js';

const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);

const Spec = Type.Union([
  Type.Object({ kind: Type.Literal('daily'), time: Type.String() }),
  Type.Object({ kind: Type.Literal('weekly'), day: Type.String(), time: Type.String() }),
  Type.Object({ kind: Type.Literal('cron'), expression: Type.String() }),
]);

const Run = Type.Object({
  id: Type.String(), scheduleId: Type.String(), mac: Type.String(), dueAt: Type.String(),
  state: Type.Union(['pending', 'running', 'done', 'failed', 'missed'].map((s) => Type.Literal(s))),
  taskId: Nullable(Type.String()), reason: Nullable(Type.String()), endedAt: Nullable(Type.String()),
});

export const Schedule = Type.Object({
  id: Type.String(),
  target: Type.Union([Type.Object({ mac: Type.String() }), Type.Object({ group: Type.String() })]),
  image: Type.String({ description: 'image name; "{host}" is each host\'s name (a group schedule without it captures into "<image>-{host}")' }),
  spec: Spec,
  wake: Type.Boolean(), after: Type.Union([Type.Literal('reboot'), Type.Literal('poweroff')]),
  windowMinutes: Type.Integer({ description: 'minutes after the due time the PC may still start; later, the run is missed' }),
  createdAt: Type.String(), lastRunAt: Nullable(Type.String()),
  description: Type.String(), targetLabel: Type.String(), nextRunAt: Type.String(),
  lastRuns: Type.Array(Run, { description: 'the runs of the latest due time, one per host' }),
});

export const NewScheduleBody = Type.Object({
  host: Type.Optional(Type.String({ maxLength: 64, description: 'MAC of the host (or give group)' })),
  group: Type.Optional(Type.String({ maxLength: 64, description: 'group whose hosts are captured (or give host)' })),
  capture: Type.String({ minLength: 1, maxLength: 64, description: 'image name to capture into ("{host}" allowed)' }),
  daily: Type.Optional(Type.String({ maxLength: 5, description: 'HH:MM' })),
  weekly: Type.Optional(Type.Object({ day: Type.String({ maxLength: 16 }), time: Type.String({ maxLength: 5 }) })),
  cron: Type.Optional(Type.String({ maxLength: 200, description: '"m h dom mon dow"' })),
  wake: Type.Optional(Type.Boolean({ description: 'send Wake-on-LAN at the start' })),
  after: Type.Optional(Type.Union([Type.Literal('poweroff'), Type.Literal('reboot')], { description: 'default: poweroff with wake, else reboot' })),
  windowMinutes: Type.Optional(Type.Integer({ minimum: 1, maximum: 1440 })),
}, { additionalProperties: false });

const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64 }) });
const GroupParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 64 }) });
const GroupBody = Type.Object({ group: Nullable(Type.String({ maxLength: 64 })) }, { additionalProperties: false });
const Wake = Type.Object({ mac: Type.String(), sent: Type.Boolean(), detail: Type.String() });
const Group = Type.Object({ name: Type.String(), hosts: Type.Array(Type.String()) });
const GroupTaskBody = Type.Object({
  kind: Type.Union([Type.Literal('capture'), Type.Literal('deploy')]),
  image: Type.Optional(Type.String({ maxLength: 64, description: 'capture: image name ("{host}" allowed, else "-{host}" is appended); deploy: default each host\'s assigned image' })),
  after: Type.Optional(Type.Union([Type.Literal('poweroff'), Type.Literal('reboot')])),
  wake: Type.Optional(Type.Boolean()),
}, { additionalProperties: false });
const GroupTaskResult = Type.Object({
  mac: Type.String(), name: Type.String(), ok: Type.Boolean(), task: Type.Union([S.Task, Type.Null()]),
  wake: Type.Union([Type.Object({ sent: Type.Boolean(), detail: Type.String() }), Type.Null()]), error: Nullable(Type.String()),
});

const FormSchedule = Type.Object({
  target: Type.String({ maxLength: 100 }),
  capture: Type.String({ maxLength: 64 }),
  when: Type.String({ maxLength: 8 }),
  time: Type.Optional(Type.String({ maxLength: 5 })),
  day: Type.Optional(Type.String({ maxLength: 16 })),
  cron: Type.Optional(Type.String({ maxLength: 200 })),
  wake: Type.Optional(Type.String({ maxLength: 8 })),
  after: Type.Optional(Type.String({ maxLength: 16 })),
  _csrf: Type.Optional(Type.String()),
});

const PageQuery = Type.Object({ group: Type.Optional(Type.String({ maxLength: 64 })), host: Type.Optional(Type.String({ maxLength: 64 })) });

/** The Schedules page with `group` picked in the add form (for the groups page's "Schedule a backup…" link). */
export function scheduleHrefForGroup(group: string): string {
  return `/schedules?group=${encodeURIComponent(group)}`;
}

const err = { 400: S.ErrorBody, 401: S.ErrorBody, 403: S.ErrorBody, 404: S.ErrorBody, 409: S.ErrorBody };
const security: Array<Record<string, string[]>> = [{ bearer: [] }, { session: [] }];

function sendHtml(reply: FastifyReply, body: string): FastifyReply {
  return reply.code(200).type('text/html; charset=utf-8').header('Cache-Control', 'no-store').send(body);
}

function lastRunCell(s: ScheduleView): SafeHtml {
  if (s.lastRuns.length === 0) return html`<span class="muted">not run yet</span>`;
  return html`${formatTime(s.lastRuns[0].dueAt)}: ${s.lastRuns.map((r) => html`<span class="badge ${r.state === 'done' ? 'ok' : r.state === 'failed' || r.state === 'missed' ? 'bad' : ''}" title="${r.reason ?? ''}">${s.lastRuns.length > 1 ? `${r.mac} ` : ''}${r.state}</span> `)}`;
}

export function schedulesPage(d: { schedules: readonly ScheduleView[]; hosts: readonly HostRecord[]; groups: readonly string[]; csrf: string; selected?: string }): SafeHtml {
  return html`<h1>Schedules</h1>
<section class="card">
${d.schedules.length === 0 ? emptyState('No schedules yet: add one below and the backups run themselves.') : html`<div class="table-wrap"><table class="schedules">
<thead><tr><th>Target</th><th>Image</th><th>When</th><th>Wake</th><th>After</th><th>Next run</th><th>Last run</th><th></th></tr></thead>
<tbody>${d.schedules.map((s) => html`<tr data-id="${s.id}">
<td>${s.targetLabel}</td><td class="mono">${s.imageLabel}</td><td>${s.description}</td><td>${s.wake ? 'yes' : 'no'}</td><td>${s.after}</td>
<td>${formatTime(s.nextRunAt)}</td><td>${lastRunCell(s)}</td>
<td><form method="post" action="/schedules/${s.id}/delete" class="inline" hx-confirm="Remove this schedule?">${csrfField(d.csrf)}<button class="small secondary">Remove</button></form></td>
</tr>`)}</tbody></table></div>`}
</section>
<section class="card">
<h2>Add a schedule</h2>
<form method="post" action="/schedules" class="row-form schedule-form">
${csrfField(d.csrf)}
<label>Back up <select name="target" required>
${d.groups.length ? html`<optgroup label="Groups">${d.groups.map((g) => html`<option value="group:${g}"${d.selected === `group:${g}` ? html` selected` : ''}>${g} (group)</option>`)}</optgroup>` : ''}
<optgroup label="Hosts">${d.hosts.map((h) => html`<option value="host:${h.mac}"${d.selected === `host:${h.mac}` ? html` selected` : ''}>${h.name ? `${h.name} (${h.mac})` : h.mac}</option>`)}</optgroup>
</select></label>
<label>Into image <input name="capture" required maxlength="64" placeholder="office-{host}"></label>
<p class="hint">"{host}" becomes each PC's name; a group's schedule adds "-{host}" when the name has none.</p>
<fieldset><legend>When</legend>
<label class="check"><input type="radio" name="when" value="daily" checked> Daily</label>
<label class="check"><input type="radio" name="when" value="weekly"> Weekly on <select name="day">${WEEKDAYS.map((w) => html`<option value="${w}">${w}</option>`)}</select></label>
<label>at <input name="time" type="time" value="02:00"></label>
<label class="check"><input type="radio" name="when" value="cron"> Cron <input name="cron" maxlength="200" placeholder="0 2 * * 1-5"></label>
</fieldset>
<label class="check"><input type="checkbox" name="wake" value="on" checked> Wake the PC (Wake-on-LAN)</label>
<label>Afterwards <select name="after"><option value="">power off if woken, else reboot</option><option value="poweroff">power off</option><option value="reboot">reboot</option></select></label>
<button>Add schedule</button>
</form>
</section>`;
}

export function registerScheduleRoutes(app: FastifyInstance, ctx: WebContext): void {
  const { commands } = ctx;
  const hostView = (h: HostRecord): HostRecord & { state: ReturnType<typeof hostState> } => ({ ...h, state: hostState(h, ctx.tasks.list({ mac: h.mac })) });

  // ---- API ----
  app.get('/api/v1/schedules', { schema: { tags: ['schedules'], summary: 'Backup schedules with their next run and latest runs', security, response: { 200: Type.Array(Schedule), ...err } } }, async (req) =>
    commands.listSchedules(operatorOf(req)));

  app.post<{ Body: Static<typeof NewScheduleBody> }>('/api/v1/schedules', {
    schema: { tags: ['schedules'], summary: 'Add a schedule: one host or a group, daily, weekly or cron', security, body: NewScheduleBody, response: { 201: Schedule, ...err } },
  }, async (req, reply) => {
    const b = req.body;
    const view = await commands.addSchedule(operatorOf(req), {
      mac: b.host, group: b.group, capture: b.capture, daily: b.daily, weekly: b.weekly, cron: b.cron, wake: b.wake, after: b.after, windowMinutes: b.windowMinutes,
    });
    return reply.code(201).send(view);
  });

  app.delete<{ Params: Static<typeof IdParams> }>('/api/v1/schedules/:id', { schema: { tags: ['schedules'], security, params: IdParams, response: { 204: { type: 'null' }, ...err } } }, async (req, reply) => {
    await commands.removeSchedule(operatorOf(req), req.params.id);
    return reply.code(204).send();
  });

  app.put<{ Params: Static<typeof S.MacParams>; Body: Static<typeof GroupBody> }>('/api/v1/hosts/:mac/group', {
    schema: { tags: ['hosts'], summary: 'Put a host in a group (null or "" takes it out)', security, params: S.MacParams, body: GroupBody, response: { 200: S.Host, ...err } },
  }, async (req) => hostView(await commands.setHostGroup(operatorOf(req), req.params.mac, req.body.group)));

  app.post<{ Params: Static<typeof S.MacParams> }>('/api/v1/hosts/:mac/wake', {
    schema: { tags: ['hosts'], summary: 'Send Wake-on-LAN now (3 packets, 1 s apart)', security, params: S.MacParams, response: { 200: Wake, ...err } },
  }, async (req) => commands.wakeHost(operatorOf(req), req.params.mac));

  app.get('/api/v1/groups', { schema: { tags: ['groups'], security, response: { 200: Type.Array(Group), ...err } } }, async (req) => commands.listGroups(operatorOf(req)));

  app.post<{ Params: Static<typeof GroupParams> }>('/api/v1/groups/:name/wake', {
    schema: { tags: ['groups'], summary: 'Wake every host of a group', security, params: GroupParams, response: { 200: Type.Array(Wake), ...err } },
  }, async (req) => commands.wakeGroup(operatorOf(req), req.params.name));

  app.post<{ Params: Static<typeof GroupParams>; Body: Static<typeof GroupTaskBody> }>('/api/v1/groups/:name/tasks', {
    schema: { tags: ['groups'], summary: 'Capture or deploy every host of a group; per-host results', security, params: GroupParams, body: GroupTaskBody, response: { 200: Type.Array(GroupTaskResult), ...err } },
  }, async (req) => commands.groupTask(operatorOf(req), req.params.name, req.body));

  // ---- page ----
  app.get<{ Querystring: Static<typeof PageQuery> }>('/schedules', { schema: { hide: true, querystring: PageQuery } }, async (req, reply) => {
    const actor = operatorOf(req);
    // The groups page and a host page link here with the target picked (?group=NAME or ?host=MAC).
    const selected = req.query.group ? `group:${req.query.group}` : req.query.host ? `host:${req.query.host}` : undefined;
    const body = schedulesPage({
      schedules: commands.listSchedules(actor), hosts: commands.listHosts(actor), groups: commands.listGroups(actor).map((g) => g.name), csrf: csrfFor(req, reply), selected,
    });
    return sendHtml(reply, renderPage(req, reply, { title: 'Schedules', section: 'schedules', body }));
  });

  app.post<{ Body: Static<typeof FormSchedule> }>('/schedules', { schema: { hide: true, body: FormSchedule } }, async (req, reply) => {
    const f = req.body;
    const [kind, ...rest] = f.target.split(':');
    const target = rest.join(':');
    const time = f.time?.trim() ?? '';
    const view = await commands.addSchedule(operatorOf(req), {
      mac: kind === 'host' ? target : undefined,
      group: kind === 'group' ? target : undefined,
      capture: f.capture.trim(),
      daily: f.when === 'daily' ? time : undefined,
      weekly: f.when === 'weekly' ? { day: f.day ?? '', time } : undefined,
      cron: f.when === 'cron' ? f.cron ?? '' : f.when !== 'daily' && f.when !== 'weekly' ? '' : undefined,
      wake: f.wake === 'on',
      after: f.after === 'poweroff' || f.after === 'reboot' ? f.after : undefined,
    });
    setFlash(req, `Schedule added: ${view.targetLabel} into ${view.imageLabel}, ${view.description}; next run ${formatTime(view.nextRunAt)}.`);
    return reply.redirect('/schedules', 303);
  });

  app.post<{ Params: Static<typeof IdParams> }>('/schedules/:id/delete', { schema: { hide: true, params: IdParams } }, async (req, reply) => {
    await commands.removeSchedule(operatorOf(req), req.params.id);
    setFlash(req, 'Schedule removed.');
    return reply.redirect('/schedules', 303);
  });
}
