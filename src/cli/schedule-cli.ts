/**
 * The CLI's schedule and group commands (issue 13). main.ts dispatches here for the words in
 * SCHEDULE_COMMANDS; the work is done by the commands (command-table.ts), through the server's
 * control socket when one runs.
 */
import { UsageError, type FlagSpecs, type ParsedArgs } from './args.js';
import type { HostRecord, ScheduleRunRecord } from '../domain/database.js';
import type { GroupTaskResult, WakeReport } from '../domain/commands.js';
import type { GroupSummary, ScheduleView } from '../domain/schedules.js';

const COMMON: FlagSpecs = {
  data: { value: true, description: 'data directory (database, images, lock)' },
  config: { value: true, description: 'config file (key = value lines)' },
  help: { value: false, description: 'show help' },
};
const JSON_FLAG: FlagSpecs = { json: { value: false, description: 'JSON output' } };

export const SCHEDULE_COMMANDS: Readonly<Record<string, FlagSpecs>> = {
  'schedule add': {
    ...COMMON, ...JSON_FLAG,
    host: { value: true, description: 'MAC of the host to back up' },
    group: { value: true, description: 'group whose hosts to back up' },
    capture: { value: true, description: 'image name ({host}: the host\'s name)' },
    daily: { value: true, description: 'HH:MM' },
    weekly: { value: true, description: 'DAY HH:MM' },
    cron: { value: true, description: '"m h dom mon dow"' },
    wake: { value: false, description: 'send Wake-on-LAN at the start' },
    after: { value: true, description: 'poweroff|reboot' },
    window: { value: true, description: 'minutes the PC may start late (default 120)' },
  },
  'schedule list': { ...COMMON, ...JSON_FLAG },
  'schedule rm': { ...COMMON, ...JSON_FLAG },
  'host group': { ...COMMON, ...JSON_FLAG, none: { value: false, description: 'take the host out of its group' } },
  'host wake': { ...COMMON, ...JSON_FLAG },
  'group list': { ...COMMON, ...JSON_FLAG },
  'group wake': { ...COMMON, ...JSON_FLAG },
  'group capture': { ...COMMON, ...JSON_FLAG, image: { value: true, description: 'image name ({host}: each host\'s name)' }, after: { value: true, description: 'reboot|poweroff' }, wake: { value: false, description: 'send Wake-on-LAN' } },
  'group deploy': { ...COMMON, ...JSON_FLAG, image: { value: true, description: 'image name (default: each host\'s assigned image)' }, after: { value: true, description: 'reboot|poweroff' }, wake: { value: false, description: 'send Wake-on-LAN' } },
};

export const SCHEDULE_USAGE = `  netclone schedule add --host MAC | --group NAME --capture IMAGE (--daily HH:MM | --weekly DAY HH:MM | --cron "m h dom mon dow")
                 [--wake] [--after poweroff|reboot] [--window MINUTES]   a backup that runs itself
  netclone schedule list [--json] | schedule rm ID
  netclone host group MAC NAME | host group MAC --none | host wake MAC
  netclone group list [--json] | group wake NAME | group capture NAME --image NAME | group deploy NAME [--image NAME]
`;

/** Runs a command by name (through the server when one runs) and returns its result. */
export type RunOp = (name: string, args: Readonly<Record<string, unknown>>, label: string) => Promise<unknown>;

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd()).join('\n') + '\n';
}

function localTime(iso: string): string {
  const d = new Date(iso);
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

function lastRun(runs: readonly ScheduleRunRecord[]): string {
  if (runs.length === 0) return '-';
  const counts = new Map<string, number>();
  for (const r of runs) counts.set(r.state, (counts.get(r.state) ?? 0) + 1);
  return `${localTime(runs[0].dueAt)} ${[...counts].map(([s, n]) => (runs.length === 1 ? s : `${n} ${s}`)).join(', ')}`;
}

export function renderSchedules(list: readonly ScheduleView[]): string {
  if (list.length === 0) return 'No schedules. Add one with "netclone schedule add --host MAC --capture IMAGE --daily 02:00".\n';
  return table([
    ['ID', 'TARGET', 'IMAGE', 'WHEN', 'WAKE', 'AFTER', 'NEXT RUN', 'LAST RUN'],
    ...list.map((s) => [s.id, s.targetLabel, s.imageLabel, s.description, s.wake ? 'yes' : 'no', s.after, localTime(s.nextRunAt), lastRun(s.lastRuns)]),
  ]);
}

function renderWake(reports: readonly WakeReport[]): string {
  return reports.map((r) => `${r.mac}: ${r.sent ? r.detail : `not woken: ${r.detail}`}\n`).join('');
}

function renderGroupTasks(results: readonly GroupTaskResult[]): string {
  return results.map((r) => `${r.mac}${r.name ? ` (${r.name})` : ''}: ${r.ok && r.task ? `${r.task.kind} of ${r.task.image} queued (task ${r.task.id})` : `no task: ${r.error}`}\n`).join('');
}

/** Runs one of SCHEDULE_COMMANDS and returns the exit code. */
export async function runScheduleCli(key: string, parsed: ParsedArgs, op: RunOp, out: (text: string) => void): Promise<number> {
  const { positionals: pos, flags } = parsed;
  const json = flags.json === true;
  const need = (n: number, usage: string): void => {
    if (pos.length !== n) throw new UsageError(`usage: netclone ${key} ${usage}`);
  };
  const show = (value: unknown, text: () => string): void => out(json ? `${JSON.stringify(value, null, 2)}\n` : text());
  switch (key) {
    case 'schedule add': {
      // --weekly DAY HH:MM: the parser takes DAY as the flag's value and leaves HH:MM as the one positional.
      let weekly: string | undefined;
      if (typeof flags.weekly === 'string') {
        weekly = flags.weekly.includes(' ') ? flags.weekly : `${flags.weekly} ${pos.shift() ?? ''}`.trim();
      }
      if (pos.length !== 0) throw new UsageError(`schedule add takes no arguments besides its flags (got "${pos.join(' ')}")`);
      if (typeof flags.capture !== 'string') throw new UsageError('usage: netclone schedule add --host MAC | --group NAME --capture IMAGE (--daily HH:MM | --weekly DAY HH:MM | --cron "m h dom mon dow") [--wake] [--after poweroff|reboot]');
      const view = (await op('schedule.add', {
        host: flags.host, group: flags.group, capture: flags.capture, daily: flags.daily, weekly, cron: flags.cron,
        wake: flags.wake === true, after: flags.after, window: flags.window,
      }, 'schedule')) as ScheduleView;
      show(view, () => `schedule ${view.id}: capture ${view.targetLabel} into ${view.imageLabel}, ${view.description}${view.wake ? ', with Wake-on-LAN' : ''}, then ${view.after}; next run ${localTime(view.nextRunAt)}\n`);
      return 0;
    }
    case 'schedule list': {
      need(0, '[--json]');
      const list = (await op('schedule.list', {}, 'schedules')) as ScheduleView[];
      show(list, () => renderSchedules(list));
      return 0;
    }
    case 'schedule rm': {
      need(1, 'ID');
      const result = await op('schedule.rm', { id: pos[0] }, 'schedule');
      show(result, () => `schedule ${pos[0]} removed\n`);
      return 0;
    }
    case 'host group': {
      if (flags.none === true) need(1, 'MAC --none');
      else need(2, 'MAC NAME   (--none, or an empty NAME, takes it out of its group)');
      const host = (await op('host.group', { mac: pos[0], group: flags.none === true ? undefined : pos[1], none: flags.none === true }, 'host')) as HostRecord;
      show(host, () => (host.group ? `${host.mac} is in group "${host.group}"\n` : `${host.mac} is in no group\n`));
      return 0;
    }
    case 'host wake': {
      need(1, 'MAC');
      const report = (await op('host.wake', { mac: pos[0] }, 'wake')) as WakeReport;
      show(report, () => renderWake([report]));
      return report.sent ? 0 : 1;
    }
    case 'group list': {
      need(0, '[--json]');
      const groups = (await op('group.list', {}, 'groups')) as GroupSummary[];
      show(groups, () => (groups.length === 0 ? 'No groups. Put a host in one with "netclone host group MAC NAME".\n' : table([['GROUP', 'HOSTS'], ...groups.map((g) => [g.name, g.hosts.join(' ')])])));
      return 0;
    }
    case 'group wake': {
      need(1, 'NAME');
      const reports = (await op('group.wake', { group: pos[0] }, 'wake')) as WakeReport[];
      show(reports, () => renderWake(reports));
      return reports.every((r) => r.sent) ? 0 : 1;
    }
    case 'group capture':
    case 'group deploy': {
      need(1, key === 'group capture' ? 'NAME --image NAME' : 'NAME [--image NAME]');
      const results = (await op('group.task', { kind: key === 'group capture' ? 'capture' : 'deploy', group: pos[0], image: flags.image, after: flags.after, wake: flags.wake === true }, 'group')) as GroupTaskResult[];
      show(results, () => renderGroupTasks(results));
      return results.every((r) => r.ok) ? 0 : 1;
    }
  }
  throw new UsageError(`unknown command "netclone ${key}"`);
}
