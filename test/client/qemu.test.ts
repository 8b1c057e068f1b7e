// Boots the real thin client (boot/dist) in QEMU inside a private network namespace with dnsmasq, a stand-in
// for the server's client API (fixtures/task-server.mjs) and nbdkit as the NBD end, and checks what the
// client does on the wire and on its disk.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { distDir, ensureClientBuild, repoRoot } from './helpers.js';
import { diskDigest } from '../lib/disk-digest.js';
import { stopProcess } from '../lib/run.js';
import { waitFor } from '../lib/wait.js';

const NS = `ncclient-${process.pid}`;
const HOST_IP = '10.231.7.1';
const API_PORT = 8080;
const NBD_PORT = 10809;
const TOKEN = 'tok-' + randomBytes(8).toString('hex');
const DISK_SERIAL = 'NCSERIAL01';
const DISK_SIZE = 64 << 20;
const artifacts = join(repoRoot, 'test-artifacts', 'client');
const tmp = mkdtempSync(join(tmpdir(), 'ncclient-qemu-'));
const children = new Set<ChildProcess>();

const ip = (...args: string[]): void => { execFileSync('ip', args, { stdio: 'pipe' }); };

function start(name: string, cmd: string[]): ChildProcess {
  const log = createWriteStream(join(tmp, `${name}.log`));
  const p = spawn('ip', ['netns', 'exec', NS, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdout?.pipe(log);
  p.stderr?.pipe(log);
  children.add(p);
  p.on('exit', () => children.delete(p));
  return p;
}

interface ApiRequest { method: string; path: string; query: Record<string, string>; authorization: string | null; contentType: string | null; body: string }

interface Scenario {
  name: string;
  task: Record<string, unknown>;
  nbdkit: string[];
  disk: Buffer;
}

interface Run {
  serial: () => string;
  requests: () => ApiRequest[];
  qemu: ChildProcess;
  exited: Promise<number | null>;
  diskPath: string;
  cleanup: () => Promise<void>;
}

async function boot(s: Scenario): Promise<Run> {
  const dir = join(tmp, s.name);
  mkdirSync(dir, { recursive: true });
  const config = join(dir, 'config.json');
  const reqLog = join(dir, 'requests.jsonl');
  writeFileSync(config, JSON.stringify({ token: TOKEN, task: s.task, nbd: `nbd://${HOST_IP}:${NBD_PORT}/` }));
  writeFileSync(reqLog, '');
  const diskPath = join(dir, 'disk.raw');
  writeFileSync(diskPath, s.disk);

  const server = start(`${s.name}-api`, ['node', join(import.meta.dirname, 'fixtures', 'task-server.mjs'), HOST_IP, String(API_PORT), config, reqLog]);
  const nbd = start(`${s.name}-nbdkit`, ['nbdkit', '-f', '--exit-with-parent', '-i', HOST_IP, '-p', String(NBD_PORT), ...s.nbdkit]);
  await waitFor('API server and nbdkit to listen', () => {
    try {
      execFileSync('ip', ['netns', 'exec', NS, 'nbdinfo', '--size', `nbd://${HOST_IP}:${NBD_PORT}/`], { stdio: 'pipe' });
      return readFileSync(join(tmp, `${s.name}-api.log`), 'utf8').includes('listening');
    } catch { return false; }
  }, { timeoutMs: 30_000, everyMs: 200, context: () => readFileSync(join(tmp, `${s.name}-nbdkit.log`), 'utf8') });

  mkdirSync(artifacts, { recursive: true });
  const serialPath = join(artifacts, `${s.name}.serial.log`);
  const serialFile = createWriteStream(serialPath);
  let serial = '';
  const append = (b: Buffer): void => { serial += b.toString('latin1'); serialFile.write(b); };
  const qemu = spawn('ip', ['netns', 'exec', NS, 'qemu-system-x86_64', '-accel', 'tcg', '-m', '1024', '-smp', '1',
    '-nographic', '-no-reboot',
    '-kernel', join(distDir, 'vmlinuz'), '-initrd', join(distDir, 'initrd.img'),
    '-append', `console=ttyS0 console=tty0 netclone.server=${HOST_IP}:${API_PORT} netclone.task=${String(s.task.id)} netclone.token=${TOKEN}`,
    '-netdev', 'tap,id=n0,ifname=tap0,script=no,downscript=no', '-device', 'virtio-net-pci,netdev=n0,mac=52:54:00:c1:1e:01',
    '-drive', `file=${diskPath},format=raw,if=none,id=d0`, '-device', `virtio-blk-pci,drive=d0,serial=${DISK_SERIAL}`,
  ], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(qemu);
  qemu.stdout?.on('data', append);
  qemu.stderr?.on('data', append);
  const exited = new Promise<number | null>((resolve) => qemu.on('exit', (code) => { children.delete(qemu); serialFile.end(); resolve(code); }));
  return {
    serial: () => serial,
    requests: () => readFileSync(reqLog, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as ApiRequest),
    qemu, exited, diskPath,
    cleanup: async () => { await stopProcess(qemu); await stopProcess(server); await stopProcess(nbd); },
  };
}

/** Waits for the VM to end by itself (poweroff/reboot with -no-reboot); the cap only guards against a hang. */
async function finished(run: Run): Promise<number | null> {
  const cap = new Promise<'hang'>((r) => setTimeout(() => r('hang'), 240_000));
  const code = await Promise.race([run.exited, cap]);
  if (code === 'hang') throw new Error(`VM did not finish\n${run.serial().slice(-3000)}`);
  return code;
}

const find = (run: Run, path: string): ApiRequest[] => run.requests().filter((r) => r.path === `/api/client/v1/${path}`);

describe('thin client in QEMU', () => {
  beforeAll(() => {
    ensureClientBuild();
    ip('netns', 'add', NS);
    ip('-n', NS, 'link', 'set', 'lo', 'up');
    ip('-n', NS, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', NS, 'link', 'set', 'br0', 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0');
    ip('-n', NS, 'tuntap', 'add', 'dev', 'tap0', 'mode', 'tap');
    ip('-n', NS, 'link', 'set', 'tap0', 'master', 'br0');
    ip('-n', NS, 'link', 'set', 'tap0', 'up');
    ip('-n', NS, 'addr', 'add', `${HOST_IP}/24`, 'dev', 'br0');
    ip('-n', NS, 'link', 'set', 'br0', 'up');
    start('dnsmasq', ['dnsmasq', '--no-daemon', '--conf-file=/dev/null', '--port=0', '--interface=br0', '--bind-interfaces',
      '--dhcp-range=10.231.7.50,10.231.7.60,1h', `--dhcp-leasefile=${join(tmp, 'leases')}`, `--pid-file=${join(tmp, 'dnsmasq.pid')}`]);
  }, 600_000);

  afterAll(async () => {
    // The namespace goes whatever happens to the children: a cleanup that threw once left it behind.
    try {
      await Promise.allSettled([...children].map((p) => stopProcess(p)));
    } finally {
      if (existsSync(`/run/netns/${NS}`)) ip('netns', 'del', NS);
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('captures its virtio disk: DHCP, task, hardware report, nbdcopy to the NBD export, result', async () => {
    const disk = randomBytes(DISK_SIZE);
    disk.fill(0, 8 << 20, 40 << 20); // a long zero run goes over the wire as WRITE_ZEROES
    const run = await boot({ name: 'capture', disk, nbdkit: ['memory', String(DISK_SIZE)],
      task: { id: 'task-cap', kind: 'capture', image: 'office-pc', diskSerial: null, after: 'poweroff', imageInfo: null } });
    try {
      expect(await finished(run)).toBe(0);
      const serial = run.serial();
      expect(serial).toMatch(/netclone: address 10\.231\.7\.\d+\/24/);
      expect(serial).toContain('netclone: capture done');

      const [task] = find(run, 'task');
      expect(task).toMatchObject({ method: 'GET', authorization: `Bearer ${TOKEN}`, query: { mac: '52:54:00:c1:1e:01' } });
      const [hw] = find(run, 'hardware');
      expect(hw.contentType).toBe('application/json');
      const report = JSON.parse(hw.body) as { dmi: { vendor: string }; disks: unknown[]; nics: unknown[] };
      expect(report.dmi.vendor).toBe('QEMU');
      expect(report.disks).toEqual([{ name: 'vda', size: DISK_SIZE, model: '', serial: DISK_SERIAL, logicalSectorSize: 512,
        physicalSectorSize: 512, rotational: true, removable: false, transport: 'virtio' }]);
      expect(report.nics).toEqual([{ name: 'eth0', mac: '52:54:00:c1:1e:01', driver: 'virtio_net', speed: null }]);
      const [st] = find(run, 'start');
      expect(JSON.parse(st.body)).toEqual({ disk: { name: 'vda', size: DISK_SIZE, logicalSectorSize: 512, serial: DISK_SERIAL } });
      const [result] = find(run, 'result');
      expect(JSON.parse(result.body)).toEqual({ ok: true, message: 'capture of vda done', digest: null });

      const captured = join(tmp, 'captured.raw');
      execFileSync('ip', ['netns', 'exec', NS, 'nbdcopy', `nbd://${HOST_IP}:${NBD_PORT}/`, captured]);
      expect(readFileSync(captured).equals(disk)).toBe(true);
    } finally { await run.cleanup(); }
  }, 300_000);

  it('deploys a sparse image onto a dirty disk, zeroes the holes, verifies and reports the digest', async () => {
    const imageSize = 48 << 20;
    const chunkSize = 1 << 20;
    const imagePath = join(tmp, 'image.raw');
    execFileSync('truncate', ['-s', String(imageSize), imagePath]); // sparse: BLOCK_STATUS reports holes
    const image = Buffer.alloc(imageSize);
    randomBytes(3_000_000).copy(image, 20 << 20);
    Buffer.from('BOOTSECTOR').copy(image, 0);
    execFileSync('dd', [`of=${imagePath}`, 'bs=1M', 'seek=20', 'conv=notrunc', 'status=none'], { input: image.subarray(20 << 20, (20 << 20) + 3_000_000) });
    execFileSync('dd', [`of=${imagePath}`, 'conv=notrunc', 'status=none'], { input: image.subarray(0, 10) });
    const digest = diskDigest(image, imageSize, chunkSize);
    const run = await boot({ name: 'deploy', disk: randomBytes(DISK_SIZE), nbdkit: ['-r', 'file', imagePath],
      task: { id: 'task-dep', kind: 'deploy', image: 'office-pc', diskSerial: DISK_SERIAL, after: 'poweroff',
        imageInfo: { size: imageSize, sectorSize: 512, chunkSize, digest } } });
    try {
      expect(await finished(run)).toBe(0);
      expect(run.serial()).toContain(`netclone: verified: digest ${digest}`);
      // Heartbeats name the phase: some while transferring, then the switch to verifying, never back.
      const phases = find(run, 'progress').map((r) => (JSON.parse(r.body) as { phase: string }).phase);
      expect(phases.length).toBeGreaterThan(0);
      expect(phases[phases.length - 1]).toBe('verifying');
      expect(phases.slice(phases.indexOf('verifying')).every((p) => p === 'verifying')).toBe(true);
      expect(phases.every((p) => p === 'transferring' || p === 'verifying')).toBe(true);
      expect(JSON.parse(find(run, 'result')[0].body)).toEqual({ ok: true, message: 'deploy of vda done', digest });
      const written = readFileSync(run.diskPath);
      expect(written.subarray(0, imageSize).equals(image)).toBe(true);
    } finally { await run.cleanup(); }
  }, 300_000);

  it('refuses an image larger than the disk, reports ok:false, and waits for a key before rebooting', async () => {
    const run = await boot({ name: 'too-big', disk: Buffer.alloc(DISK_SIZE), nbdkit: ['memory', '1M'],
      task: { id: 'task-big', kind: 'deploy', image: 'huge', diskSerial: null, after: 'reboot',
        imageInfo: { size: DISK_SIZE * 2, sectorSize: 512, chunkSize: 1 << 20, digest: '0'.repeat(64) } } });
    try {
      const reason = `disk vda is ${DISK_SIZE} bytes, smaller than the image (${DISK_SIZE * 2} bytes); refusing`;
      await waitFor('the client to wait for a key', () => run.serial().includes('netclone: press any key to reboot'), { timeoutMs: 240_000, everyMs: 200, context: () => run.serial().slice(-3000) });
      expect(run.serial()).toContain(`netclone: FAILED: ${reason}`);
      expect(find(run, 'start')).toEqual([]);
      const results = find(run, 'result');
      expect(results.map((r) => JSON.parse(r.body))).toEqual([{ ok: false, message: reason, digest: null }]);
      expect(run.qemu.exitCode).toBeNull();

      run.qemu.stdin?.write('x');
      expect(await finished(run)).toBe(0);
      expect(run.serial()).toContain('netclone: key pressed: rebooting');
    } finally { await run.cleanup(); }
  }, 300_000);
});
