/**
 * Restore any version and the hardware-mismatch check (issue 13), at the command layer: a deploy's
 * version is checked against the image's committed versions and carried by the task; a version
 * captured from another PC model is refused without confirmation, and unknown models never warn.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { CommandError, Commands } from '../../src/domain/commands.js';
import { runCommand } from '../../src/domain/command-table.js';
import type { HardwareReport } from '../../src/domain/database.js';
import { diskVerdict, modelsDiffer } from '../../src/domain/deploy-checks.js';
import { readVersionOrigin, writeVersionOrigin } from '../../src/imaging/version-origin.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { openTestDomain, type TestDomain } from '../lib/domain.js';

const PC = '52:54:00:00:d1:01';
const MiB = 1024 * 1024;

let w: TestDomain;
let c: Commands;

function hardware(vendor: string, model: string, disks: Array<{ serial: string; size: number }> = []): HardwareReport {
  return {
    dmi: { vendor, model, serial: 'SN1', uuid: 'u' },
    disks: disks.map((d, i) => ({ name: `sd${'ab'[i]}`, size: d.size, model: 'disk', serial: d.serial, logicalSectorSize: 512, physicalSectorSize: 512, rotational: false, removable: false, transport: 'sata' })),
    nics: [],
    reportedAt: new Date().toISOString(),
  };
}

async function importVersion(fill: number): Promise<void> {
  const disk = Buffer.alloc(2 * MiB, fill);
  await c.importImage(TEST_OPERATOR, 'golden', Readable.from([disk]), disk.length, 'test', () => undefined);
}

async function refusal(p: Promise<unknown>): Promise<{ status: number; message: string }> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CommandError) return { status: err.status, message: err.message };
    throw err;
  }
  throw new Error('the command was not refused');
}

beforeEach(async () => {
  w = await openTestDomain('netclone-deploy-version-');
  c = new Commands({ ...w, nbd: () => null });
  await importVersion(1);
  await importVersion(2);
  await w.hosts.register(PC);
});

afterEach(async () => {
  await w.close();
});

describe('a deploy of a named version', () => {
  it('carries the version in the task; without one the task names none (the newest when the PC starts)', async () => {
    const { task } = await c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'golden', version: 1 });
    expect(task.version).toBe(1);
    expect(w.tasks.get(task.id)?.version).toBe(1);
    await w.tasks.cancel(task.id);
    const plain = (await c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'golden' })).task;
    expect('version' in plain).toBe(false);
  });

  it('refuses a version the image lacks (404, naming the versions it has), and what is no version number (400)', async () => {
    const gone = await refusal(c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'golden', version: 7 }));
    expect(gone).toEqual({ status: 404, message: expect.stringMatching(/image golden has no version 7; its versions are 1, 2/) as string });
    expect((await refusal(c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'golden', version: 0 }))).status).toBe(400);
    expect((await refusal(c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'golden', version: 1.5 }))).status).toBe(400);
    const capture = await refusal(c.startTask(TEST_OPERATOR, { kind: 'capture', mac: PC, image: 'golden', version: 1 }));
    expect(capture).toEqual({ status: 400, message: expect.stringMatching(/deploys only/) as string });
    expect(w.tasks.list()).toEqual([]);
  });

  it('takes --version from the CLI form and refuses text that is no number there', async () => {
    const task = (await runCommand(c, TEST_OPERATOR, 'task.create', { kind: 'deploy', mac: PC, image: 'golden', version: '1' }, () => undefined)) as { version?: number };
    expect(task.version).toBe(1);
    await expect(runCommand(c, TEST_OPERATOR, 'task.create', { kind: 'deploy', mac: '52:54:00:00:d1:02', image: 'golden', version: 'one' }, () => undefined)).rejects.toThrow(/--version takes a version number/);
  });

  it('keeps the version while the deploy is queued: deleting it is refused', async () => {
    await c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'golden', version: 1 });
    expect((await refusal(c.removeVersion(TEST_OPERATOR, 'golden', 1))).status).toBe(409);
    expect(await w.store.versions('golden')).toEqual([1, 2]);
  });
});

describe('the hardware-mismatch check', () => {
  it('refuses a version captured from another model with 409 naming both and how to confirm; force deploys it', async () => {
    await writeVersionOrigin(w.store, 'golden', 1, { vendor: 'LENOVO', model: '20XW' });
    await w.hosts.setHardware(PC, hardware('Dell Inc.', 'OptiPlex 7090'));
    const refused = await refusal(c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'golden', version: 1 }));
    expect(refused.status).toBe(409);
    expect(refused.message).toMatch(/golden version 1 was captured from a LENOVO 20XW, but PC 52:54:00:00:d1:01 is a Dell Inc\. OptiPlex 7090/);
    expect(refused.message).toMatch(/--force/);
    expect(refused.message).toMatch(/"force": true/);
    expect(w.tasks.list()).toEqual([]);
    // The CLI form says the same without --force, and deploys with it.
    await expect(runCommand(c, TEST_OPERATOR, 'task.create', { kind: 'deploy', mac: PC, image: 'golden', version: '1' }, () => undefined)).rejects.toThrow(/captured from a LENOVO 20XW/);
    const task = (await runCommand(c, TEST_OPERATOR, 'task.create', { kind: 'deploy', mac: PC, image: 'golden', version: '1', force: true }, () => undefined)) as { version?: number };
    expect(task.version).toBe(1);
  });

  it('checks the version deployed: another version of the same image without a recorded model passes', async () => {
    await writeVersionOrigin(w.store, 'golden', 1, { vendor: 'LENOVO', model: '20XW' });
    await w.hosts.setHardware(PC, hardware('Dell Inc.', 'OptiPlex 7090'));
    const { task } = await c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'golden' });
    expect(task.version).toBeUndefined();
  });

  it('passes the same model (case and spaces aside)', async () => {
    await writeVersionOrigin(w.store, 'golden', 2, { vendor: 'LENOVO', model: '20XW ' });
    await w.hosts.setHardware(PC, hardware('Lenovo', '20xw'));
    expect((await c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'golden' })).task.image).toBe('golden');
  });

  it('does not warn when either model is unknown: no report, no recorded model, or a firmware placeholder', async () => {
    await writeVersionOrigin(w.store, 'golden', 2, { vendor: 'LENOVO', model: '20XW' });
    // The PC never reported its hardware.
    const t1 = (await c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'golden' })).task;
    await w.tasks.cancel(t1.id);
    // A placeholder model on the PC.
    await w.hosts.setHardware(PC, hardware('System manufacturer', 'System Product Name'));
    const t2 = (await c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'golden' })).task;
    await w.tasks.cancel(t2.id);
    // Version 1 has no recorded model.
    await w.hosts.setHardware(PC, hardware('Dell Inc.', 'OptiPlex 7090'));
    expect((await c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC, image: 'golden', version: 1 })).task.version).toBe(1);
    expect(modelsDiffer({ vendor: 'LENOVO', model: '20XW' }, { vendor: '', model: '' })).toBe(false);
    expect(modelsDiffer({ vendor: 'LENOVO', model: 'To Be Filled By O.E.M.' }, { vendor: 'Dell', model: 'X' })).toBe(false);
  });

  it('reads a model file left by a removed version as unknown when its number is used again', async () => {
    await writeVersionOrigin(w.store, 'golden', 2, { vendor: 'LENOVO', model: '20XW' });
    expect(await readVersionOrigin(w.store, 'golden', 2)).toEqual({ vendor: 'LENOVO', model: '20XW' });
    await w.store.removeVersion('golden', 2);
    await importVersion(3);
    expect(await w.store.versions('golden')).toEqual([1, 2]);
    expect(await readVersionOrigin(w.store, 'golden', 2)).toBeNull();
  });
});

describe('the deploy preview', () => {
  it('lists versions newest first, names the checked version and says how the PC\'s disk takes it', async () => {
    await w.hosts.setHardware(PC, hardware('Dell Inc.', 'OptiPlex 7090', [{ serial: 'BIG', size: 4 * MiB }, { serial: 'SMALL', size: MiB }]));
    const p = await c.previewDeploy(TEST_OPERATOR, PC, 'golden', { version: 1, diskSerial: 'SMALL' });
    expect(p.versions.map((v) => v.version)).toEqual([2, 1]);
    expect(p.version).toBe(1);
    expect(p.disk.disk?.serial).toBe('SMALL');
    // An imported version has no layout: it cannot shrink, so a smaller disk is too small by the difference.
    expect(p.disk.verdict).toEqual({ kind: 'too-small', shortBytes: MiB, minBytes: 2 * MiB });
    const first = await c.previewDeploy(TEST_OPERATOR, PC, 'golden');
    expect(first.version).toBe(2);
    expect(first.disk).toMatchObject({ disk: { serial: 'BIG' }, verdict: { kind: 'fits' } });
    expect(diskVerdict(3 * MiB, 4 * MiB, 2 * MiB)).toEqual({ kind: 'shrink', minBytes: 2 * MiB });
    expect((await refusal(c.previewDeploy(TEST_OPERATOR, PC, 'golden', { version: 9 }))).status).toBe(404);
  });
});
