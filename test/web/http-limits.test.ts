/**
 * The HTTP server does not wait for ever on a client, and does not take unlimited connections:
 * raw sockets play a client that dribbles its body, one that never finishes its headers, and a
 * crowd that holds connections open.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { buildWebApp, type HttpLimits } from '../../src/web/app.js';
import { createApiToken } from '../../src/domain/users.js';
import { makeHarness, type Harness } from './helpers.js';
import { sleep, waitFor } from '../lib/wait.js';

const limits: HttpLimits = { requestTimeoutMs: 1000, headersTimeoutMs: 500, connectionTimeoutMs: 10_000, timeoutCheckMs: 100, maxConnections: 3 };
let h: Harness;
let app: FastifyInstance;
let port: number;
let token: string;
const logLines: string[] = [];

beforeAll(async () => {
  h = await makeHarness();
  const sink = new Writable({ write(chunk: Buffer, _enc, done) { logLines.push(chunk.toString()); done(); } });
  app = await buildWebApp({ ...h.ctx, logger: pino({ level: 'warn' }, sink) }, { announceSetup: false, httpLimits: limits });
  await app.listen({ port: 0, host: '127.0.0.1' });
  port = (app.server.address() as { port: number }).port;
  token = (await createApiToken(h.ctx.db, 'tests')).token;
});

afterAll(async () => {
  await app?.close();
  await h?.close();
});

interface Watched {
  readonly socket: Socket;
  readonly closed: Promise<void>;
  isClosed(): boolean;
  received(): string;
}

async function open(): Promise<Watched> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  let data = '';
  let closed = false;
  socket.on('data', (d: Buffer) => (data += d.toString('latin1')));
  socket.on('error', () => undefined);
  const done = new Promise<void>((resolve) => socket.once('close', () => {
    closed = true;
    resolve();
  }));
  return { socket, closed: done, isClosed: () => closed, received: () => data };
}


describe('HTTP limits', () => {
  it('answers 408 and closes a connection whose body arrives a byte at a time', async () => {
    const c = await open();
    const length = 400;
    // Authenticated, so the server waits for the body instead of refusing the request at once.
    c.socket.write(`POST /api/v1/hosts HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`);
    let sent = 0;
    // 40 s of dribbling if nobody stops it; the request timeout is 1 s.
    while (sent < length && !c.isClosed()) {
      c.socket.write('x');
      sent++;
      await sleep(100);
    }
    expect(sent).toBeLessThan(length);
    await c.closed;
    expect(c.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('answers 408 and closes a connection that never finishes its headers', async () => {
    const c = await open();
    c.socket.write('GET /api/v1/status HTTP/1.1\r\nHost: test\r\n');
    let waited = 0;
    while (!c.isClosed() && waited < 400) {
      await sleep(50);
      waited++;
    }
    expect(c.isClosed()).toBe(true);
    expect(c.received()).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('closes connections beyond the cap at once, says so in the log, and serves again when they are gone', async () => {
    const held = await Promise.all([open(), open(), open()]);
    for (const c of held) c.socket.write('GET /api/v1/status HTTP/1.1\r\nHost: test\r\n');
    const extra = await open();
    extra.socket.write('GET /api/v1/status HTTP/1.1\r\nHost: test\r\n\r\n');
    await extra.closed;
    expect(extra.received()).toBe('');
    expect(logLines.some((l) => l.includes('HTTP connections refused: 3 are open already'))).toBe(true);
    for (const c of held) c.socket.destroy();
    await Promise.all(held.map((c) => c.closed));
    // The server learns of the closes asynchronously; ask until it has.
    const status = await waitFor('the server to answer a new connection', async () => {
      const c = await open();
      c.socket.write('GET /api/v1/status HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n');
      await c.closed;
      const m = /^HTTP\/1\.1 (\d{3}) /.exec(c.received());
      return m ? Number(m[1]) : undefined;
    }, { timeoutMs: 10_000 });
    expect(status).toBe(401);
  });
});
