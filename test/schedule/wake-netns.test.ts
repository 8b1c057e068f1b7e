/**
 * The one schedule test on the real clock: a schedule due within the next minute, the built server
 * running in a network namespace, and a "PC" namespace on a veth pair whose UDP socket on port 9
 * must receive the magic packets for the schedule's MAC; then the capture task is there.
 * Everything it makes carries the `ncsch` prefix and is removed by PID and by name afterwards.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { magicPacket } from '../../src/lib/wake-on-lan.js';
import { start, stopProcess, type Running } from '../lib/run.js';
import { waitFor } from '../lib/wait.js';
import { BIN, cli } from '../cli/processes.js';

const exec = promisify(execFile);
const tag = `ncsch${process.pid % 100000}`;
const SRV = `${tag}-s`;
const PC = `${tag}-p`;
const VS = `${tag}s`;
const VP = `${tag}p`;
const NET = `10.213.${process.pid % 200}`;
const MAC = '52:54:00:13:77:01';
const ENV = { ...process.env, NETCLONE_CONFIG: '', TZ: 'UTC' };

const LISTENER = `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 9))
print('ready', flush=True)
while True:
    data, addr = s.recvfrom(2048)
    print(addr[0], data.hex(), flush=True)
`;

async function ip(...args: string[]): Promise<void> {
  await exec('ip', args);
}

let dir: string;
let listener: Running | null = null;
let server: Running | null = null;
const namespaces: string[] = [];

beforeAll(async () => {
  if (!existsSync(path.resolve('dist/cli/main.js'))) throw new Error('run npm run build first (npm test does)');
  dir = await mkdtemp(path.join(tmpdir(), 'nc-sched-'));
  for (const ns of [SRV, PC]) {
    await ip('netns', 'add', ns);
    namespaces.push(ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
  await ip('link', 'add', VS, 'netns', SRV, 'type', 'veth', 'peer', 'name', VP, 'netns', PC);
  await ip('-n', SRV, 'addr', 'add', `${NET}.1/24`, 'dev', VS);
  await ip('-n', PC, 'addr', 'add', `${NET}.2/24`, 'dev', VP);
  await ip('-n', SRV, 'link', 'set', VS, 'up');
  await ip('-n', PC, 'link', 'set', VP, 'up');
});

afterAll(async () => {
  if (server) await stopProcess(server.proc);
  if (listener) await stopProcess(listener.proc, 'SIGKILL');
  for (const ns of namespaces) await ip('netns', 'del', ns).catch(() => undefined);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('Wake-on-LAN picks the interface of the PC\'s network', () => {
  it('the subnet broadcast of the interface holding the PC\'s last address, else the configured interface, else the limited broadcast', async () => {
    const probe = `import('${path.resolve('dist/lib/wake-on-lan.js')}').then((m) => console.log(JSON.stringify([m.broadcastForHost('${NET}.77', null), m.broadcastForHost('192.0.2.9', null), m.broadcastForHost(null, '${VS}')])))`;
    const { stdout } = await exec('ip', ['netns', 'exec', SRV, process.execPath, '--input-type=module', '-e', probe]);
    expect(JSON.parse(stdout)).toEqual([
      { address: `${NET}.255`, interface: VS },
      { address: '255.255.255.255', interface: null },
      { address: `${NET}.255`, interface: VS },
    ]);
  });
});

describe('a schedule on the real clock', () => {
  it('at the due minute the server sends the magic packet for the MAC into the PC\'s network, three times, and queues the capture', async () => {
    listener = start('ip', ['netns', 'exec', PC, 'python3', '-u', '-c', LISTENER]);
    await waitFor('the UDP listener in the PC namespace', () => {
      if (listener?.exited()) throw new Error(`listener exited: ${listener.stderr()}`);
      return listener?.stdout().includes('ready');
    });

    // The first whole minute (UTC, the server's TZ here) at least 20 s away, so the schedule is added
    // before it comes due; the server may start before or after it (after, it catches up in the window).
    const due = new Date(Math.floor((Date.now() + 20_000) / 60_000) * 60_000 + 60_000);
    const cron = `${due.getUTCMinutes()} ${due.getUTCHours()} * * *`;
    await cli(dir, ['host', 'add', MAC, '--name', 'Night PC']);
    const added = await start(process.execPath, [BIN, 'schedule', 'add', '--host', MAC, '--capture', 'nightly', '--cron', cron, '--wake', '--json', '--data', dir], { env: ENV }).result;
    expect(added.code, added.stderr).toBe(0);
    const schedule = JSON.parse(added.stdout) as { id: string; nextRunAt: string };
    expect(schedule.nextRunAt).toBe(due.toISOString());

    server = start('ip', ['netns', 'exec', SRV, process.execPath, BIN, 'serve', '--data', dir, '--listen', '127.0.0.1', '--http-port', '0', '--nbd-port', '0',
      '--tftp-port', '0', '--dhcp', 'off', '--boot-dir', path.join(dir, 'boot'), '--interface', VS], { env: ENV });
    const log = (): string => `${server?.stdout() ?? ''}${server?.stderr() ?? ''}\n--- listener ---\n${listener?.stdout() ?? ''}${listener?.stderr() ?? ''}`;
    await waitFor('the server to come up', () => {
      if (server?.exited()) throw new Error(`server exited: ${log()}`);
      return log().includes('netclone is up');
    }, { timeoutMs: 60_000, context: log });

    const expected = magicPacket(MAC).toString('hex');
    const packets = await waitFor('three magic packets at the PC', () => {
      const lines = listener!.stdout().split('\n').filter((l) => l.startsWith(`${NET}.1 `));
      return lines.length >= 3 ? lines : false;
    }, { timeoutMs: 150_000, context: log });
    for (const line of packets) expect(line).toBe(`${NET}.1 ${expected}`);
    expect(Date.now()).toBeGreaterThanOrEqual(due.getTime());

    const tasks = await start(process.execPath, [BIN, 'task', 'list', '--json', '--data', dir], { env: ENV }).result;
    expect(tasks.code, tasks.stderr).toBe(0);
    const list = JSON.parse(tasks.stdout) as Array<{ kind: string; mac: string; image: string; after: string; state: string; log: Array<{ message: string }> }>;
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({ kind: 'capture', mac: MAC, image: 'nightly', after: 'poweroff', state: 'queued' });
    await waitFor('the wake note on the task', async () => {
      const t = await start(process.execPath, [BIN, 'task', 'list', '--json', '--data', dir], { env: ENV }).result;
      const [task] = JSON.parse(t.stdout) as Array<{ log: Array<{ message: string }> }>;
      return task.log.some((l) => l.message === `Wake-on-LAN: magic packet sent 3 times to ${NET}.255:9`);
    }, { context: log });

    const shown = await start(process.execPath, [BIN, 'schedule', 'list', '--json', '--data', dir], { env: ENV }).result;
    const [view] = JSON.parse(shown.stdout) as Array<{ id: string; lastRuns: Array<{ state: string; dueAt: string }> }>;
    expect(view.id).toBe(schedule.id);
    expect(view.lastRuns).toMatchObject([{ state: 'pending', dueAt: due.toISOString() }]);
  }, 300_000);
});
