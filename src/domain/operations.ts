/**
 * Everything the CLI can ask of an appliance, implemented once. The CLI calls these
 * directly when no server runs (under the data directory's lock), and a running
 * server calls the very same functions for requests on its control socket.
 */
import type { Readable } from 'node:stream';
import { createReadStream } from 'node:fs';
import { mkdir, open, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { AppContextBase, NbdAccess } from './context.js';
import { OperationError, type ProgressUpdate } from '../serve/control-protocol.js';
import { parseDuration } from './config.js';
import { setAdminPassword, createApiToken } from './users.js';
import type { ImageStore } from '../imaging/image-store.js';

export interface Core extends Omit<AppContextBase, 'nbd' | 'services'> {
  readonly store: ImageStore;
  /** Present only inside a running server: NBD URLs need a live NBD listener. */
  readonly nbd: NbdAccess | null;
}

export type Args = Record<string, unknown>;
export type Progress = (p: ProgressUpdate) => void;

function str(args: Args, key: string, what: string): string {
  const v = args[key];
  if (typeof v !== 'string' || v === '') throw new OperationError(400, `${what} is required`);
  return v;
}

function optStr(args: Args, key: string): string | undefined {
  const v = args[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new OperationError(400, `${key} must be text`);
  return v;
}

export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?$/i.exec(text.trim());
  if (!m) throw new OperationError(400, `"${text}" is not a size (e.g. 268435456, 256M, 64GiB)`);
  const unit = (m[2] ?? 'B').toUpperCase()[0];
  const mult = { B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[unit as 'B' | 'K' | 'M' | 'G' | 'T'];
  const n = Math.round(Number(m[1]) * mult);
  if (!Number.isSafeInteger(n) || n <= 0) throw new OperationError(400, `size "${text}" must be a positive number of bytes`);
  return n;
}

type Op = (core: Core, args: Args, progress: Progress) => Promise<unknown>;

export const OPERATIONS: Record<string, Op> = {
  'image.list': async (core) => core.store.list(),
  'image.show': async (core, args) => core.store.show(str(args, 'name', 'image name')),
  'image.verify': async (core, args, progress) =>
    core.store.verify(str(args, 'name', 'image name'), { onProgress: (done: number, total: number) => progress({ done, total, label: 'verify' }) }),
  'image.rm': async (core, args) => {
    const name = str(args, 'name', 'image name');
    const busy = core.tasks.list({ active: true }).find((t) => t.image === name);
    if (busy) throw new OperationError(409, `image ${name} is used by ${busy.kind} task ${busy.id} (${busy.state}); cancel it first`);
    await core.store.remove(name);
    await core.events.record('info', `image ${name} removed`);
    return { removed: name };
  },
  'image.gc': async (core) => core.store.gc(),
  'image.url': async (core, args) => {
    if (!core.nbd) throw new OperationError(409, 'nbd:// URLs are issued by the running server; start it with "netclone serve"');
    const write = args.write === true;
    const sizeText = optStr(args, 'size');
    if (write && !sizeText) throw new OperationError(400, '--write needs --size BYTES (the disk size of the new capture)');
    if (!write && sizeText) throw new OperationError(400, '--size only makes sense with --write');
    const ttl = optStr(args, 'ttl');
    return core.nbd.createUrl({
      image: str(args, 'name', 'image name'),
      write,
      size: sizeText ? parseSize(sizeText) : undefined,
      ttlSeconds: ttl ? parseDuration('ttl', ttl) : core.config.urlTtlSeconds,
      host: optStr(args, 'host'),
    });
  },
  'host.add': async (core, args) => core.hosts.add(str(args, 'mac', 'MAC address'), optStr(args, 'name'), { rename: args.rename === true }),
  'host.list': async (core) => core.hosts.list(),
  'host.rm': async (core, args) => {
    await core.hosts.remove(str(args, 'mac', 'MAC address'));
    return { removed: args.mac };
  },
  'task.create': async (core, args) => {
    const kind = args.kind;
    if (kind !== 'capture' && kind !== 'deploy') throw new OperationError(400, 'task kind must be capture or deploy');
    const image = str(args, 'image', '--image NAME');
    const { isValidImageName } = await import('../imaging/names.js');
    if (!isValidImageName(image)) throw new OperationError(400, `"${image}" is not a valid image name (letters, digits, . _ -; up to 64)`);
    if (kind === 'deploy' && !(await core.store.list()).some((i) => i.name === image)) {
      throw new OperationError(404, `no image named ${image}; "netclone image list" shows them`);
    }
    const after = optStr(args, 'after') ?? 'reboot';
    if (after !== 'reboot' && after !== 'poweroff') throw new OperationError(400, '--after must be reboot or poweroff');
    const mac = str(args, 'mac', 'MAC address');
    if (!core.hosts.get(mac)) await core.hosts.add(mac);
    return core.tasks.create({ kind, mac, image, diskSerial: optStr(args, 'disk-serial') ?? null, after });
  },
  'task.list': async (core, args) => core.tasks.list({ active: args.all === true ? undefined : true }),
  'task.show': async (core, args) => core.tasks.require(str(args, 'id', 'task id')),
  'task.cancel': async (core, args) => core.tasks.cancel(str(args, 'id', 'task id')),
  'admin.passwd': async (core, args) => {
    await setAdminPassword(core.db, str(args, 'password', 'password'));
    await core.events.record('info', 'admin password changed');
    return { ok: true };
  },
  'admin.token.create': async (core, args) => {
    const created = await createApiToken(core.db, optStr(args, 'name') ?? 'cli');
    await core.events.record('info', `API token "${optStr(args, 'name') ?? 'cli'}" created`);
    return created;
  },
};

export async function runOperation(core: Core, op: string, args: Args, progress: Progress): Promise<unknown> {
  const fn = Object.prototype.hasOwnProperty.call(OPERATIONS, op) ? OPERATIONS[op] : undefined;
  if (!fn) throw new OperationError(400, `unknown operation ${op}`);
  return fn(core, args, progress);
}

/**
 * Import a raw disk from a stream (a file, stdin, or a control-socket request body).
 * A pipe has no size up front, and a capture needs one: such input is spooled to a
 * sparse temp file in the data directory first.
 */
export async function importImage(core: Core, name: string, input: Readable, size: number | null, source: string, progress: Progress): Promise<unknown> {
  if (size === null) {
    const dir = path.join(core.config.dataDir, 'state', 'tmp');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const spool = path.join(dir, `import-${process.pid}-${Date.now()}.raw`);
    try {
      let total = 0;
      const fh = await open(spool, 'w', 0o600);
      try {
        let pos = 0;
        for await (const chunk of input as AsyncIterable<Buffer>) {
          await fh.write(chunk, 0, chunk.length, pos);
          pos += chunk.length;
          total = pos;
          progress({ done: total, total: 0, label: `reading ${name}` });
        }
      } finally {
        await fh.close();
      }
      if (total === 0) throw new OperationError(400, 'the input was empty: nothing to import');
      return await importImage(core, name, createReadStream(spool, { highWaterMark: 1024 * 1024 }), total, source, progress);
    } finally {
      await unlink(spool).catch(() => undefined);
    }
  }
  const info = await core.store.importStream(name, input, size, {
    source,
    onProgress: (done: number, total: number) => progress({ done, total, label: `import ${name}` }),
  });
  await core.events.record('info', `image ${name} imported (${source})`);
  return info;
}

/** Where exported bytes go: holes are passed as lengths so a file sink can leave them sparse. */
export interface ExportSink {
  begin(size: number): void;
  write(data: Buffer): Promise<void>;
  hole?(length: number): Promise<void>;
}

const ZEROES = Buffer.alloc(1024 * 1024);

export async function exportImage(core: Core, name: string, sink: ExportSink, progress?: Progress): Promise<void> {
  const reader = await core.store.openVersion(name);
  try {
    sink.begin(reader.size);
    const step = Math.max(reader.chunkSize, 1024 * 1024);
    for (let offset = 0; offset < reader.size; offset += step) {
      const pieces = await reader.read(offset, Math.min(step, reader.size - offset));
      for (const p of pieces) {
        if (p.kind === 'data') await sink.write(p.data);
        else if (sink.hole) await sink.hole(p.length);
        else for (let left = p.length; left > 0; left -= ZEROES.length) await sink.write(ZEROES.subarray(0, Math.min(left, ZEROES.length)));
      }
      progress?.({ done: Math.min(offset + step, reader.size), total: reader.size, label: `export ${name}` });
    }
  } finally {
    await reader.close();
  }
}
