/**
 * The control socket when one side goes away: an export whose CLI was killed mid-stream stops
 * and lets go of the image version, instead of waiting for ever on a socket nobody drains; a
 * CLI whose server died mid-answer says so and exits, instead of hanging or exiting silently.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { cli, spawnServer, type ServerProcess } from './processes.js';
import { ControlClient } from '../../src/cli/control-client.js';
import { noise } from '../lib/prng.js';

const MiB = 1024 * 1024;
let dir: string;
let data: string;
let server: ServerProcess | null = null;


beforeAll(async () => {
  if (!existsSync(path.resolve('dist/cli/main.js'))) throw new Error('run npm run build first (npm test does)');
  dir = await mkdtemp(path.join(tmpdir(), 'nc-control-'));
  data = path.join(dir, 'data');
  await writeFile(path.join(dir, 'disk.raw'), noise(3, 24 * MiB));
  const imp = await cli(data, ['image', 'import', 'office', path.join(dir, 'disk.raw')]);
  expect(imp.code, imp.stderr).toBe(0);
  server = spawnServer(data, path.join(dir, 'boot'));
  await server.up();
});
afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('control socket', () => {
  it('stops an export whose CLI went away mid-stream, and the image can be removed afterwards', async () => {
    const socketPath = path.join(data, 'state', 'control.sock');
    await new Promise<void>((resolve, reject) => {
      const req = http.request({ socketPath, path: '/export?name=office', method: 'GET' }, (res) => {
        expect(res.statusCode).toBe(200);
        // Read one piece, then vanish without draining the rest, like a killed `netclone image export`.
        res.once('data', () => {
          res.pause();
          req.destroy();
          resolve();
        });
      });
      req.on('error', (err) => {
        if (!req.destroyed) reject(err);
      });
      req.end();
    });
    await expect.poll(() => server?.log() ?? '', { timeout: 30_000 }).toContain('export of office stopped after it began: the CLI went away');
    // The export let go of its version: removing the image and collecting its chunks works.
    const removed = await cli(data, ['image', 'rm', 'office']);
    expect(removed.code, removed.stderr).toBe(0);
    const gc = await cli(data, ['image', 'gc', '--json']);
    expect(gc.code, gc.stderr).toBe(0);
    expect((JSON.parse(gc.stdout) as { removedChunks: number }).removedChunks).toBe(24);
  });
});

describe('control client', () => {
  it('fails an import whose input breaks with a clear message, and nothing is imported', async () => {
    const client = new ControlClient(path.join(data, 'state', 'control.sock'));
    let sent = 0;
    // Two chunks, then a read error, as a failing disk or a broken pipe gives.
    const input = new Readable({
      read() {
        if (sent++ < 2) this.push(noise(9 + sent, MiB));
        else this.destroy(new Error('EIO: i/o error, read'));
      },
    });
    const outcome = await client.import('broken', 8 * MiB, 'test', input, () => undefined).then(
      () => 'resolved',
      (err: unknown) => (err as Error).message,
    );
    expect(outcome).toBe('reading the input failed: EIO: i/o error, read; nothing was imported');
    const list = await cli(data, ['image', 'list', '--json']);
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as Array<{ name: string }>).map((i) => i.name)).not.toContain('broken');
  });

  it('fails with a clear message when the server dies in the middle of an answer', async () => {
    const socketPath = path.join(dir, 'dying.sock');
    // A server that starts answering (one progress line) and then dies, as a killed netclone does.
    const dying = http.createServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write(`${JSON.stringify({ progress: { done: 1, total: 2 } })}\n`, () => res.socket?.destroy());
    });
    await new Promise<void>((resolve) => dying.listen(socketPath, resolve));
    try {
      const progress: unknown[] = [];
      const outcome = await new ControlClient(socketPath).op('image.verify', { name: 'office' }, (p) => progress.push(p)).then(
        () => 'resolved',
        (err: unknown) => (err as Error).message,
      );
      expect(progress).toEqual([{ done: 1, total: 2 }]);
      expect(outcome).toBe('the server closed the control connection without an answer (did it stop or crash?); see its log');
    } finally {
      dying.closeAllConnections();
      await new Promise<void>((resolve) => dying.close(() => resolve()));
    }
  });
});
