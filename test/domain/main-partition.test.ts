/**
 * A deploy may name the partition that grows onto a larger disk or shrinks onto a smaller one
 * (issue 12: "the largest NTFS/ext4/xfs/btrfs partition, or the one the task names"). The command
 * layer checks the name against the image's layout when the task is created, so a task that
 * cannot be honoured is refused there and then, not on the PC.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { CommandError, Commands } from '../../src/domain/commands.js';
import { runCommand } from '../../src/domain/command-table.js';
import { DeployFits, type FitFn } from '../../src/domain/deploy-fits.js';
import type { DiskLayout } from '../../src/imaging/disk-layout.js';
import { importStream } from '../../src/imaging/image-import.js';
import { nullLogger } from '../../src/lib/log.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { openTestDomain, type TestDomain } from '../lib/domain.js';

const MiB = 1024 * 1024;
const PC = '52:54:00:00:9a:01';

/** An 8 MiB GPT disk: an ESP (vfat, cannot be resized) and a data partition (ntfs). */
const LAYOUT: DiskLayout = {
  scheme: 'gpt', sectorSize: 512, diskSize: 8 * MiB, diskGuid: '11111111-2222-3333-4444-555555555555', chunkSize: MiB, freeChunks: [],
  partitions: [
    { index: 1, typeId: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', guid: 'AAAAAAAA-BBBB-CCCC-DDDD-000000000001', name: 'EFI', attributes: '0', startBytes: MiB, sizeBytes: MiB, filesystem: 'vfat', label: 'ESP', uuid: '1234-ABCD', usedBytes: MiB, minSizeBytes: null, mode: 'used-blocks', note: null },
    { index: 2, typeId: 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7', guid: 'AAAAAAAA-BBBB-CCCC-DDDD-000000000002', name: 'data', attributes: '0', startBytes: 2 * MiB, sizeBytes: 5 * MiB, filesystem: 'ntfs', label: 'Data', uuid: '0123456789ABCDEF', usedBytes: 2 * MiB, minSizeBytes: 3 * MiB, mode: 'used-blocks', note: null },
  ],
};

let w: TestDomain;
let c: Commands;

beforeEach(async () => {
  w = await openTestDomain('netclone-main-partition-');
  c = new Commands({ ...w, nbd: () => null });
  const disk = Buffer.alloc(LAYOUT.diskSize, 0x5a);
  await importStream(w.store, 'laid', Readable.from([disk]), disk.length, { source: 'test', layout: LAYOUT });
  await importStream(w.store, 'flat', Readable.from([disk]), disk.length, { source: 'test' });
});

afterEach(async () => {
  await w.close();
});

/** The refusal's status and message, or 'ok'. */
async function outcome(p: Promise<unknown>): Promise<{ status: number; message: string } | 'ok'> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    if (err instanceof CommandError) return { status: err.status, message: err.message };
    throw err;
  }
}

const create = (args: Record<string, unknown>): Promise<unknown> => runCommand(c, TEST_OPERATOR, 'task.create', { mac: PC, ...args }, () => undefined);

describe('the partition a deploy grows or shrinks', () => {
  it('is refused for a capture, by name and typed, and nothing is registered', async () => {
    const byName = await outcome(create({ kind: 'capture', image: 'new', 'grow-partition': '2' }));
    expect(byName).toEqual({ status: 400, message: expect.stringMatching(/capture resizes no partition.*deploys only/) });
    expect(await outcome(c.startTask(TEST_OPERATOR, { kind: 'capture', mac: PC, image: 'new', mainPartition: 2 }))).toEqual(byName);
    expect(w.hosts.get(PC)).toBeUndefined();
    expect(w.tasks.list()).toEqual([]);
  });

  it('is refused when the image\'s layout cannot resize it or has no such partition, saying why', async () => {
    const esp = await outcome(create({ kind: 'deploy', image: 'laid', 'grow-partition': '1' }));
    expect(esp).toEqual({ status: 400, message: expect.stringMatching(/^image laid: .*partition 1 \(vfat "ESP"\) cannot be resized: name a partition holding ntfs/) });
    const missing = await outcome(c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'laid', mainPartition: 9 }));
    expect(missing).toEqual({ status: 400, message: expect.stringMatching(/partition 9 is not in the image \(it has 1, 2\)/) });
    expect(w.tasks.list()).toEqual([]);
  });

  it('is refused when it is not a partition number, or over NBD, where nothing is resized', async () => {
    for (const bad of ['0', '-1', 'two', '2.5', 0, 1.5]) {
      expect(await outcome(create({ kind: 'deploy', image: 'laid', 'grow-partition': bad })), String(bad)).toMatchObject({ status: 400, message: expect.stringMatching(/partition table/) });
    }
    expect(await outcome(c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'laid', mainPartition: 0 }))).toMatchObject({ status: 400 });
    expect(await outcome(create({ kind: 'deploy', image: 'laid', 'grow-partition': '2', transport: 'nbd' }))).toEqual({ status: 400, message: expect.stringMatching(/over NBD .*--transport chunks/) });
    expect(w.tasks.list()).toEqual([]);
  });

  it('is stored with the task when the layout can resize it, and absent when none is named', async () => {
    const task = (await create({ kind: 'deploy', image: 'laid', 'grow-partition': '2', transport: 'chunks' })) as { id: string; mainPartition?: number };
    expect(task.mainPartition).toBe(2);
    expect(w.db.data.tasks.find((t) => t.id === task.id)?.mainPartition).toBe(2);
    await c.cancelTask(TEST_OPERATOR, task.id);

    const plain = await c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'laid' });
    expect('mainPartition' in plain.task).toBe(false);
    await c.cancelTask(TEST_OPERATOR, plain.task.id);

    // An image captured without a layout is restored at its own size: nothing to check the name against yet.
    const flat = await c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'flat', mainPartition: 3, transport: 'chunks' });
    expect(flat.task.mainPartition).toBe(3);
  });
});

describe('deploy fits', () => {
  it('prepares one fitted version per partition shrunk, and hands the partition to the fit', async () => {
    const asked: Array<number | undefined> = [];
    const fit: FitFn = (_image, _version, _size, _onProgress, main) => {
      asked.push(main);
      return new Promise(() => undefined);
    };
    const fits = new DeployFits(fit, nullLogger(), 1);
    await fits.poll('win', 1, 1000);
    await fits.poll('win', 1, 1000, 2);
    await fits.poll('win', 1, 1000, 2);
    await fits.poll('win', 1, 1000, 3);
    await fits.poll('win', 1, 1000);
    expect(asked).toEqual([undefined, 2, 3]);
  });
});
