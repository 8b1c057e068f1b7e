/**
 * The capture check at full size: a 256 MiB disk with zero runs, compressible and random
 * data, written into capture exports by nbdcopy (4 connections) and by qemu-img convert, commits
 * as a new version whose export equals the source; and an expired URL is refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { loopbackConfig } from '../lib/appliance-config.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { run } from '../lib/run.js';
import { sleep, waitFor } from '../lib/wait.js';

const MiB = 1024 * 1024;
let dir: string;
let app: RunningAppliance;
let disk: Buffer;
let file: string;

/** 4 MiB extents cycling zero, text, random, zero, text, random, zero, zero, text, random: 40/30/30. */
function mixed(size: number): Buffer {
  const d = Buffer.alloc(size);
  const pattern = ['z', 't', 'r', 'z', 't', 'r', 'z', 'z', 't', 'r'];
  for (let i = 0, off = 0; off < size; i++, off += 4 * MiB) {
    const end = Math.min(off + 4 * MiB, size);
    const kind = pattern[i % pattern.length];
    if (kind === 't') d.fill(`block ${i} of a text-like file with repeated words `, off, end);
    if (kind === 'r') randomBytes(end - off).copy(d, off);
  }
  return d;
}

async function waitForVersion(name: string, version: number): Promise<void> {
  await waitFor(`${name} to reach version ${version}`, async () => (await app.core.store.list()).find((x) => x.name === name)?.latestVersion === version, { timeoutMs: 10_000, everyMs: 50 });
}

async function exported(name: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  await app.core.commands.exportImage(TEST_OPERATOR, name, {
    begin: () => undefined,
    write: async (b) => void parts.push(Buffer.from(b)),
  });
  return Buffer.concat(parts);
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-cap-'));
  app = await startAppliance(loopbackConfig(dir), (await import('../../src/lib/log.js')).nullLogger());
  disk = mixed(256 * MiB);
  file = path.join(dir, 'disk.raw');
  await writeFile(file, disk);
});

afterAll(async () => {
  await app?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('capture exports with real writers', () => {
  it('nbdcopy with 4 connections writes 256 MiB; it commits and exports back equal', async () => {
    const { uri } = await app.core.nbd!.createUrl({ image: 'mixed', write: true, size: disk.length });
    const r = await run('nbdcopy', ['--flush', '--connections=4', file, uri]);
    expect(r.code, r.stderr).toBe(0);
    await waitForVersion('mixed', 1);
    expect(await app.core.store.versions('mixed')).toEqual([1]);
    expect((await exported('mixed')).equals(disk)).toBe(true);
    const show = await app.core.store.show('mixed');
    expect(show.dataBytes).toBeLessThanOrEqual(disk.length * 0.6 + 4 * MiB);
    expect(show.storedBytes).toBeLessThan(show.dataBytes);
  });

  it('qemu-img convert -n writes the same disk as a second version; dedup stores nothing new', async () => {
    const before = (await app.core.store.show('mixed')).storedBytes;
    const { uri } = await app.core.nbd!.createUrl({ image: 'mixed', write: true, size: disk.length });
    const r = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', file, uri]);
    expect(r.code, r.stderr).toBe(0);
    await waitForVersion('mixed', 2);
    expect(await app.core.store.versions('mixed')).toEqual([1, 2]);
    expect((await exported('mixed')).equals(disk)).toBe(true);
    expect((await app.core.store.show('mixed')).storedBytes).toBe(before);
    const back = path.join(dir, 'back.raw');
    const read = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', (await app.core.nbd!.createUrl({ image: 'mixed', write: false })).uri, back]);
    expect(read.code, read.stderr).toBe(0);
    expect((await readFile(back)).equals(disk)).toBe(true);
  });

  it('refuses an expired URL with an NBD error', async () => {
    const { uri } = await app.core.nbd!.createUrl({ image: 'mixed', write: false, ttlSeconds: 1 });
    await sleep(1300);
    // libnbd prints the server's refusal message only in its debug output.
    const r = await run('env', ['LIBNBD_DEBUG=1', 'nbdinfo', uri]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/this export token has expired/);
  });
});

describe('commit rule with real writers (issue 9, defects 5 and 6)', () => {
  let small: Buffer;
  let smallFile: string;

  beforeAll(async () => {
    small = mixed(24 * MiB);
    smallFile = path.join(dir, 'small.raw');
    await writeFile(smallFile, small);
  });

  it('qemu-img convert without -n: its create probe (zeroes sector 0, then DISC) commits nothing; exactly one version, equal to the source', async () => {
    const { uri } = await app.core.nbd!.createUrl({ image: 'q-create', write: true, size: small.length });
    const r = await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', smallFile, uri]);
    expect(r.code, r.stderr).toBe(0);
    await waitForVersion('q-create', 1);
    expect(await app.core.store.versions('q-create')).toEqual([1]);
    expect((await exported('q-create')).equals(small)).toBe(true);
  });

  it('nbdcopy without --flush ends with a clean DISC: exactly one version, equal to the source', async () => {
    const { uri } = await app.core.nbd!.createUrl({ image: 'noflush', write: true, size: small.length });
    const r = await run('nbdcopy', ['--connections=4', smallFile, uri]);
    expect(r.code, r.stderr).toBe(0);
    await waitForVersion('noflush', 1);
    expect(await app.core.store.versions('noflush')).toEqual([1]);
    expect((await exported('noflush')).equals(small)).toBe(true);
  });

  it('nbdcopy --flush and qemu-img convert -n each add exactly one version equal to their source', async () => {
    const second = Buffer.from(small);
    second.fill(0x5a, 3 * MiB, 5 * MiB + 17);
    const secondFile = path.join(dir, 'second.raw');
    await writeFile(secondFile, second);
    const a = await app.core.nbd!.createUrl({ image: 'both', write: true, size: small.length });
    const r1 = await run('nbdcopy', ['--flush', smallFile, a.uri]);
    expect(r1.code, r1.stderr).toBe(0);
    await waitForVersion('both', 1);
    expect((await exported('both')).equals(small)).toBe(true);
    const b = await app.core.nbd!.createUrl({ image: 'both', write: true, size: small.length });
    const r2 = await run('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', secondFile, b.uri]);
    expect(r2.code, r2.stderr).toBe(0);
    await waitForVersion('both', 2);
    expect(await app.core.store.versions('both')).toEqual([1, 2]);
    expect((await exported('both')).equals(second)).toBe(true);
  });

  it('an unused --write URL, and one only probed by nbdinfo, do not block another capture of the image', async () => {
    const idle = await app.core.nbd!.createUrl({ image: 'shared', write: true, size: small.length });
    const probed = await app.core.nbd!.createUrl({ image: 'shared', write: true, size: small.length });
    const info = await run('nbdinfo', ['--json', probed.uri]);
    expect(info.code, info.stderr).toBe(0);
    const used = await app.core.nbd!.createUrl({ image: 'shared', write: true, size: small.length });
    const r = await run('nbdcopy', [smallFile, used.uri]);
    expect(r.code, r.stderr).toBe(0);
    await waitForVersion('shared', 1);
    expect(await app.core.store.versions('shared')).toEqual([1]);
    expect((await exported('shared')).equals(small)).toBe(true);
    // The URL issued first still works afterwards and adds its own version.
    const r2 = await run('nbdcopy', [smallFile, idle.uri]);
    expect(r2.code, r2.stderr).toBe(0);
    await waitForVersion('shared', 2);
    expect(await app.core.store.versions('shared')).toEqual([1, 2]);
  });
});
