/**
 * Retention at the command layer (issue 13): prune by flags, by the stored policy or by
 * keep-versions; protected, in-use and newest versions stay; gc follows; the by-name form the CLI
 * and control socket use; and the policy applied when a capture task ends done.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { CommandError, Commands } from '../../src/domain/commands.js';
import { runCommand } from '../../src/domain/command-table.js';
import { pruneAfterCaptures } from '../../src/domain/retention-after-capture.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { openTestDomain, type TestDomain } from '../lib/domain.js';

const PC = '52:54:00:00:0a:01';
const KiB = 1024;

let d: TestDomain;
let c: Commands;

/** A version whose first MiB is unique to it (so pruning it frees a chunk). */
async function capture(image: string, seed: number): Promise<void> {
  const disk = Buffer.alloc(2 * KiB * KiB);
  disk.fill(seed, 0, KiB * KiB);
  disk.fill(200, KiB * KiB);
  await c.importImage(TEST_OPERATOR, image, Readable.from([disk]), disk.length, 'test', () => undefined);
}

async function statusOf(p: Promise<unknown>): Promise<number | 'ok'> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    if (e instanceof CommandError) return e.status;
    throw e;
  }
}

beforeEach(async () => {
  d = await openTestDomain('netclone-retention-');
  // keep-versions 3 is the test config's default; retention decides beyond it.
  c = new Commands({ ...d, nbd: () => null });
});

afterEach(async () => {
  await d.close();
});

describe('image.prune', () => {
  it('a dry run says what would go and removes nothing', async () => {
    for (let s = 1; s <= 3; s++) await capture('pc', s);
    const r = await c.pruneImage(TEST_OPERATOR, 'pc', { policy: { keepLast: 1 }, dryRun: true });
    expect(r.decisions.map((x) => [x.version, x.keep])).toEqual([[3, true], [2, false], [1, false]]);
    expect(r.removed).toEqual([]);
    expect(await d.store.versions('pc')).toEqual([1, 2, 3]);
  });

  it('keeps protected versions, the version an active deploy names, the newest; removes the rest, runs gc and records an event', async () => {
    for (let s = 1; s <= 3; s++) await capture('pc', s);
    await d.store.setRetention('pc', { keepLast: 1 }); // from now on the commit leaves pruning to the policy
    await capture('pc', 4);
    await capture('pc', 5);
    expect(await d.store.versions('pc')).toEqual([1, 2, 3, 4, 5]);
    await c.protectVersion(TEST_OPERATOR, 'pc', 1, true);
    const deploy = await d.tasks.create({ kind: 'deploy', mac: PC, image: 'pc', version: 3 });
    const r = await c.pruneImage(TEST_OPERATOR, 'pc');
    expect(r.policySource).toBe('stored');
    expect(r.removed).toEqual([2, 4]);
    expect(await d.store.versions('pc')).toEqual([1, 3, 5]);
    const why = new Map(r.decisions.map((x) => [x.version, x.reasons.map((y) => y.text)]));
    expect(why.get(1)).toEqual(['protected']);
    expect(why.get(3)).toEqual([`in use by deploy task ${deploy.id} for ${PC}`]);
    expect(why.get(5)).toEqual(['newest version', 'last 1']);
    expect(r.gc?.removedChunks).toBe(2);
    expect(d.db.data.events.some((e) => e.message.includes('image pc: retention (keep-last 1) removed versions 2, 4'))).toBe(true);
  });

  it('an active deploy without a version keeps the newest, and a capture in progress keeps it as its dedup base', async () => {
    await capture('pc', 1);
    await capture('pc', 2);
    const deploy = await d.tasks.create({ kind: 'deploy', mac: PC, image: 'pc' });
    const r = await c.pruneImage(TEST_OPERATOR, 'pc', { policy: { keepLast: 1 }, dryRun: true });
    expect(r.decisions[0].reasons.map((x) => x.text)).toEqual(['newest version', `in use by deploy task ${deploy.id} for ${PC}`, 'last 1']);
    await d.tasks.cancel(deploy.id);
    const cap = await d.tasks.create({ kind: 'capture', mac: PC, image: 'pc' });
    const r2 = await c.pruneImage(TEST_OPERATOR, 'pc', { policy: { keepLast: 1 }, dryRun: true });
    expect(r2.decisions[0].reasons.map((x) => x.text)).toContain(`in use by capture task ${cap.id} for ${PC} (its dedup base)`);
  });

  it('without flags or a stored policy, keep-versions is the policy', async () => {
    for (let s = 1; s <= 3; s++) await capture('pc', s);
    const r = await c.pruneImage(TEST_OPERATOR, 'pc', { dryRun: true });
    expect(r.policySource).toBe('keep-versions');
    expect(r.policy).toEqual({ keepLast: d.config.keepVersions });
  });
});

describe('by name, as the CLI and the control socket send them', () => {
  it('image.retention stores and reads the policy; image.prune takes the keep flags as text; bad input is 400, a missing version 404', async () => {
    await capture('pc', 1);
    await capture('pc', 2);
    const run = (name: string, args: Record<string, unknown>): Promise<unknown> => runCommand(c, TEST_OPERATOR, name, args, () => undefined);
    expect(await run('image.retention', { name: 'pc', 'keep-daily': '7', 'keep-last': '2' })).toEqual({ image: 'pc', retention: { keepLast: 2, keepDaily: 7 } });
    expect(await run('image.retention', { name: 'pc' })).toEqual({ image: 'pc', retention: { keepLast: 2, keepDaily: 7 } });
    expect(await run('image.retention', { name: 'pc', clear: true })).toEqual({ image: 'pc', retention: null });
    await run('image.retention', { name: 'pc', 'keep-last': '2' });
    expect(await run('image.retention', { name: 'pc', 'keep-last': '0' })).toEqual({ image: 'pc', retention: null });
    const dry = (await run('image.prune', { name: 'pc', 'keep-last': '1', 'dry-run': true })) as { removed: number[]; decisions: Array<{ keep: boolean }> };
    expect(dry.decisions.map((x) => x.keep)).toEqual([true, false]);
    expect(await statusOf(run('image.prune', { name: 'pc', 'keep-last': 'many' }))).toBe(400);
    expect(await statusOf(run('image.retention', { name: 'pc', 'keep-daily': '-1' }))).toBe(400);
    expect(await statusOf(run('image.protect', { name: 'pc', version: '0' }))).toBe(400);
    expect(await statusOf(run('image.protect', { name: 'pc', version: '9' }))).toBe(404);
    expect(await statusOf(run('image.prune', { name: 'nope' }))).toBe(404);
    expect(await run('image.protect', { name: 'pc', version: '1' })).toEqual({ image: 'pc', version: 1, protected: true, note: '' });
    expect(await statusOf(c.removeVersion(TEST_OPERATOR, 'pc', 1))).toBe(409);
    expect(await run('image.note', { name: 'pc', version: 2, note: 'after the driver update' })).toEqual({ image: 'pc', version: 2, protected: false, note: 'after the driver update' });
    const shown = await c.showImage(TEST_OPERATOR, 'pc');
    expect(shown.versions.map((v) => [v.version, v.protected, v.note])).toEqual([[2, false, 'after the driver update'], [1, true, '']]);
    expect(await run('image.unprotect', { name: 'pc', version: '1' })).toEqual({ image: 'pc', version: 1, protected: false, note: '' });
    expect(await statusOf(run('image.note', { name: 'pc', version: 2, note: 'x'.repeat(501) }))).toBe(400);
  });
});

describe('after a capture', () => {
  it('the stored policy is applied when a capture task ends done, and not for a deploy or a failed capture', async () => {
    const sub = pruneAfterCaptures({ tasks: d.tasks, retention: c.retention, store: d.store, events: d.events, logger: d.logger });
    try {
      for (let s = 1; s <= 3; s++) await capture('pc', s);
      await d.store.setRetention('pc', { keepLast: 1 });
      const finish = async (kind: 'capture' | 'deploy', ok: boolean): Promise<void> => {
        const t = await d.tasks.create({ kind, mac: PC, image: 'pc' });
        await d.tasks.beginBoot(t, '10.0.0.9');
        await d.tasks.markRunning(t, { name: 'sda', size: 2 * KiB * KiB, logicalSectorSize: 512, serial: 's' }, '10.0.0.9', 2 * KiB * KiB);
        if (ok) await d.tasks.succeed(t, { version: null, digest: null, bytesOnWire: 0 }, 'done');
        else await d.tasks.fail(t, 'disk on fire');
        await sub.settled();
      };
      await finish('deploy', true);
      await finish('capture', false);
      expect(await d.store.versions('pc')).toEqual([1, 2, 3]);
      await finish('capture', true);
      expect(await d.store.versions('pc')).toEqual([3]);
      expect(d.db.data.events.some((e) => e.message.startsWith('image pc: retention (keep-last 1) removed versions 1, 2'))).toBe(true);
    } finally {
      await sub.stop();
    }
  });
});
