/**
 * The `netclone` command. Every command takes --data DIR and --config FILE. While a
 * server runs on the data directory, commands act through its control socket; when
 * none runs, they open the directory themselves under its lock.
 */
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { parseArgs, UsageError, type FlagSpecs, type ParsedArgs } from './args.js';
import { CONFIG_KEYS, ConfigError, parseConfigText, resolveConfig, type Config, type ConfigOverrides } from '../domain/config.js';
import { createLogger, type Logger } from '../lib/log.js';
import { ControlClient } from './control-client.js';
import { controlSocketPath, ControlError, type ProgressUpdate } from '../serve/control-protocol.js';
import { runCommand, type Args } from '../domain/command-table.js';
import { CommandError, type Actor } from '../domain/commands.js';
import { openCore } from '../domain/data-dir.js';
import { LockError, SERVER_PURPOSE } from '../domain/lock.js';
import { ProgressBar } from './progress.js';
import { render } from './render.js';
import { readPasswordTwice } from './password.js';
import { FileSink, blockDeviceSize } from './file-sink.js';
import { SCHEDULE_COMMANDS, SCHEDULE_USAGE, runScheduleCli } from './schedule-cli.js';
import { renderPrune, renderRetention } from './render-retention.js';
import type { PruneResult } from '../domain/retention.js';
import type { RetentionPolicy } from '../imaging/retention.js';

const COMMON: FlagSpecs = {
  data: { value: true, description: 'data directory (database, images, lock)' },
  config: { value: true, description: 'config file (key = value lines)' },
  help: { value: false, description: 'show help' },
};

const KEEP_FLAGS: FlagSpecs = {
  'keep-last': { value: true, description: 'keep the N newest versions' },
  'keep-hourly': { value: true, description: 'keep the newest version of each of the last N hours that have one' },
  'keep-daily': { value: true, description: 'keep the newest version of each of the last N days that have one' },
  'keep-weekly': { value: true, description: 'keep the newest version of each of the last N ISO weeks that have one' },
  'keep-monthly': { value: true, description: 'keep the newest version of each of the last N months that have one' },
};

const SERVE_FLAGS: FlagSpecs = {
  ...COMMON,
  ...Object.fromEntries(CONFIG_KEYS.filter((k) => k !== 'data').map((k) => [k, { value: true, description: `config option ${k}` }])),
};

/**
 * Every command but `serve` and `help`, with its flags. Dispatch and the test that checks every
 * command named in a message (test/cli/commands-named.test.ts) both read this table.
 */
export const COMMANDS: Readonly<Record<string, FlagSpecs>> = {
  'image import': { ...COMMON, size: { value: true, description: 'bytes to read from stdin' } },
  'image export': COMMON,
  'image list': { ...COMMON, json: { value: false, description: 'JSON output' } },
  'image show': { ...COMMON, json: { value: false, description: 'JSON output' } },
  'image verify': { ...COMMON, json: { value: false, description: 'JSON output' } },
  'image rm': COMMON,
  'image gc': { ...COMMON, json: { value: false, description: 'JSON output' } },
  'image prune': { ...COMMON, ...KEEP_FLAGS, 'dry-run': { value: false, description: 'show what would go, remove nothing' }, json: { value: false, description: 'JSON output' } },
  'image retention': { ...COMMON, ...KEEP_FLAGS, clear: { value: false, description: 'remove the policy (keep-versions applies)' }, json: { value: false, description: 'JSON output' } },
  'image protect': { ...COMMON, json: { value: false, description: 'JSON output' } },
  'image unprotect': { ...COMMON, json: { value: false, description: 'JSON output' } },
  'image note': { ...COMMON, json: { value: false, description: 'JSON output' } },
  'image url': { ...COMMON, write: { value: false, description: 'writable capture export' }, size: { value: true, description: 'disk size' }, ttl: { value: true, description: 'lifetime' }, json: { value: false, description: 'JSON output' } },
  'host add': { ...COMMON, name: { value: true, description: 'host name' }, rename: { value: false, description: 'rename a registered host' }, json: { value: false, description: 'JSON output' } },
  'host list': { ...COMMON, json: { value: false, description: 'JSON output' } },
  'host rm': COMMON,
  'task capture': { ...COMMON, image: { value: true, description: 'image name' }, 'disk-serial': { value: true, description: 'disk serial' }, after: { value: true, description: 'reboot|poweroff' }, transport: { value: true, description: 'chunks|nbd' }, json: { value: false, description: 'JSON output' } },
  'task deploy': { ...COMMON, image: { value: true, description: 'image name' }, 'disk-serial': { value: true, description: 'disk serial' }, after: { value: true, description: 'reboot|poweroff' }, transport: { value: true, description: 'chunks|nbd' }, 'grow-partition': { value: true, description: 'partition number that grows or shrinks (default: the largest)' }, version: { value: true, description: 'image version to restore (default: the newest)' }, force: { value: false, description: 'deploy although the image came from another PC model' }, json: { value: false, description: 'JSON output' } },
  'task list': { ...COMMON, all: { value: false, description: 'include ended tasks' }, json: { value: false, description: 'JSON output' } },
  'task show': { ...COMMON, json: { value: false, description: 'JSON output' } },
  'task cancel': { ...COMMON, json: { value: false, description: 'JSON output' } },
  'admin passwd': COMMON,
  'admin token create': { ...COMMON, name: { value: true, description: 'token name' } },
  ...SCHEDULE_COMMANDS,
};

/** Every command's words, `serve` and `help` included. */
export function commandNames(): string[] {
  return ['serve', 'help', ...Object.keys(COMMANDS)];
}

const USAGE = `netclone — network disk imaging

  netclone serve [--config FILE] [--data DIR] [--listen ADDR] [--http-port N] [--nbd-port N]
                 [--tftp-port N] [--dhcp off|proxy|full] [--interface IF] [--server-ip ADDR]
                 [--dhcp-range START-END] [--dhcp-router ADDR] [--dhcp-dns ADDR,...] ...
  netclone image import NAME FILE|-  [--size BYTES]     raw disk image (or stdin) into the store
  netclone image export NAME FILE|-                     newest version as a raw (sparse) disk image
  netclone image list [--json]
  netclone image show NAME [--json]                    sizes, savings, versions, partitions
  netclone image verify NAME                           re-hash every chunk; exit 1 on damage
  netclone image rm NAME
  netclone image gc                                    remove chunks no image uses
  netclone image prune NAME [--keep-last N] [--keep-hourly N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--dry-run]
                                                       remove versions by policy (flags, else the stored one), then gc
  netclone image retention NAME [same keep flags] [--clear]   show or store the image's policy (applied after each capture)
  netclone image protect NAME VERSION | image unprotect NAME VERSION   a protected version is never pruned
  netclone image note NAME VERSION TEXT                 a note on a version (empty TEXT clears it)
  netclone image url NAME [--write --size BYTES] [--ttl DURATION]   nbd:// URL for qemu-img/nbdcopy
  netclone host add MAC [--name NAME [--rename]] | host list [--json] | host rm MAC
  netclone task capture MAC --image NAME [--disk-serial S] [--after reboot|poweroff] [--transport chunks|nbd]
  netclone task deploy MAC --image NAME [--version N] [--force] [--disk-serial S] [--after reboot|poweroff] [--transport chunks|nbd]
                 [--grow-partition N]   the partition that grows or shrinks to the disk (default: the largest)
  netclone task list [--all] [--json] | task show ID [--json] | task cancel ID
  netclone admin passwd                                set the admin password (asked twice)
  netclone admin token create [--name NAME]            API token for scripts
${SCHEDULE_USAGE}
Every command takes --data DIR and --config FILE (default /etc/netclone/config when it exists).
`;

function loadConfig(flags: ParsedArgs['flags'], extra: ConfigOverrides = {}): Config {
  const layers: ConfigOverrides[] = [];
  const file = typeof flags.config === 'string' ? flags.config : process.env.NETCLONE_CONFIG ?? (existsSync('/etc/netclone/config') ? '/etc/netclone/config' : null);
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
    }
    layers.push(parseConfigText(text, file));
  }
  const fromFlags: ConfigOverrides = { ...extra };
  if (typeof flags.data === 'string') fromFlags.data = flags.data;
  return resolveConfig(...layers, fromFlags);
}

/** How long a command waits for a starting server's control socket before it gives up. */
const SERVER_START_WAIT_MS = 10_000;
const SERVER_START_POLL_MS = 100;

/**
 * Run an operation through the server if one runs, otherwise on the directory under its lock.
 * A server that holds the lock but has no control socket yet is starting: wait for it rather
 * than fail, since it opens the socket once its services listen.
 */
async function withAppliance<T>(
  config: Config,
  logger: Logger,
  purpose: string,
  remote: (client: ControlClient) => Promise<T>,
  local: (core: Awaited<ReturnType<typeof openCore>>) => Promise<T>,
): Promise<T> {
  const client = new ControlClient(controlSocketPath(config.dataDir));
  const deadline = Date.now() + SERVER_START_WAIT_MS;
  let told = false;
  let core;
  for (;;) {
    if (await client.reachable()) return remote(client);
    try {
      core = await openCore(config, logger, purpose);
      break;
    } catch (err) {
      if (!(err instanceof LockError)) throw err;
      const server = err.owner?.purpose === SERVER_PURPOSE;
      if (!server) throw err;
      if (Date.now() >= deadline) {
        throw new Error(
          `a netclone server (process ${err.owner?.pid}) holds ${config.dataDir}, but its control socket ${client.socketPath} did not answer within ${SERVER_START_WAIT_MS / 1000} s; see the server's log (journalctl -u netclone) for what it is stuck on`,
          { cause: err },
        );
      }
      if (!told) {
        process.stderr.write(`netclone: the server (process ${err.owner?.pid}) is starting; waiting for its control socket…\n`);
        told = true;
      }
      await new Promise((resolve) => setTimeout(resolve, SERVER_START_POLL_MS));
    }
  }
  try {
    return await local(core);
  } finally {
    await core.close();
  }
}

/** Without a server the CLI opens the data directory itself: whoever may do that owns the appliance. */
const CLI_ACTOR: Actor = { kind: 'operator', name: 'root', via: 'cli' };

async function op(config: Config, logger: Logger, purpose: string, name: string, args: Args, label: string): Promise<unknown> {
  const bar = new ProgressBar(label);
  const progress = (p: ProgressUpdate): void => bar.update(p);
  try {
    return await withAppliance(
      config,
      logger,
      purpose,
      (client) => client.op(name, args, progress),
      (core) => runCommand(core.commands, CLI_ACTOR, name, args, progress),
    );
  } finally {
    bar.done();
  }
}

/** The keep-* flags given, as the command table reads them. */
function keepArgs(flags: Readonly<Record<string, string | true>>): Record<string, string | true> {
  return Object.fromEntries(Object.entries(flags).filter(([k]) => k.startsWith('keep-')));
}

async function sizeOfInput(path: string): Promise<{ stream: Readable; size: number | null }> {
  if (path === '-') {
    const fh = await open('/dev/stdin', 'r').catch(() => null);
    if (fh) {
      const st = await fh.stat();
      await fh.close();
      if (st.isFile()) return { stream: process.stdin, size: st.size };
    }
    return { stream: process.stdin, size: null };
  }
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    if (st.isBlockDevice()) {
      // A block device's stat size is 0: the kernel's size attribute in sysfs gives it (blockDeviceSize).
      return { stream: createReadStream(path, { highWaterMark: 1024 * 1024 }), size: await blockDeviceSize(path) };
    }
    if (!st.isFile()) throw new UsageError(`${path} is not a file or block device`);
    return { stream: createReadStream(path, { highWaterMark: 1024 * 1024 }), size: st.size };
  } finally {
    await fh.close();
  }
}

async function main(argv: string[]): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE);
    return cmd ? 0 : 2;
  }
  const logger = createLogger(process.env.NETCLONE_LOG_LEVEL ?? (cmd === 'serve' ? 'info' : 'warn'));

  if (cmd === 'serve') {
    const parsed = parseArgs(argv.slice(1), SERVE_FLAGS);
    if (parsed.positionals.length) throw new UsageError(`serve takes no arguments (got "${parsed.positionals.join(' ')}")`);
    const overrides: ConfigOverrides = {};
    for (const [k, v] of Object.entries(parsed.flags)) if (k !== 'config' && k !== 'data' && k !== 'help' && typeof v === 'string') (overrides as Record<string, string>)[k] = v;
    const config = loadConfig(parsed.flags, overrides);
    const serveLogger = createLogger(process.env.NETCLONE_LOG_LEVEL ?? config.logLevel);
    const { startAppliance, installRejectionSafetyNet } = await import('../serve/runtime.js');
    const safetyNet = installRejectionSafetyNet(serveLogger);
    const running = await startAppliance(config, serveLogger);
    safetyNet.attach(running.core.events);
    return new Promise<number>((resolve) => {
      const stop = (signal: string): void => {
        serveLogger.info({ signal }, 'stopping');
        running.stop().then(
          () => resolve(0),
          (err: unknown) => {
            serveLogger.error({ err }, `the server did not stop cleanly: ${err instanceof Error ? err.message : String(err)}`);
            resolve(1);
          },
        );
      };
      process.once('SIGINT', () => stop('SIGINT'));
      process.once('SIGTERM', () => stop('SIGTERM'));
    });
  }

  // Commands are two words, or three (`admin token create`): the longest that names a command wins.
  const three = `${cmd} ${sub ?? ''} ${rest[0] ?? ''}`;
  const key = Object.hasOwn(COMMANDS, three) ? three : `${cmd} ${sub ?? ''}`;
  const specs = Object.hasOwn(COMMANDS, key) ? COMMANDS[key] : undefined;
  if (!specs) throw new UsageError(`unknown command "netclone ${key.trim()}"; see "netclone help"`);
  const args = key === three ? rest.slice(1) : rest;
  const purpose = `netclone ${key.trim()}`;
  const { positionals: pos, flags } = parseArgs(args, specs);
  const config = loadConfig(flags);
  const json = flags.json === true;
  const need = (n: number, what: string): void => {
    if (pos.length !== n) throw new UsageError(`usage: netclone ${key} ${what}`);
  };
  const print = (value: unknown, kind: Parameters<typeof render>[0]): void => {
    process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : render(kind, value));
  };
  if (Object.hasOwn(SCHEDULE_COMMANDS, key)) {
    return runScheduleCli(key, { positionals: pos, flags }, (name, a, label) => op(config, logger, purpose, name, a, label), (text) => process.stdout.write(text));
  }

  switch (key) {
    case 'image import': {
      need(2, 'NAME FILE|-');
      const [name, file] = pos;
      const { stream, size: measured } = await sizeOfInput(file);
      const size = typeof flags.size === 'string' ? Number(flags.size) : measured;
      if (size !== null && (!Number.isSafeInteger(size) || size <= 0)) throw new UsageError('--size must be a positive number of bytes');
      const source = file === '-' ? 'import from stdin' : `import of ${file}`;
      const bar = new ProgressBar(`import ${name}`);
      const result = await withAppliance(
        config,
        logger,
        purpose,
        (client) => client.import(name, size, source, stream, (p) => bar.update(p)),
        (core) => core.commands.importImage(CLI_ACTOR, name, stream, size, source, (p) => bar.update(p)),
      );
      bar.done();
      print(result, 'version');
      return 0;
    }
    case 'image export': {
      need(2, 'NAME FILE|-');
      const [name, file] = pos;
      const sink = await FileSink.open(file);
      const bar = new ProgressBar(`export ${name}`);
      try {
        await withAppliance(
          config,
          logger,
          purpose,
          async (client) => {
            const { size, body } = await client.export(name);
            sink.begin(size);
            let done = 0;
            for await (const chunk of body as AsyncIterable<Buffer>) {
              await sink.write(chunk);
              done += chunk.length;
              bar.update({ done, total: size });
            }
            if (done !== size) throw new Error(`export ended after ${done} of ${size} bytes; see the server log`);
          },
          (core) => core.commands.exportImage(CLI_ACTOR, name, sink, (p) => bar.update(p)),
        );
        await sink.finish();
      } catch (err) {
        await sink.abort();
        throw err;
      } finally {
        bar.done();
      }
      return 0;
    }
    case 'image list':
      need(0, '');
      print(await op(config, logger, purpose, 'image.list', {}, 'list'), 'images');
      return 0;
    case 'image show':
      need(1, 'NAME');
      print(await op(config, logger, purpose, 'image.show', { name: pos[0] }, 'show'), 'image');
      return 0;
    case 'image verify': {
      need(1, 'NAME');
      const result = (await op(config, logger, purpose, 'image.verify', { name: pos[0] }, `verify ${pos[0]}`)) as { ok: boolean };
      print(result, 'verify');
      return result.ok ? 0 : 1;
    }
    case 'image rm':
      need(1, 'NAME');
      await op(config, logger, purpose, 'image.rm', { name: pos[0] }, 'rm');
      process.stdout.write(`image ${pos[0]} removed; "netclone image gc" frees its chunks\n`);
      return 0;
    case 'image gc':
      need(0, '');
      print(await op(config, logger, purpose, 'image.gc', {}, 'gc'), 'gc');
      return 0;
    case 'image prune': {
      need(1, 'NAME [--keep-last N] [--keep-hourly N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--dry-run]');
      const result = (await op(config, logger, purpose, 'image.prune', { name: pos[0], ...keepArgs(flags), 'dry-run': flags['dry-run'] === true }, 'prune')) as PruneResult;
      process.stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : renderPrune(result));
      return 0;
    }
    case 'image retention': {
      need(1, 'NAME [--keep-last N] [--keep-hourly N] [--keep-daily N] [--keep-weekly N] [--keep-monthly N] [--clear]');
      const result = (await op(config, logger, purpose, 'image.retention', { name: pos[0], ...keepArgs(flags), clear: flags.clear === true }, 'retention')) as { image: string; retention: RetentionPolicy | null };
      process.stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : renderRetention(result));
      return 0;
    }
    case 'image protect':
    case 'image unprotect': {
      need(2, 'NAME VERSION');
      const result = await op(config, logger, purpose, key === 'image protect' ? 'image.protect' : 'image.unprotect', { name: pos[0], version: pos[1] }, sub ?? 'protect');
      process.stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : `image ${pos[0]} version ${pos[1]} ${key === 'image protect' ? 'protected: no prune removes it' : 'unprotected: retention may remove it'}\n`);
      return 0;
    }
    case 'image note': {
      if (pos.length < 2) throw new UsageError(`usage: netclone ${key} NAME VERSION TEXT`);
      const result = await op(config, logger, purpose, 'image.note', { name: pos[0], version: pos[1], note: pos.slice(2).join(' ') }, 'note');
      process.stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : `image ${pos[0]} version ${pos[1]}: ${pos.length > 2 ? 'note saved' : 'note cleared'}\n`);
      return 0;
    }
    case 'image url': {
      need(1, 'NAME [--write --size BYTES] [--ttl DURATION]');
      const result = (await op(config, logger, purpose, 'image.url', { name: pos[0], write: flags.write === true, size: flags.size, ttl: flags.ttl }, 'url')) as { uri: string };
      process.stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : `${result.uri}\n`);
      return 0;
    }
    case 'host add':
      need(1, 'MAC [--name NAME [--rename]]');
      print(await op(config, logger, purpose, 'host.add', { mac: pos[0], name: flags.name, rename: flags.rename === true }, 'host'), 'host');
      return 0;
    case 'host list':
      need(0, '');
      print(await op(config, logger, purpose, 'host.list', {}, 'hosts'), 'hosts');
      return 0;
    case 'host rm':
      need(1, 'MAC');
      await op(config, logger, purpose, 'host.rm', { mac: pos[0] }, 'host');
      return 0;
    case 'task capture':
    case 'task deploy':
      need(1, 'MAC --image NAME');
      if (typeof flags.image !== 'string') throw new UsageError(`usage: netclone ${key} MAC --image NAME`);
      print(
        await op(config, logger, purpose, 'task.create', { kind: sub, mac: pos[0], image: flags.image, 'disk-serial': flags['disk-serial'], after: flags.after, transport: flags.transport, 'grow-partition': flags['grow-partition'], version: flags.version, force: flags.force }, 'task'),
        'task',
      );
      return 0;
    case 'task list':
      need(0, '');
      print(await op(config, logger, purpose, 'task.list', { all: flags.all === true }, 'tasks'), 'tasks');
      return 0;
    case 'task show':
      need(1, 'ID');
      print(await op(config, logger, purpose, 'task.show', { id: pos[0] }, 'task'), 'task');
      return 0;
    case 'task cancel':
      need(1, 'ID');
      print(await op(config, logger, purpose, 'task.cancel', { id: pos[0] }, 'task'), 'task');
      return 0;
    case 'admin passwd': {
      need(0, '');
      const password = await readPasswordTwice();
      await op(config, logger, purpose, 'admin.passwd', { password }, 'passwd');
      process.stdout.write('admin password set\n');
      return 0;
    }
    case 'admin token create': {
      need(0, '[--name NAME]');
      const created = (await op(config, logger, purpose, 'admin.token.create', { name: flags.name }, 'token')) as { token: string };
      process.stdout.write(`${created.token}\n`);
      return 0;
    }
  }
  throw new UsageError(`unknown command "netclone ${key.trim()}"`);
}

export async function run(argv: string[]): Promise<void> {
  try {
    process.exitCode = await main(argv);
  } catch (err) {
    if (err instanceof UsageError || err instanceof ConfigError) {
      process.stderr.write(`netclone: ${err.message}\n`);
      process.exitCode = 2;
    } else if (err instanceof ControlError || err instanceof CommandError) {
      process.stderr.write(`netclone: ${err.message}\n`);
      process.exitCode = 1;
    } else {
      const e = err as Error & { status?: number };
      process.stderr.write(`netclone: ${e.message}\n`);
      if (process.env.NETCLONE_DEBUG) process.stderr.write(`${e.stack}\n`);
      process.exitCode = 1;
    }
  }
}
