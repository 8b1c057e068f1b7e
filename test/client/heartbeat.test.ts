/**
 * The imaging client's heartbeat (boot/client/lib/api.sh) under busybox ash, against a loopback HTTP
 * server that records what arrives: the server fails a task whose client goes silent, so the client
 * must keep posting while nbdcopy and the read-back run, and stop when told.
 */
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { libDir } from './helpers.js';
import { waitFor, type WaitOptions } from '../lib/wait.js';

interface Received {
  readonly url: string;
  readonly auth: string;
  readonly body: string;
}

const tmp = mkdtempSync(join(tmpdir(), 'ncclient-hb-'));
const received: Received[] = [];
const waiting: WaitOptions = { timeoutMs: 20_000, context: () => `received: ${JSON.stringify(received)}` };
let server: Server;
let port = 0;

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    req.on('data', (c: Buffer) => (text += c.toString()));
    req.on('end', () => resolve(text));
  });
}

beforeAll(async () => {
  server = createServer((req, res) => {
    void readBody(req).then((body) => {
      received.push({ url: req.url ?? '', auth: req.headers.authorization ?? '', body });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as { port: number }).port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(tmp, { recursive: true, force: true });
});

describe('client heartbeat', () => {
  it('posts its phase with the task token until stopped, switching phase when told', async () => {
    const go = join(tmp, 'go-verify');
    const stop = join(tmp, 'go-stop');
    const stopped = join(tmp, 'stopped');
    const script = [
      ...['log', 'json', 'api'].map((f) => `. ${join(libDir, f)}.sh`),
      'heartbeat_start transferring',
      `while [ ! -e ${go} ]; do sleep 0.1; done`,
      'heartbeat_phase verifying',
      `while [ ! -e ${stop} ]; do sleep 0.1; done`,
      'heartbeat_stop',
      `: >${stopped}`,
      // The shell outlives the stop by a few heartbeat periods: nothing may arrive meanwhile.
      'sleep 3',
    ].join('\n');
    const child = spawn('busybox', ['sh', '-c', script], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NC_SERVER: `127.0.0.1:${port}`, NC_TOKEN: 'tok_0123456789abcdef', NC_HEARTBEAT: '1', NC_PHASE_FILE: join(tmp, 'phase') },
      stdio: 'ignore',
    });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const phases = (): string[] => received.map((r) => (JSON.parse(r.body) as { phase: string }).phase);

    await waitFor('three transferring heartbeats', () => phases().filter((p) => p === 'transferring').length >= 3, waiting);
    writeFileSync(go, '');
    await waitFor('two verifying heartbeats', () => phases().filter((p) => p === 'verifying').length >= 2, waiting);
    writeFileSync(stop, '');
    await waitFor('the shell to stop its heartbeat', () => existsSync(stopped), waiting);
    const atStop = received.length;
    expect(await exited).toBe(0);

    // A request already on the wire when the stop came may still land; a live heartbeat would have
    // sent three more during the shell's last 3 s.
    expect(received.length - atStop).toBeLessThanOrEqual(1);
    expect(received.every((r) => r.url === '/api/client/v1/progress' && r.auth === 'Bearer tok_0123456789abcdef')).toBe(true);
    const seen = phases();
    // Once switched, every later heartbeat carries the new phase.
    expect(seen.slice(seen.indexOf('verifying')).every((p) => p === 'verifying')).toBe(true);
  });
});
