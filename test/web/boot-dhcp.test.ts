/**
 * Defect 8 through the real appliance: `netclone serve` inside a network namespace this file
 * creates (and deletes), a PC and a stranger on the same bridge. In full mode the PC leases its
 * address with udhcpc as a PXE client; in proxy mode it sends the PXE REQUEST for an office DHCP
 * server's offer. Only the address the appliance's DHCP service tied to the PC's MAC gets the task
 * token; the token then works from there only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forgetDatabase, openDatabase } from '../../src/domain/database.js';
import { EventLog } from '../../src/domain/events.js';
import { TaskService } from '../../src/domain/tasks.js';
import { nullLogger } from '../../src/lib/log.js';
import { createTestNet, resetClient, type TestNet } from '../pxe/dhcp/netns.js';
import { macBytes, opt, rawPacket } from '../pxe/dhcp/packets.js';
import { runIn, runSender, waitFor } from '../pxe/dhcp/procs.js';
import { lintIpxe } from '../lib/ipxe-lint.js';

const STRANGER_IP = '10.99.7.50';
const PORT = 8080;

let net: TestNet;
let root: string;

interface Serve {
  readonly output: () => string;
  stop(): Promise<void>;
}

async function curl(ns: string, url: string, token?: string): Promise<{ status: number; body: string }> {
  const args = ['-s', '-o', '-', '-w', '\n%{http_code}', ...(token ? ['-H', `Authorization: Bearer ${token}`] : []), url];
  const r = await runIn(ns, 'curl', args);
  if (r.code !== 0) throw new Error(`curl ${url} in ${ns} failed (${r.code}): ${r.stderr}`);
  const cut = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(cut + 1)), body: r.stdout.slice(0, cut) };
}

/** `netclone serve` in the server namespace, on a fresh data directory where a capture already waits for `mac`. */
async function startServe(mode: 'full' | 'proxy', mac: string): Promise<Serve> {
  const dir = await mkdtemp(join(root, `${mode}-`));
  // Queued before the server starts, as by the CLI on an idle appliance.
  const db = await openDatabase(dir);
  await new TaskService(db, new EventLog(db, nullLogger())).create({ kind: 'capture', mac, image: 'desk' });
  forgetDatabase(dir);
  const args = ['serve', '--data', dir, '--dhcp', mode, '--server-ip', net.serverIp, '--interface', net.bridge,
    '--http-port', String(PORT), '--tftp-port', '0', '--nbd-port', '0', '--boot-dir', join(dir, 'boot'),
    ...(mode === 'full' ? ['--dhcp-range', `${net.prefix}.100-${net.prefix}.120`] : [])];
  const proc: ChildProcess = spawn('ip', ['netns', 'exec', net.serverNs, process.execPath, '--import', 'tsx', '--input-type=module', '-e',
    "const { run } = await import('./src/cli/main.ts'); await run(process.argv.slice(1));", ...args], {
    cwd: process.cwd(), stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NETCLONE_CONFIG: '' },
  });
  let output = '';
  proc.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  await waitFor('netclone serve to start', () => (output.includes('netclone is up') || proc.exitCode !== null ? true : undefined), { timeoutMs: 60_000 }).catch((e: unknown) => {
    throw new Error(`${(e as Error).message}; its output so far:\n${output}`);
  });
  if (!output.includes('netclone is up')) throw new Error(`netclone serve did not start:\n${output}`);
  return {
    output: () => output,
    async stop() {
      if (proc.pid && proc.exitCode === null) process.kill(proc.pid, 'SIGTERM');
      await exited;
    },
  };
}

/** The stranger's view and the PC's view of the PC's boot script and client API, once DHCP tied the PC's MAC to `pcIp`. */
async function checkTokenGoesToPcOnly(serve: Serve, pcIp: RegExp): Promise<void> {
  const [pc, stranger] = net.clients;
  const url = `http://${net.serverIp}:${PORT}/boot/ipxe?mac=${pc.mac}&platform=efi&arch=x86_64&chip=undionly`;
  const refused = await curl(stranger.ns, url);
  expect(refused.status).toBe(200);
  expect(refused.body).not.toContain('netclone.token=');
  expect(lintIpxe(refused.body)).toEqual([]);
  expect(serve.output()).toContain(`but the request came from ${STRANGER_IP}`);

  const own = await curl(pc.ns, url);
  const token = /netclone\.token=([A-Za-z0-9_-]+)/.exec(own.body)?.[1];
  expect(token, own.body).toBeDefined();

  const api = `http://${net.serverIp}:${PORT}/api/client/v1/task?mac=${pc.mac}`;
  expect((await curl(stranger.ns, api, token)).status).toBe(403);
  expect(serve.output()).toMatch(new RegExp(`was issued to ${pcIp.source}, not to ${STRANGER_IP.replace(/\./g, '\\.')}`));
  const fromPc = await curl(pc.ns, api, token);
  expect(fromPc.status).toBe(200);
  expect(JSON.parse(fromPc.body)).toMatchObject({ kind: 'capture', image: 'desk' });
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'nc-bootdhcp-'));
  net = await createTestNet('bootsec', 2);
  // The stranger sits on the same bridge with an address of its own.
  await runIn(net.clients[1].ns, 'ip', ['addr', 'add', `${STRANGER_IP}/24`, 'dev', net.clients[1].ifname]);
}, 60_000);

afterAll(async () => {
  await net?.cleanup();
  await rm(root, { recursive: true, force: true });
});

describe('the appliance hands a task token only to the address its DHCP tied to the MAC', () => {
  it('full mode: the address it leased to the PC (udhcpc as a PXE client) gets the token, a stranger does not', async () => {
    const pc = net.clients[0];
    const serve = await startServe('full', pc.mac);
    try {
      const script = join(root, 'udhcpc.sh');
      await writeFile(script, '#!/bin/sh\ncase "$1" in bound|renew) ip addr add "$ip/24" dev "$interface" ;; esac\n');
      await chmod(script, 0o755);
      const lease = await runIn(pc.ns, 'udhcpc', ['-i', pc.ifname, '-n', '-q', '-f', '-t', '5', '-T', '1', '-V', 'PXEClient:Arch:00000:UNDI:002001', '-s', script]);
      if (lease.code !== 0) throw new Error(`udhcpc in the PC's namespace failed:\n${lease.stderr}\n${serve.output()}`);
      await checkTokenGoesToPcOnly(serve, /10\.99\.7\.1\d\d/);
    } finally {
      await serve.stop();
      await resetClient(net.clients[0]);
    }
  });

  it('proxy mode: the address the PC asks the office DHCP server for, seen in its PXE REQUEST, gets the token', async () => {
    const pc = net.clients[0];
    const serve = await startServe('proxy', pc.mac);
    try {
      // The PC's iPXE takes 10.99.7.130 from the office server (10.99.7.254, not running here: only the
      // broadcast REQUEST matters to netclone, which stays silent and notes the address).
      const request = rawPacket({
        xid: 0x5ec0_0001, mac: pc.mac, flags: 0x8000,
        options: [
          ...opt(53, [3]), ...opt(50, [10, 99, 7, 130]), ...opt(54, [10, 99, 7, 254]),
          ...opt(93, [0x00, 0x07]), ...opt(60, 'PXEClient:Arch:00007:UNDI:003016'), ...opt(77, 'iPXE'),
          ...opt(61, [0x01, ...macBytes(pc.mac)]), 255,
        ],
      });
      const sent = await runSender(pc.ns, { bindAddress: '0.0.0.0', bindPort: 68, target: { address: '255.255.255.255', port: 67 }, packets: [request], waitForXids: [], maxWaitMs: 200 });
      expect(sent.replies).toEqual([]);
      await waitFor('netclone to note the PXE REQUEST', () => (serve.output().includes('"mac":"' + pc.mac + '"') ? true : undefined), { timeoutMs: 10_000 });
      await runIn(pc.ns, 'ip', ['addr', 'add', '10.99.7.130/24', 'dev', pc.ifname]);
      await checkTokenGoesToPcOnly(serve, /10\.99\.7\.130/);
    } finally {
      await serve.stop();
      await resetClient(net.clients[0]);
    }
  });
});
