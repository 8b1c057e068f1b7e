/**
 * The command layer: every command passes the one authorisation hook, a technician logged in at
 * a PC acts on that PC only, and the CLI's by-name form and the typed calls give the same answers
 * (validation, busy checks) because they are the same code.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { COMMAND_NAMES, CommandError, Commands, type Actor, type CommandName } from '../../src/domain/commands.js';
import { runCommand } from '../../src/domain/command-table.js';
import { technicianAt } from '../../src/domain/pc-menu.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { openTestDomain, type TestDomain } from '../lib/domain.js';

const PC_A = '52:54:00:00:0a:01';
const PC_B = '52:54:00:00:0b:02';
const MiB = 1024 * 1024;

interface World extends TestDomain {
  commands(authorize?: ConstructorParameters<typeof Commands>[0]['authorize']): Commands;
}

let w: World;

beforeEach(async () => {
  const d = await openTestDomain('netclone-commands-');
  const nbd = { createUrl: async () => ({ uri: 'nbd://x/y', exportName: 'y', expiresAt: new Date().toISOString() }) };
  w = { ...d, commands: (authorize) => new Commands({ ...d, nbd: () => nbd, authorize }) };
  const disk = Buffer.alloc(2 * MiB);
  disk.fill(7, 0, MiB);
  await w.commands().importImage(TEST_OPERATOR, 'golden', Readable.from([disk]), disk.length, 'test', () => undefined);
});

afterEach(async () => {
  await w.close();
});

async function status(p: Promise<unknown> | (() => unknown)): Promise<number | 'ok'> {
  try {
    await (typeof p === 'function' ? p() : p);
    return 'ok';
  } catch (err) {
    const s = (err as { status?: unknown }).status;
    if (err instanceof CommandError || (err instanceof Error && typeof s === 'number')) return s as number;
    throw err;
  }
}

describe('the authorisation hook', () => {
  it('is asked before every command, with its name and target, and a refusal changes nothing', async () => {
    const asked: Array<{ command: CommandName; mac?: string; image?: string }> = [];
    const c = w.commands((_actor, command, target) => {
      asked.push({ command, ...target });
      return 'not today';
    });
    const a = TEST_OPERATOR;
    const technician = technicianAt(PC_A, '10.0.0.5', 'tech', 'client menu');
    const sink = { begin: () => undefined, write: async () => undefined };
    const calls: Array<() => unknown> = [
      () => c.listImages(a), () => c.showImage(a, 'golden'), () => c.verifyImage(a, 'golden'), () => c.removeImage(a, 'golden'),
      () => c.removeVersion(a, 'golden', 1), () => c.renameImage(a, 'golden', 'other'), () => c.gc(a),
      () => c.imageUrl(a, { image: 'golden', write: false }), () => c.importImage(a, 'new', Readable.from([Buffer.alloc(512)]), 512, 't', () => undefined),
      () => c.exportImage(a, 'golden', sink), () => c.addHost(a, PC_A), () => c.listHosts(a), () => c.updateHost(a, PC_A, { name: 'x' }),
      () => c.removeHost(a, PC_A), () => c.registerHost(a, PC_A), () => c.startTask(a, { kind: 'capture', mac: PC_A, image: 'n' }),
      () => c.listTasks(a), () => c.showTask(a, 'id'), () => c.cancelTask(a, 'id'), () => c.startAtPc(technician),
      () => c.setAdminPassword(a, 'long enough password'), () => c.createApiToken(a, 't'), () => c.listApiTokens(a), () => c.revokeApiToken(a, 't'),
      () => c.pruneImage(a, 'golden'), () => c.imageRetention(a, 'golden'), () => c.protectVersion(a, 'golden', 1, true),
      () => c.protectVersion(a, 'golden', 1, false), () => c.noteVersion(a, 'golden', 1, 'n'),
      () => c.setHostGroup(a, PC_A, 'Lab'), () => c.wakeHost(a, PC_A), () => c.listGroups(a), () => c.wakeGroup(a, 'Lab'),
      () => c.groupTask(a, 'Lab', { kind: 'capture', image: 'n' }), () => c.addSchedule(a, { mac: PC_A, capture: 'n', daily: '02:00' }),
      () => c.listSchedules(a), () => c.removeSchedule(a, 'id'),
    ];
    for (const call of calls) expect(await status(call)).toBe(403);
    expect(new Set(asked.map((x) => x.command))).toEqual(new Set(COMMAND_NAMES));
    expect(asked.find((x) => x.command === 'task.create')).toEqual({ command: 'task.create', mac: PC_A, image: 'n' });
    expect(w.hosts.list()).toEqual([]);
    expect(w.tasks.list()).toEqual([]);
    expect((await w.store.list()).map((i) => i.name)).toEqual(['golden']);
  });

  it('lets a technician at a PC register it, start a task for it and list images, and nothing else', async () => {
    const c = w.commands();
    const tech: Actor = technicianAt(PC_A, '10.0.0.5', 'tech', 'boot menu');
    expect(await status(c.registerHost(tech, PC_A))).toBe('ok');
    expect(await c.imageNames(tech)).toEqual(['golden']);
    // Another PC, from this PC's login: refused before anything is looked at.
    expect(await status(c.registerHost(tech, PC_B))).toBe(403);
    expect(await status(c.startTask(tech, { kind: 'deploy', mac: PC_B, image: 'golden' }))).toBe(403);
    // What the menus never offer.
    for (const call of [
      () => c.removeImage(tech, 'golden'), () => c.renameImage(tech, 'golden', 'x'), () => c.gc(tech), () => c.removeHost(tech, PC_A),
      () => c.cancelTask(tech, 'x'), () => c.createApiToken(tech, 'x'), () => c.setAdminPassword(tech, 'long enough password'),
      () => c.imageUrl(tech, { image: 'golden', write: false }), () => c.updateHost(tech, PC_A, { assignedImage: 'golden' }),
    ]) expect(await status(call)).toBe(403);
    expect(w.hosts.get(PC_B)).toBeUndefined();
    expect(w.tasks.list()).toEqual([]);
    // Its own PC: the task gets a token bound to the address the technician sent from.
    const started = await c.startAtPc(technicianAt(PC_A, '10.0.0.5', 'tech', 'boot menu'), { kind: 'deploy', image: 'golden' });
    expect(started.task).toMatchObject({ mac: PC_A, kind: 'deploy', image: 'golden', state: 'booting' });
    expect(w.tasks.byToken(started.token)?.id).toBe(started.task.id);
  });

  it('names a capture started at a PC after the PC', async () => {
    const c = w.commands();
    await w.hosts.add(PC_A, 'Front desk');
    const { task } = await c.startAtPc(technicianAt(PC_A, '10.0.0.5', 'tech', 'client menu'), { kind: 'capture' });
    expect(task.image).toBe('Front-desk');
  });
});

describe('one set of rules for every caller', () => {
  it('answers bad input the same through the by-name form (CLI, control socket) and the typed call (API, pages)', async () => {
    const c = w.commands();
    const cases: Array<[string, Record<string, unknown>, () => Promise<unknown>, number]> = [
      ['task.create', { kind: 'deploy', mac: 'not-a-mac', image: 'golden' }, () => c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: 'not-a-mac', image: 'golden' }), 400],
      ['task.create', { kind: 'capture', mac: PC_A, image: '../etc' }, () => c.startTask(TEST_OPERATOR, { kind: 'capture', mac: PC_A, image: '../etc' }), 400],
      ['task.create', { kind: 'deploy', mac: PC_A, image: 'ghost' }, () => c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC_A, image: 'ghost' }), 404],
      ['image.rm', { name: 'ghost' }, () => c.removeImage(TEST_OPERATOR, 'ghost'), 404],
      ['image.show', { name: 'a/b' }, () => c.showImage(TEST_OPERATOR, 'a/b'), 400],
    ];
    for (const [name, args, typed, expected] of cases) {
      const byName = await status(runCommand(c, TEST_OPERATOR, name, args, () => undefined));
      expect(byName, `${name} ${JSON.stringify(args)}`).toBe(expected);
      expect(await status(typed()), `${name} typed`).toBe(expected);
    }
    // A refused deploy registers nothing.
    expect(w.hosts.get(PC_A)).toBeUndefined();
  });

  it('refuses to remove or rename an image a task uses, and to delete a version a deploy reads, whoever asks', async () => {
    const c = w.commands();
    await c.startTask(TEST_OPERATOR, { kind: 'deploy', mac: PC_A, image: 'golden' });
    for (const actor of [TEST_OPERATOR, { kind: 'operator', name: 'admin', via: 'admin page' } as const]) {
      expect(await status(c.removeImage(actor, 'golden'))).toBe(409);
      expect(await status(c.renameImage(actor, 'golden', 'silver'))).toBe(409);
      expect(await status(c.removeVersion(actor, 'golden', 1))).toBe(409);
    }
    expect(await status(runCommand(c, TEST_OPERATOR, 'image.rm', { name: 'golden' }, () => undefined))).toBe(409);
    expect((await w.store.list()).map((i) => i.name)).toEqual(['golden']);
    // Once the task ends the image is free again.
    await c.cancelTask(TEST_OPERATOR, w.tasks.list()[0].id);
    await c.renameImage(TEST_OPERATOR, 'golden', 'silver');
    expect((await w.store.list()).map((i) => i.name)).toEqual(['silver']);
  });

  it('queues a task for an unknown PC and registers it, from any channel', async () => {
    const c = w.commands();
    const task = await runCommand(c, TEST_OPERATOR, 'task.create', { kind: 'deploy', mac: PC_B, image: 'golden' }, () => undefined);
    expect(task).toMatchObject({ mac: PC_B, state: 'queued' });
    expect(w.hosts.get(PC_B)?.registered).toBe(true);
  });
});
