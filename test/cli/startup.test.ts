/**
 * A command run while `netclone serve` is still starting (it holds the data directory's lock
 * but its control socket does not answer yet) waits for the server instead of failing with
 * "in use by process N", and gives up after 10 s with a message that says where to look.
 * The start is frozen with SIGSTOP right after the server took the lock, so the window the
 * technician hit by chance is open for as long as the test needs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cli, spawnServer, startCli, type ServerProcess } from './processes.js';
import { waitFor } from '../lib/wait.js';

let dir: string;
let data: string;
let server: ServerProcess | null = null;

/** Starts a server and freezes it after it took the lock and before its control socket exists. */
async function frozenStartingServer(): Promise<ServerProcess> {
  const lock = path.join(data, 'state', 'netclone.lock');
  const socket = path.join(data, 'state', 'control.sock');
  for (let attempt = 0; attempt < 10; attempt++) {
    const s = spawnServer(data, path.join(dir, 'boot'));
    const pid = s.proc.pid as number;
    await waitFor(`server ${pid} to take the lock`, async () => {
      if ((await readFile(lock, 'utf8').catch(() => '')).includes(`"pid":${pid}`)) return true;
      if (s.proc.exitCode !== null) throw new Error(`server exited: ${s.log()}`);
      return false;
    }, { everyMs: 1, context: () => s.log() });
    s.proc.kill('SIGSTOP');
    if (!existsSync(socket)) return s;
    await s.stop(); // it got as far as its socket before we froze it: try again
  }
  throw new Error('could not catch the server between taking its lock and opening its control socket');
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-startup-'));
  data = path.join(dir, 'data');
  if (!existsSync(path.resolve('dist/cli/main.js'))) throw new Error('run npm run build first (npm test does)');
  await writeFile(path.join(dir, 'disk.raw'), Buffer.alloc(2 * 1024 * 1024, 7));
  const imp = await cli(data, ['image', 'import', 'office', path.join(dir, 'disk.raw')]);
  expect(imp.code, imp.stderr).toBe(0);
  server = await frozenStartingServer();
});
afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('a command while the server starts', () => {
  it('gives up after 10 s, naming the control socket and the server log, when the server never answers', async () => {
    const r = await cli(data, ['image', 'list']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`a netclone server (process ${server?.proc.pid}) holds ${data}, but its control socket ${path.join(data, 'state', 'control.sock')} did not answer within 10 s`);
    expect(r.stderr).toContain("see the server's log");
  });

  it('waits for the control socket and then acts through the server (image url needs the server)', async () => {
    const run = startCli(data, ['image', 'url', 'office']);
    // Before the fix the command failed at once with "in use by process N" instead.
    await waitFor('the command to say it waits for the server', () => run.stderr().includes('is starting; waiting for its control socket') || run.exited(), { everyMs: 10 });
    expect(run.exited(), run.stderr()).toBe(false);
    server?.proc.kill('SIGCONT');
    const r = await run.result;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/d-[A-Za-z0-9_-]+\n$/);
    await server?.up();
  });
});
