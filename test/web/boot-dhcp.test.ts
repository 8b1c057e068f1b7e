/**
 * Defect 8 through the real appliance: `netclone serve` in full DHCP mode inside a network
 * namespace this file creates (and deletes), a PC that leases its address with udhcpc as a PXE
 * client, and a stranger on the same bridge. Only the address the appliance's own DHCP service
 * leased to the PC's MAC gets the task token; the token then works from there only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forgetDatabase, openDatabase } from '../../src/appliance/database.js';
import { EventLog } from '../../src/appliance/events.js';
import { TaskService } from '../../src/appliance/tasks.js';
import { nullLogger } from '../../src/log.js';
import { createTestNet, type TestNet } from '../pxe/dhcp/netns.js';
import { runIn, waitFor } from '../pxe/dhcp/procs.js';
import { lintIpxe } from '../lib/ipxe-lint.js';

const STRANGER_IP = '10.99.7.50';
const PORT = 8080;

let net: TestNet;
let dir: string;
let serve: ChildProcess | undefined;
let output = '';

async function curl(ns: string, url: string, token?: string): Promise<{ status: number; body: string }> {
  const args = ['-s', '-o', '-', '-w', '\n%{http_code}', ...(token ? ['-H', `Authorization: Bearer ${token}`] : []), url];
  const r = await runIn(ns, 'curl', args);
  if (r.code !== 0) throw new Error(`curl ${url} in ${ns} failed (${r.code}): ${r.stderr}`);
  const cut = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(cut + 1)), body: r.stdout.slice(0, cut) };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'nc-bootdhcp-'));
  net = await createTestNet('bootsec', 2);
  // A capture waits for the PC (queued before the server starts, as by the CLI on an idle appliance).
  const db = await openDatabase(dir);
  await new TaskService(db, new EventLog(db, nullLogger())).create({ kind: 'capture', mac: net.clients[0].mac, image: 'desk' });
  forgetDatabase(dir);

  const args = ['serve', '--data', dir, '--dhcp', 'full', '--server-ip', net.serverIp, '--interface', net.bridge,
    '--dhcp-range', `${net.prefix}.100-${net.prefix}.120`, '--http-port', String(PORT), '--tftp-port', '0', '--nbd-port', '0',
    '--boot-dir', join(dir, 'boot')];
  serve = spawn('ip', ['netns', 'exec', net.serverNs, process.execPath, '--import', 'tsx', '--input-type=module', '-e',
    "const { run } = await import('./src/cli/main.ts'); await run(process.argv.slice(1));", ...args], {
    cwd: process.cwd(), stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NETCLONE_CONFIG: '' },
  });
  serve.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  serve.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  await waitFor('netclone serve to start', () => (output.includes('netclone is up') ? true : serve?.exitCode !== null ? true : undefined), 60_000);
  if (!output.includes('netclone is up')) throw new Error(`netclone serve did not start:\n${output}`);

  // The PC leases its address from the appliance as a PXE client (what its iPXE does before asking for the script).
  const script = join(dir, 'udhcpc.sh');
  await writeFile(script, '#!/bin/sh\ncase "$1" in bound|renew) ip addr add "$ip/24" dev "$interface" ;; esac\n');
  await chmod(script, 0o755);
  const pc = net.clients[0];
  const lease = await runIn(pc.ns, 'udhcpc', ['-i', pc.ifname, '-n', '-q', '-f', '-t', '5', '-T', '1', '-V', 'PXEClient:Arch:00000:UNDI:002001', '-s', script]);
  if (lease.code !== 0) throw new Error(`udhcpc in the PC's namespace failed:\n${lease.stderr}\n${output}`);
  // The stranger sits on the same bridge with an address of its own.
  await runIn(net.clients[1].ns, 'ip', ['addr', 'add', `${STRANGER_IP}/24`, 'dev', net.clients[1].ifname]);
}, 120_000);

afterAll(async () => {
  if (serve?.pid && serve.exitCode === null) {
    const exited = new Promise((resolve) => serve?.once('exit', resolve));
    process.kill(serve.pid, 'SIGTERM');
    await exited;
  }
  await net?.cleanup();
  await rm(dir, { recursive: true, force: true });
});

describe('the appliance hands a task token only to the address its DHCP leased to the MAC', () => {
  it('refuses the token to a stranger, gives it to the PC, and the token then works from the PC only', async () => {
    const mac = net.clients[0].mac;
    const url = `http://${net.serverIp}:${PORT}/boot/ipxe?mac=${mac}&platform=efi&arch=x86_64&chip=undionly`;
    const stranger = await curl(net.clients[1].ns, url);
    expect(stranger.status).toBe(200);
    expect(stranger.body).not.toContain('netclone.token=');
    expect(lintIpxe(stranger.body)).toEqual([]);
    expect(output).toContain(`but the request came from ${STRANGER_IP}`);

    const own = await curl(net.clients[0].ns, url);
    const token = /netclone\.token=([A-Za-z0-9_-]+)/.exec(own.body)?.[1];
    expect(token, own.body).toBeDefined();

    const api = `http://${net.serverIp}:${PORT}/api/client/v1/task?mac=${mac}`;
    expect((await curl(net.clients[1].ns, api, token)).status).toBe(403);
    expect(output).toMatch(/was issued to 10\.99\.7\.1\d\d, not to 10\.99\.7\.50/);
    const fromPc = await curl(net.clients[0].ns, api, token);
    expect(fromPc.status).toBe(200);
    expect(JSON.parse(fromPc.body)).toMatchObject({ kind: 'capture', image: 'desk' });
  });
});
