/**
 * The commands by name, with loosely typed arguments: the form in which the CLI sends them,
 * either to a running server's control socket or, when none runs, straight to the data
 * directory under its lock. Both ends call runCommand, so a command behaves the same either way.
 */
import { parseDuration } from './config.js';
import { CommandError, type Actor, type Commands, type Progress } from './commands.js';
import { policyFromFlags } from './retention.js';
import { RetentionPolicyError, type RetentionPolicy } from '../imaging/retention.js';

export type Args = Readonly<Record<string, unknown>>;

function str(args: Args, key: string, what: string): string {
  const v = args[key];
  if (typeof v !== 'string' || v === '') throw new CommandError(400, `${what} is required`);
  return v;
}

function optStr(args: Args, key: string): string | undefined {
  const v = args[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new CommandError(400, `${key} must be text`);
  return v;
}

export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?$/i.exec(text.trim());
  if (!m) throw new CommandError(400, `"${text}" is not a size (e.g. 268435456, 256M, 64GiB)`);
  const unit = (m[2] ?? 'B').toUpperCase()[0];
  const mult = { B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[unit as 'B' | 'K' | 'M' | 'G' | 'T'];
  const n = Math.round(Number(m[1]) * mult);
  if (!Number.isSafeInteger(n) || n <= 0) throw new CommandError(400, `size "${text}" must be a positive number of bytes`);
  return n;
}

function transportArg(v: string | undefined): 'chunks' | 'nbd' | undefined {
  if (v === undefined) return undefined;
  if (v !== 'chunks' && v !== 'nbd') throw new CommandError(400, `--transport must be chunks or nbd, not "${v.slice(0, 40)}"`);
  return v;
}

/** A partition's number in its table: `--grow-partition 3` (text from the CLI, a number through JSON). */
function optPartition(args: Args, key: string): number | undefined {
  const v = args[key];
  if (v === undefined || v === null) return undefined;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new CommandError(400, `--${key} takes the partition's number in the partition table (1, 2, …), not "${String(v).slice(0, 40)}"`);
  return n;
}

/** A deploy's image version: `--version 3` (text from the CLI, a number through JSON). */
function optVersion(args: Args): number | undefined {
  const v = args.version;
  if (v === undefined || v === null) return undefined;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new CommandError(400, `--version takes a version number (1, 2, …; "netclone image show NAME" lists them), not "${String(v).slice(0, 40)}"`);
  return n;
}

/** The keep-* flags as a retention policy; undefined when none is given. */
function keepFlags(args: Args): RetentionPolicy | undefined {
  try {
    return policyFromFlags(args);
  } catch (e) {
    if (e instanceof RetentionPolicyError) throw new CommandError(400, e.message);
    throw e;
  }
}

/** A version number: text from the CLI, a number through JSON. */
function versionArg(args: Args): number {
  const v = args.version;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d{1,9}$/.test(v.trim()) ? Number(v.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new CommandError(400, `VERSION must be a version number (1, 2, …), not "${String(v ?? '').slice(0, 40)}"`);
  return n;
}

type Entry = (c: Commands, actor: Actor, args: Args, progress: Progress) => Promise<unknown>;

const TABLE: ReadonlyMap<string, Entry> = new Map<string, Entry>([
  ['image.list', (c, a) => c.listImages(a)],
  ['image.show', (c, a, args) => c.showImage(a, str(args, 'name', 'image name'))],
  ['image.verify', (c, a, args, progress) => c.verifyImage(a, str(args, 'name', 'image name'), { progress })],
  ['image.rm', (c, a, args) => c.removeImage(a, str(args, 'name', 'image name'))],
  ['image.gc', (c, a) => c.gc(a)],
  // ---- retention ----
  ['image.prune', (c, a, args) => c.pruneImage(a, str(args, 'name', 'image name'), { policy: keepFlags(args), dryRun: args['dry-run'] === true || args.dryRun === true })],
  ['image.retention', (c, a, args) => c.imageRetention(a, str(args, 'name', 'image name'), args.clear === true ? null : keepFlags(args))],
  ['image.protect', (c, a, args) => c.protectVersion(a, str(args, 'name', 'image name'), versionArg(args), true)],
  ['image.unprotect', (c, a, args) => c.protectVersion(a, str(args, 'name', 'image name'), versionArg(args), false)],
  ['image.note', (c, a, args) => c.noteVersion(a, str(args, 'name', 'image name'), versionArg(args), optStr(args, 'note') ?? '')],
  ['image.url', async (c, a, args) => {
    const write = args.write === true;
    const sizeText = optStr(args, 'size');
    if (write && !sizeText) throw new CommandError(400, '--write needs --size BYTES (the disk size of the new capture)');
    if (!write && sizeText) throw new CommandError(400, '--size only makes sense with --write');
    const ttl = optStr(args, 'ttl');
    return c.imageUrl(a, {
      image: str(args, 'name', 'image name'),
      write,
      size: sizeText ? parseSize(sizeText) : undefined,
      ttlSeconds: ttl ? parseDuration('ttl', ttl) : undefined,
      host: optStr(args, 'host'),
    });
  }],
  ['host.add', (c, a, args) => c.addHost(a, str(args, 'mac', 'MAC address'), optStr(args, 'name'), { rename: args.rename === true })],
  ['host.list', async (c, a) => c.listHosts(a)],
  ['host.rm', (c, a, args) => c.removeHost(a, str(args, 'mac', 'MAC address'))],
  ['task.create', async (c, a, args) => {
    const kind = args.kind;
    if (kind !== 'capture' && kind !== 'deploy') throw new CommandError(400, 'task kind must be capture or deploy');
    const after = optStr(args, 'after') ?? 'reboot';
    if (after !== 'reboot' && after !== 'poweroff') throw new CommandError(400, '--after must be reboot or poweroff');
    const { task } = await c.startTask(a, {
      kind,
      mac: str(args, 'mac', 'MAC address'),
      image: str(args, 'image', '--image NAME'),
      diskSerial: optStr(args, 'disk-serial') ?? null,
      after,
      transport: transportArg(optStr(args, 'transport')),
      mainPartition: optPartition(args, 'grow-partition'),
      version: optVersion(args),
      force: args.force === true,
    });
    return task;
  }],
  ['task.list', async (c, a, args) => c.listTasks(a, { active: args.all === true ? undefined : true })],
  ['task.show', async (c, a, args) => c.showTask(a, str(args, 'id', 'task id'))],
  ['task.cancel', (c, a, args) => c.cancelTask(a, str(args, 'id', 'task id'))],
  ['admin.passwd', (c, a, args) => c.setAdminPassword(a, str(args, 'password', 'password'))],
  ['admin.token.create', (c, a, args) => c.createApiToken(a, optStr(args, 'name') ?? 'cli')],
  // ---- schedules and groups ----
  ['host.group', (c, a, args) => c.setHostGroup(a, str(args, 'mac', 'MAC address'), args.none === true ? null : optStr(args, 'group') ?? null)],
  ['host.wake', (c, a, args) => c.wakeHost(a, str(args, 'mac', 'MAC address'))],
  ['group.list', async (c, a) => c.listGroups(a)],
  ['group.wake', (c, a, args) => c.wakeGroup(a, str(args, 'group', 'group name'))],
  ['group.task', (c, a, args) => {
    const kind = args.kind;
    if (kind !== 'capture' && kind !== 'deploy') throw new CommandError(400, 'a group task is a capture or a deploy');
    const after = optStr(args, 'after');
    if (after !== undefined && after !== 'reboot' && after !== 'poweroff') throw new CommandError(400, '--after must be reboot or poweroff');
    return c.groupTask(a, str(args, 'group', 'group name'), { kind, image: optStr(args, 'image'), after, wake: args.wake === true });
  }],
  ['schedule.add', (c, a, args) => {
    const after = optStr(args, 'after');
    if (after !== undefined && after !== 'reboot' && after !== 'poweroff') throw new CommandError(400, '--after must be poweroff or reboot');
    const weekly = optStr(args, 'weekly');
    let weeklySpec: { day: string; time: string } | undefined;
    if (weekly !== undefined) {
      // "--weekly mon 02:00" arrives as "mon 02:00" (the CLI joins the two words).
      const [day, time, extra] = weekly.trim().split(/\s+/);
      if (!day || !time || extra !== undefined) throw new CommandError(400, '--weekly takes a day and a time: --weekly mon 02:00');
      weeklySpec = { day, time };
    }
    const window = args.window;
    return c.addSchedule(a, {
      mac: optStr(args, 'host'),
      group: optStr(args, 'group'),
      capture: str(args, 'capture', '--capture IMAGE'),
      daily: optStr(args, 'daily'),
      weekly: weeklySpec,
      cron: optStr(args, 'cron'),
      wake: args.wake === true,
      after,
      windowMinutes: window === undefined || window === null ? undefined : Number(window),
    });
  }],
  ['schedule.list', async (c, a) => c.listSchedules(a)],
  ['schedule.rm', (c, a, args) => c.removeSchedule(a, str(args, 'id', 'schedule id'))],
]);

export async function runCommand(commands: Commands, actor: Actor, name: string, args: Args, progress: Progress): Promise<unknown> {
  const entry = TABLE.get(name);
  if (!entry) throw new CommandError(400, `unknown command ${name}`);
  return entry(commands, actor, args, progress);
}
