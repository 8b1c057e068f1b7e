/**
 * The netclone command as a technician uses it: on a data directory directly (under
 * its lock) and through a running server's control socket; nbd:// URLs for qemu-img
 * and nbdcopy; a server killed mid-capture loses only that capture.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile, readFile, readdir, open, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { rawGo, request, readSimpleReply } from '../nbd/helpers.js';
import { CMD } from '../../src/nbd/protocol.js';
import { noise } from '../lib/prng.js';
import { run } from '../lib/run.js';
import { BIN, cli, loggedPorts, spawnServer, type ServerProcess } from './processes.js';

const MiB = 1024 * 1024;
let dir: string;

function disk(seed: number, size = 32 * MiB): Buffer {
  const d = Buffer.alloc(size);
  noise(1000 + seed, 6 * MiB).copy(d, 0);
  d.fill(`compressible ${seed} `, 10 * MiB, 16 * MiB);
  d.writeUInt32LE(seed, 20 * MiB);
  return d;
}

/** disk(1) with one 4-byte change: all but one chunk are the same. */
function nearCopyOfDisk1(): Buffer {
  const b = disk(1);
  b.writeUInt32LE(0xdeadbeef, 2 * MiB + 5);
  return b;
}

/** Imports `bytes` as image `name` into `data` with the command, through a file. */
async function imported(data: string, name: string, bytes: Buffer): Promise<void> {
  const file = path.join(dir, `${path.basename(data)}-${name}.raw`);
  await writeFile(file, bytes);
  const r = await cli(data, ['image', 'import', name, file]);
  expect(r.code, r.stderr).toBe(0);
}

interface Server {
  readonly process: ServerProcess;
  readonly nbdPort: number;
}

async function startServer(data: string): Promise<Server> {
  const s = spawnServer(data, path.join(dir, 'boot'));
  await s.up();
  return { process: s, nbdPort: loggedPorts(s.log()).nbd };
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-cli-'));
  if (!existsSync(BIN) || !existsSync(path.resolve('dist/cli/main.js'))) throw new Error('run npm run build first (npm test does)');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('without a server (directly on the data directory)', () => {
  // Each test has its own data directory and imports what it needs.
  let data: string;
  let n = 0;
  beforeEach(() => {
    data = path.join(dir, `data-${++n}`);
  });

  it('imports a file and stdin, lists, shows, verifies and exports byte-exact and sparse', async () => {
    const a = disk(1);
    await writeFile(path.join(dir, 'a.raw'), a);
    const imp = await cli(data, ['image', 'import', 'office', path.join(dir, 'a.raw')]);
    expect(imp.code, imp.stderr).toBe(0);
    expect(imp.stdout).toMatch(/office version 1/);
    const stdin = await cli(data, ['image', 'import', 'office2', '-'], disk(2));
    expect(stdin.code, stdin.stderr).toBe(0);

    const list = JSON.parse((await cli(data, ['image', 'list', '--json'])).stdout) as Array<{ name: string; size: number }>;
    expect(list.map((i) => i.name)).toEqual(['office', 'office2']);
    expect(list[0].size).toBe(a.length);

    const show = JSON.parse((await cli(data, ['image', 'show', 'office2', '--json'])).stdout) as { dataBytes: number; storedBytes: number };
    expect(show.dataBytes).toBeLessThan(a.length);

    const verify = await cli(data, ['image', 'verify', 'office']);
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(/^ok/);

    const out = path.join(dir, 'a-out.raw');
    expect((await cli(data, ['image', 'export', 'office', out])).code).toBe(0);
    expect((await readFile(out)).equals(a)).toBe(true);
    const st = await stat(out);
    expect(st.blocks * 512).toBeLessThan(a.length);
  });

  it('shares chunks between nearly identical images', async () => {
    await imported(data, 'office', disk(1));
    const chunks = path.join(data, 'images', 'chunks');
    const files = async (): Promise<number> => {
      let n = 0;
      for (const sub of await readdir(chunks)) n += (await readdir(path.join(chunks, sub))).length;
      return n;
    };
    const before = await files();
    await writeFile(path.join(dir, 'b.raw'), nearCopyOfDisk1());
    expect((await cli(data, ['image', 'import', 'office-b', path.join(dir, 'b.raw')])).code).toBe(0);
    expect(await files()).toBe(before + 1);
  });

  it('reports damage: verify names the chunk and exits 1', async () => {
    await imported(data, 'office', disk(1));
    await imported(data, 'office2', disk(2));
    await imported(data, 'office-b', nearCopyOfDisk1());
    const chunks = path.join(data, 'images', 'chunks');
    let sub = '';
    let name = '';
    for (const d of (await readdir(chunks)).sort()) {
      const files = await readdir(path.join(chunks, d));
      if (files.length > 0) {
        sub = d;
        name = files[0];
        break;
      }
    }
    const fh = await open(path.join(chunks, sub, name), 'r+');
    const st = await fh.stat();
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, st.size - 1);
    b[0] ^= 0xff;
    await fh.write(b, 0, 1, st.size - 1);
    await fh.close();
    const results = [];
    for (const n of ['office', 'office2', 'office-b']) results.push(await cli(data, ['image', 'verify', n]));
    const damaged = results.filter((r) => r.code === 1);
    expect(damaged.length).toBeGreaterThan(0);
    for (const r of damaged) expect(r.stdout).toContain(name.replace(/\..*$/, '').slice(0, 16));
    await rm(path.join(data, 'images', 'chunks', sub, name));
    expect((await cli(data, ['image', 'rm', 'office2'])).code).toBe(0);
    expect((await cli(data, ['image', 'rm', 'office'])).code).toBe(0);
    expect((await cli(data, ['image', 'rm', 'office-b'])).code).toBe(0);
    const gc = await cli(data, ['image', 'gc', '--json']);
    expect(gc.code, gc.stderr).toBe(0);
    expect(JSON.parse(gc.stdout).removedChunks).toBeGreaterThan(0);
  });

  it('sets the admin password from two lines of stdin and creates an API token', async () => {
    const differ = await cli(data, ['admin', 'passwd'], Buffer.from('first-password\nsecond-password\n'));
    expect(differ.code).toBe(2);
    expect(differ.stderr).toMatch(/differ/);
    const ok = await cli(data, ['admin', 'passwd'], Buffer.from('correct horse battery\ncorrect horse battery\n'));
    expect(ok.code, ok.stderr).toBe(0);
    const db = JSON.parse(await readFile(path.join(data, 'state', 'netclone.json'), 'utf8')) as { users: Array<{ username: string; passwordHash: string }>; apiTokens: unknown[] };
    expect(db.users).toHaveLength(1);
    expect(db.users[0].username).toBe('admin');
    expect(db.users[0].passwordHash).not.toContain('correct horse');
    const token = await cli(data, ['admin', 'token', 'create', '--name', 'scripts']);
    expect(token.code, token.stderr).toBe(0);
    expect(token.stdout.trim()).toMatch(/^nct_[A-Za-z0-9_-]{20,}$/);
    const after = JSON.parse(await readFile(path.join(data, 'state', 'netclone.json'), 'utf8')) as { apiTokens: Array<{ name: string }> };
    expect(after.apiTokens.map((t) => t.name)).toContain('scripts');
  });

  it('rejects unknown commands, flags and bad values with exit status 2', async () => {
    expect((await cli(data, ['image', 'frob'])).code).toBe(2);
    const r = await cli(data, ['image', 'list', '--colour']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown flag --colour/);
    const s = await run(process.execPath, [BIN, 'serve', '--data', data, '--nbd-port', 'lots']);
    expect(s.code).toBe(2);
    expect(s.stderr).toMatch(/nbd-port: "lots" is not a port/);
    expect((await cli(data, ['task', 'capture', 'zz:zz', '--image', 'x'])).stderr).toMatch(/not a MAC address/);
  });
});

/**
 * One server and one image, as one story in this order: the image is imported through the server (while a
 * second server on the directory is refused), read back through nbd:// URLs as version 1, captured into as
 * version 2 by nbdcopy, and then the server is killed during the capture of a version 3, which must leave
 * version 2 whole. Each step needs what the one before left: giving each its own server and real capture
 * would repeat the import and the capture for every test.
 */
describe('with a running server (through its control socket)', () => {
  let data: string;
  let server: Server;
  const golden = disk(7);

  beforeAll(async () => {
    data = path.join(dir, 'served');
    await writeFile(path.join(dir, 'golden.raw'), golden);
    server = await startServer(data);
  });
  afterAll(async () => {
    await server?.process.stop();
  });

  it('acts through the server: a second writer on the directory is refused while it runs', async () => {
    const second = await run(process.execPath, [BIN, 'serve', '--data', data, '--listen', '127.0.0.1', '--http-port', '0', '--nbd-port', '0', '--tftp-port', '0', '--dhcp', 'off'], {
      env: { ...process.env, NETCLONE_CONFIG: '' },
    });
    const secondErr = second.stderr + second.stdout;
    expect(second.code, secondErr).toBe(1);
    expect(secondErr).toContain(`${data} is in use by process ${server.process.proc.pid} (the server); the server cannot open it until that process ends`);
    expect(secondErr).not.toContain('netclone is up');
    // The refused server left the running one whole: its lock and control socket still work.
    expect(JSON.parse(await readFile(path.join(data, 'state', 'netclone.lock'), 'utf8')).pid).toBe(server.process.proc.pid);
    const imp = await cli(data, ['image', 'import', 'golden', path.join(dir, 'golden.raw')]);
    expect(imp.code, imp.stderr).toBe(0);
    await expect.poll(() => server.process.log(), { timeout: 5000 }).toContain('image golden imported');
    expect((await cli(data, ['image', 'list'])).stdout).toContain('golden');
  });

  it('issues nbd:// URLs that nbdinfo, qemu-img and nbdcopy accept, with holes visible', async () => {
    const url = (await cli(data, ['image', 'url', 'golden'])).stdout.trim();
    expect(url).toMatch(new RegExp(`^nbd://127\\.0\\.0\\.1:${server.nbdPort}/d-`));
    const info = await run('nbdinfo', ['--json', url]);
    expect(info.code, info.stderr).toBe(0);
    const j = JSON.parse(info.stdout) as { exports: Array<{ 'export-size': number; is_read_only: boolean; contexts: string[] }> };
    expect(j.exports[0]['export-size']).toBe(golden.length);
    expect(j.exports[0].is_read_only).toBe(true);
    expect(j.exports[0].contexts).toContain('base:allocation');
    const map = await run('nbdinfo', ['--map', url]);
    expect(map.stdout).toMatch(/hole,zero/);
    const out = path.join(dir, 'golden-back.raw');
    expect((await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', url, out])).code).toBe(0);
    expect((await readFile(out)).equals(golden)).toBe(true);
    const wrong = await run('nbdinfo', [url.replace(/d-[A-Za-z0-9_-]+$/, 'd-notarealtoken0000000000000000000')]);
    expect(wrong.code).not.toBe(0);
    // The server's log line reaches us through its stdout pipe, possibly after nbdinfo has exited.
    await expect.poll(() => server.process.log(), { timeout: 5000 }).toContain('unknown export name');
  });

  it('captures through a writable URL (nbdcopy, 4 connections) and commits a new version', async () => {
    const url = (await cli(data, ['image', 'url', 'golden', '--write', '--size', String(golden.length)])).stdout.trim();
    const next = disk(8);
    await writeFile(path.join(dir, 'next.raw'), next);
    const r = await run('nbdcopy', ['--flush', '--connections=4', path.join(dir, 'next.raw'), url]);
    expect(r.code, r.stderr).toBe(0);
    const latest = async (): Promise<number> => (JSON.parse((await cli(data, ['image', 'show', 'golden', '--json'])).stdout) as { latestVersion: number }).latestVersion;
    await expect.poll(latest, { timeout: 10_000, interval: 100 }).toBe(2);
    const out = path.join(dir, 'next-back.raw');
    expect((await cli(data, ['image', 'export', 'golden', out])).code).toBe(0);
    expect((await readFile(out)).equals(next)).toBe(true);
  });

  it('loses only the capture in flight when the server is killed, and verify passes after restart', async () => {
    const url = (await cli(data, ['image', 'url', 'golden', '--write', '--size', String(golden.length)])).stdout.trim();
    // A client mid-capture: it has written (and had acknowledged) data but not flushed or disconnected.
    const { c } = await rawGo(server.nbdPort, url.split('/').pop() as string);
    c.write(Buffer.concat([request(CMD.WRITE, 1n, 0n, 4 * MiB), disk(9).subarray(0, 4 * MiB)]));
    expect((await readSimpleReply(c)).errno).toBe(0);
    await server.process.stop('SIGKILL');
    c.destroy();
    server = await startServer(data);
    const show = JSON.parse((await cli(data, ['image', 'show', 'golden', '--json'])).stdout) as { latestVersion: number };
    expect(show.latestVersion).toBe(2);
    const verify = await cli(data, ['image', 'verify', 'golden']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    const out = path.join(dir, 'after-kill.raw');
    expect((await cli(data, ['image', 'export', 'golden', out])).code).toBe(0);
    expect((await readFile(out)).equals(disk(8))).toBe(true);
  });
});
