/**
 * The control socket of a running server (protocol: control-protocol.ts). A unix
 * socket in the data directory with mode 0600: whoever may read the appliance's
 * files may drive it; nobody else can even connect.
 */
import http from 'node:http';
import { chmod, unlink } from 'node:fs/promises';
import { ControlError, type ControlLine } from './control-protocol.js';
import type { Core } from '../domain/data-dir.js';
import type { Actor } from '../domain/commands.js';
import { runCommand } from '../domain/command-table.js';
import type { Logger } from '../lib/log.js';

const MAX_OP_BODY = 1024 * 1024;

function statusOf(err: unknown): number {
  const s = err !== null && typeof err === 'object' ? (err as { status?: unknown }).status : undefined;
  return typeof s === 'number' && s >= 400 && s < 600 ? s : 500;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Whoever can open the socket owns the appliance's files: an operator. */
const SOCKET_ACTOR: Actor = { kind: 'operator', name: 'root', via: 'control socket' };

export async function startControlServer(core: Core, socketPath: string, logger: Logger): Promise<http.Server> {
  await unlink(socketPath).catch(() => undefined);
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://control');
    const lines = (): ((line: ControlLine) => void) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      return (line) => res.write(`${JSON.stringify(line)}\n`);
    };
    const fail = (send: (l: ControlLine) => void, err: unknown): void => {
      const status = statusOf(err);
      if (status === 500) logger.error({ err }, 'control request failed');
      send({ error: { message: messageOf(err), status } });
    };

    if (req.method === 'POST' && url.pathname === '/op') {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_OP_BODY) req.destroy();
        else chunks.push(c);
      });
      req.on('end', () => {
        const send = lines();
        let body: { op?: unknown; args?: unknown };
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body;
          if (typeof body.op !== 'string') throw new ControlError(400, 'op missing');
        } catch (err) {
          fail(send, err instanceof ControlError ? err : new ControlError(400, 'request body is not JSON'));
          res.end();
          return;
        }
        const args = body.args && typeof body.args === 'object' ? (body.args as Record<string, unknown>) : {};
        runCommand(core.commands, SOCKET_ACTOR, body.op as string, args, (p) => send({ progress: p }))
          .then((result) => send({ result }))
          .catch((err: unknown) => fail(send, err))
          .finally(() => res.end());
      });
      return;
    }
    if (req.method === 'POST' && url.pathname === '/import') {
      const send = lines();
      const name = url.searchParams.get('name') ?? '';
      const sizeText = url.searchParams.get('size');
      const size = sizeText === null ? null : Number(sizeText);
      core.commands.importImage(SOCKET_ACTOR, name, req, size !== null && Number.isSafeInteger(size) ? size : null, url.searchParams.get('source') ?? 'import', (p) => send({ progress: p }))
        .then((result) => send({ result }))
        .catch((err: unknown) => fail(send, err))
        .finally(() => res.end());
      return;
    }
    if (req.method === 'GET' && url.pathname === '/export') {
      const name = url.searchParams.get('name') ?? '';
      core.commands.exportImage(SOCKET_ACTOR, name, {
        begin: (size) => res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-netclone-size': String(size) }),
        write: (buf) =>
          new Promise<void>((resolve, reject) => {
            if (res.destroyed) {
              reject(new Error('the CLI went away'));
              return;
            }
            if (res.write(buf)) {
              resolve();
              return;
            }
            // A CLI that goes away while the socket is full never drains it: stop the export instead of waiting for ever.
            const onDrain = (): void => {
              res.off('close', onClose);
              resolve();
            };
            const onClose = (): void => {
              res.off('drain', onDrain);
              reject(new Error('the CLI went away'));
            };
            res.once('drain', onDrain);
            res.once('close', onClose);
          }),
      })
        .then(() => res.end())
        .catch((err: unknown) => {
          if (!res.headersSent) {
            res.writeHead(statusOf(err), { 'content-type': 'text/plain' });
            res.end(messageOf(err));
          } else {
            logger.warn({ image: name, err: messageOf(err) }, `export of ${name} stopped after it began: ${messageOf(err)}`);
            res.destroy();
          }
        });
      return;
    }
    if (url.pathname === '/ping') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('netclone\n');
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  await chmod(socketPath, 0o600);
  logger.info({ socket: socketPath }, 'control socket listening');
  return server;
}
