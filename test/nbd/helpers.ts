/** Shared helpers for NBD tests: a server over MemoryExports, child processes, a raw protocol client. */
import net from 'node:net';
import { nullLogger, type Logger } from '../../src/lib/log.js';
import type { ExportRefusal, ExportResolver, NbdExport } from '../../src/nbd/export.js';
import { NbdServer, type NbdServerOptions } from '../../src/nbd/server.js';
import {
  CMD,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  IHAVEOPT,
  INFO,
  OPT,
  REP,
  encodeRequestHeader,
} from '../../src/nbd/protocol.js';

export class MapResolver implements ExportResolver {
  readonly refusals: string[] = [];
  constructor(readonly exports: Map<string, NbdExport>) {}
  resolve(name: string): NbdExport | ExportRefusal {
    const e = this.exports.get(name);
    if (e !== undefined) return e;
    this.refusals.push(name);
    return { refused: 'unknown', reason: `no export named ${JSON.stringify(name)}` };
  }
}

export interface Started {
  server: NbdServer;
  port: number;
  resolver: MapResolver;
  url(name: string): string;
}

export async function startServer(
  exports: Record<string, NbdExport>,
  extra: Partial<NbdServerOptions> = {},
  logger: Logger = nullLogger(),
): Promise<Started> {
  const resolver = new MapResolver(new Map(Object.entries(exports)));
  const server = new NbdServer({ resolver, logger, ...extra });
  const { port } = await server.listen(0, '127.0.0.1');
  return { server, port, resolver, url: (name) => `nbd://127.0.0.1:${port}/${name}` };
}

export { run, type RunResult } from '../lib/run.js';


/** Promise-based reader over a raw socket, for speaking NBD by hand. */
export class RawClient {
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static connect(port: number, localAddress?: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host: '127.0.0.1', localAddress }, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Reads exactly n bytes; rejects if the server closes first. */
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closed) throw new Error(`connection closed with ${this.buf.length}/${n} bytes buffered`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Resolves when the server has closed the connection (any unread bytes are discarded). */
  async waitClosed(): Promise<void> {
    while (!this.closed) await new Promise<void>((r) => this.waiters.push(r));
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  destroy(): void {
    this.socket.destroy();
  }
}


export function optionBytes(option: number, data: Buffer = Buffer.alloc(0), length = data.length): Buffer {
  const h = Buffer.alloc(16);
  h.writeBigUInt64BE(IHAVEOPT, 0);
  h.writeUInt32BE(option, 8);
  h.writeUInt32BE(length >>> 0, 12);
  return Buffer.concat([h, data]);
}

export function goData(name: string, infos: number[] = [INFO.BLOCK_SIZE]): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + n.length + 2 * i));
  return b;
}

export function metaData(name: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const n = Buffer.from(name);
  const h = Buffer.alloc(4);
  h.writeUInt32BE(n.length);
  parts.push(h, n);
  const c = Buffer.alloc(4);
  c.writeUInt32BE(queries.length);
  parts.push(c);
  for (const q of queries) {
    const qb = Buffer.from(q);
    const l = Buffer.alloc(4);
    l.writeUInt32BE(qb.length);
    parts.push(l, qb);
  }
  return Buffer.concat(parts);
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export async function readOptionReply(c: RawClient): Promise<OptionReply> {
  const h = await c.read(20);
  const len = h.readUInt32BE(16);
  return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await c.read(len) };
}

/** Reads the greeting and sends client flags; returns the handshake flags. */
export async function rawGreet(c: RawClient): Promise<number> {
  const g = await c.read(18);
  const f = Buffer.alloc(4);
  f.writeUInt32BE(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
  c.write(f);
  return g.readUInt16BE(16);
}

/** Full handshake with NBD_OPT_GO; returns the client in transmission phase and the export size/flags. */
export async function rawGo(
  port: number,
  name: string,
  o: { structured?: boolean; meta?: boolean } = {},
): Promise<{ c: RawClient; size: bigint; flags: number }> {
  const c = await RawClient.connect(port);
  await rawGreet(c);
  if (o.structured) {
    c.write(optionBytes(OPT.STRUCTURED_REPLY));
    const r = await readOptionReply(c);
    if (r.type !== REP.ACK) throw new Error(`structured reply refused: ${r.type}`);
  }
  if (o.meta) {
    c.write(optionBytes(OPT.SET_META_CONTEXT, metaData(name, ['base:allocation'])));
    for (;;) {
      const r = await readOptionReply(c);
      if (r.type === REP.ACK) break;
      if (r.type !== REP.META_CONTEXT) throw new Error(`meta context refused: ${r.type}`);
    }
  }
  c.write(optionBytes(OPT.GO, goData(name)));
  let size = -1n;
  let flags = 0;
  for (;;) {
    const r = await readOptionReply(c);
    if (r.type === REP.INFO && r.data.readUInt16BE(0) === INFO.EXPORT) {
      size = r.data.readBigUInt64BE(2);
      flags = r.data.readUInt16BE(10);
    } else if (r.type === REP.ACK) {
      break;
    } else if (r.type !== REP.INFO) {
      throw new Error(`GO refused with reply type 0x${r.type.toString(16)}: ${r.data.toString()}`);
    }
  }
  return { c, size, flags };
}

export function request(type: number, cookie: bigint, offset: bigint, length: number, flags = 0): Buffer {
  return encodeRequestHeader({ type, cookie, offset, length, flags });
}

export async function readSimpleReply(c: RawClient): Promise<{ errno: number; cookie: bigint }> {
  const h = await c.read(16);
  return { errno: h.readUInt32BE(4), cookie: h.readBigUInt64BE(8) };
}

export interface Chunk {
  flags: number;
  type: number;
  cookie: bigint;
  payload: Buffer;
}

export async function readChunk(c: RawClient): Promise<Chunk> {
  const h = await c.read(20);
  return { flags: h.readUInt16BE(4), type: h.readUInt16BE(6), cookie: h.readBigUInt64BE(8), payload: await c.read(h.readUInt32BE(16)) };
}

/** A read through the raw client with simple replies; returns the data or throws with the errno. */
export async function rawSimpleRead(c: RawClient, offset: number, length: number, cookie = 7n): Promise<Buffer> {
  c.write(request(CMD.READ, cookie, BigInt(offset), length));
  const r = await readSimpleReply(c);
  if (r.errno !== 0) throw new Error(`read failed with errno ${r.errno}`);
  return c.read(length);
}
