/**
 * A full disk fails the one operation that hit it, never the server. The data directory's
 * images/ and state/ each sit on a small tmpfs this test mounts (it needs root): a capture
 * through an nbd:// URL fills images/ while state/ (database, events) is already full. The
 * server must keep answering HTTP and NBD, fail that capture with ENOSPC, keep the previous
 * version verifiable, and save its database again once there is room.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { cli, loggedPorts, spawnServer, type ServerProcess } from '../cli/processes.js';
import { run } from '../lib/run.js';
import { databasePath, forgetDatabase, openDatabase } from '../../src/appliance/database.js';
import { DatabaseWriteError } from '../../src/appliance/durable-json-file.js';
import { EventLog } from '../../src/appliance/events.js';
import { HostService } from '../../src/appliance/hosts.js';
import { nullLogger } from '../../src/log.js';

const exec = promisify(execFile);
const MiB = 1024 * 1024;

let dir: string;
let data: string;
const mounts: string[] = [];
let server: ServerProcess | null = null;

/** Deterministic incompressible bytes (xorshift32). */
function noise(seed: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  let x = seed || 1;
  for (let i = 0; i + 4 <= length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeInt32LE(x | 0, i);
  }
  return out;
}

async function mountTmpfs(target: string, size: string): Promise<void> {
  await mkdir(target, { recursive: true });
  await exec('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', target]);
  mounts.push(target);
}

/** Writes a filler file until the filesystem says ENOSPC; returns its path. */
async function fill(fsDir: string): Promise<string> {
  const file = path.join(fsDir, 'filler');
  const fh = await open(file, 'w');
  try {
    for (const block of [64 * 1024, 4096, 512, 1]) {
      const buf = Buffer.alloc(block, 0xee);
      for (;;) {
        try {
          await fh.write(buf);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
          break;
        }
      }
    }
  } finally {
    await fh.close();
  }
  // Proof the filesystem is full: not one more byte fits.
  await expect(writeFile(path.join(fsDir, 'probe'), 'x')).rejects.toMatchObject({ code: 'ENOSPC' });
  return file;
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('this test mounts tmpfs file systems: run it as root');
  if (!existsSync(path.resolve('dist/cli/main.js'))) throw new Error('run npm run build first (npm test does)');
  dir = await mkdtemp(path.join(tmpdir(), 'nc-faults-'));
  data = path.join(dir, 'data');
  await mountTmpfs(path.join(data, 'images'), '12m');
  await mountTmpfs(path.join(data, 'state'), '1m');
});
afterAll(async () => {
  await server?.stop();
  for (const m of mounts.reverse()) await exec('umount', [m]).catch(() => exec('umount', ['-l', m]));
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('disk full during a capture', () => {
  it('fails the capture with ENOSPC, keeps serving HTTP and NBD, and the previous version still verifies', async () => {
    const v1 = Buffer.concat([noise(1, 3 * MiB), Buffer.alloc(5 * MiB)]);
    await writeFile(path.join(dir, 'v1.raw'), v1);
    const imp = await cli(data, ['image', 'import', 'office', path.join(dir, 'v1.raw')]);
    expect(imp.code, imp.stderr).toBe(0);

    server = spawnServer(data, path.join(dir, 'boot'));
    await server.up();
    const ports = loggedPorts(server.log());
    const size = 32 * MiB;
    const url = await cli(data, ['image', 'url', 'office', '--write', '--size', String(size)]);
    expect(url.code, url.stderr).toBe(0);

    const stateFiller = await fill(path.join(data, 'state'));
    await writeFile(path.join(dir, 'v2.raw'), noise(2, size));
    // 32 MiB of incompressible data cannot fit in the 12 MiB images/ file system. Whether the
    // client hears of it (a failed WRITE or FLUSH) or only the commit after its disconnect
    // fails depends on when the store writes the chunks; either way nothing may be committed.
    await run('nbdcopy', ['--flush', path.join(dir, 'v2.raw'), url.stdout.trim()]);

    await expect.poll(() => server?.log() ?? '', { timeout: 30_000 }).toMatch(/capture of office through an nbd:\/\/ URL failed: [^"]*(ENOSPC|no space left on device)/);
    expect(server.log()).toContain(`the disk that holds ${path.join(data, 'images')} is full: free space there`);
    expect(server.proc.exitCode, server.log()).toBeNull();
    expect(server.proc.signalCode).toBeNull();
    // state/ was full too: the event could not be saved, and that did not take the server down.
    expect(server.log()).toContain(`could not save the database ${path.join(data, 'state', 'netclone.json')}: ENOSPC`);
    expect(server.log()).toContain('free space on the file system that holds');
    // Handled where it happened, not caught by the process-wide safety net.
    expect(server.log()).not.toContain('internal error (a bug)');

    // HTTP still answers.
    const page = await fetch(`http://127.0.0.1:${ports.http}/login`).catch((err: unknown) => {
      throw new Error(`the server stopped answering HTTP (${String(err)}); its log ends:\n${server?.log().slice(-3000)}`);
    });
    expect(page.status).toBe(200);
    // NBD still serves the previous version, byte for byte.
    const readUrl = await cli(data, ['image', 'url', 'office']);
    expect(readUrl.code, readUrl.stderr).toBe(0);
    const back = path.join(dir, 'v1-back.raw');
    const get = await run('nbdcopy', [readUrl.stdout.trim(), back]);
    expect(get.code, get.stderr).toBe(0);
    expect((await readFile(back)).equals(v1)).toBe(true);

    const show = JSON.parse((await cli(data, ['image', 'show', 'office', '--json'])).stdout) as { latestVersion: number };
    expect(show.latestVersion).toBe(1);
    const verify = await cli(data, ['image', 'verify', 'office']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);

    // With room again, the next database write saves what could not be saved meanwhile.
    await rm(stateFiller);
    const host = await cli(data, ['host', 'add', '52:54:00:fa:01:01']);
    expect(host.code, host.stderr).toBe(0);
    const db = JSON.parse(await readFile(path.join(data, 'state', 'netclone.json'), 'utf8')) as { events: Array<{ message: string }>; hosts: Array<{ mac: string }> };
    expect(db.hosts.map((h) => h.mac)).toContain('52:54:00:fa:01:01');
    expect(db.events.map((e) => e.message).join('\n')).toMatch(/capture of office through an nbd:\/\/ URL failed/);
  });
});

describe('the database on a full disk', () => {
  it('fails the one write with a clear error, keeps the file and memory consistent, and saves once there is room', async () => {
    const dbDir = path.join(dir, 'db');
    await mountTmpfs(dbDir, '256k');
    try {
      const db = await openDatabase(dbDir);
      const events = new EventLog(db, nullLogger());
      const hosts = new HostService(db, events);
      await hosts.add('52:54:00:db:00:01');
      const filler = await fill(dbDir);

      const failed = await hosts.add('52:54:00:db:00:02').then(
        () => null,
        (e: unknown) => e,
      );
      expect(failed).toBeInstanceOf(DatabaseWriteError);
      expect((failed as DatabaseWriteError).code).toBe('ENOSPC');
      expect((failed as Error).message).toBe(
        `could not save the database ${databasePath(dbDir)}: ENOSPC: no space left on device, write; free space on the file system that holds ${path.join(dbDir, 'state')}. The change is kept in memory and saved with the next write that succeeds`,
      );
      // The file still holds the last saved state, whole; no half-written temp file eats the space.
      const onDisk = JSON.parse(await readFile(databasePath(dbDir), 'utf8')) as { hosts: Array<{ mac: string }> };
      expect(onDisk.hosts.map((h) => h.mac)).toEqual(['52:54:00:db:00:01']);
      expect((await readdir(path.join(dbDir, 'state'))).filter((f) => f.endsWith('.tmp'))).toEqual([]);
      // Memory keeps the change, as the message says.
      expect(hosts.list().map((h) => h.mac)).toContain('52:54:00:db:00:02');
      // An event reports what already happened: it does not fail its caller on a full disk.
      await expect(events.record('warn', 'recorded while the disk is full')).resolves.toBeUndefined();

      // Room again: the adapter's retry saves everything without another change.
      await rm(filler);
      await expect
        .poll(async () => JSON.parse(await readFile(databasePath(dbDir), 'utf8')) as { hosts: Array<{ mac: string }>; events: Array<{ message: string }> }, { timeout: 20_000, interval: 200 })
        .toMatchObject({ hosts: [{ mac: '52:54:00:db:00:01' }, { mac: '52:54:00:db:00:02' }], events: expect.arrayContaining([expect.objectContaining({ message: 'recorded while the disk is full' })]) });
    } finally {
      forgetDatabase(dbDir);
    }
  });
});

describe('the serve process safety net', () => {
  /** A process that rejects a promise nobody handles, with or without the serve runtime's handler. */
  function rejectUnhandled(withNet: boolean): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const runtime = path.resolve('dist/appliance/runtime.js');
    const log = path.resolve('dist/log.js');
    const script = [
      `import { installRejectionSafetyNet } from ${JSON.stringify(runtime)};`,
      `import { createLogger } from ${JSON.stringify(log)};`,
      withNet ? `installRejectionSafetyNet(createLogger('info'));` : '',
      `Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));`,
      `setTimeout(() => console.log('still serving'), 100);`,
    ].join('\n');
    return new Promise((resolve, reject) => {
      execFile(process.execPath, ['--input-type=module', '-e', script], (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') reject(err);
        else resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
      });
    });
  }

  it('without it Node ends the process on an unhandled rejection', async () => {
    const r = await rejectUnhandled(false);
    expect(r.code).not.toBe(0);
    expect(r.stdout).not.toContain('still serving');
  });

  it('with it the process logs the bug loudly, says what to do, and keeps running', async () => {
    const r = await rejectUnhandled(true);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('still serving');
    const line = JSON.parse(r.stdout.split('\n').find((l) => l.includes('internal error')) ?? '{}') as { level?: number; msg?: string; code?: string };
    expect(line.level).toBe(60);
    expect(line.code).toBe('ENOSPC');
    expect(line.msg).toMatch(/^internal error \(a bug\): an operation failed and nothing handled it: ENOSPC: no space left on device, write\. the server keeps serving;.*cancel it and start it again/);
  });
});
