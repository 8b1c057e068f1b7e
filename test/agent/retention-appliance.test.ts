/**
 * Retention after real captures (issue 13): the imaging agent (a child process) captures through a
 * loopback appliance over the chunk transport, the thin client's result ends the task done, and the
 * server applies the image's stored policy: versions go, a protected one stays, gc frees their chunks,
 * and an event says what was pruned. The version list and the chunk files are checked on disk.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loopbackConfig } from '../lib/appliance-config.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { nullLogger } from '../../src/lib/log.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { noise } from '../lib/prng.js';
import { waitFor } from '../lib/wait.js';
import { postAgentResult, queueChunkTask } from './appliance-tasks.js';
import { runAgentCli } from './disks.js';

const MiB = 1024 * 1024;
const MAC = '52:54:00:00:e1:01';
let dir: string;
let app: RunningAppliance;

async function chunkFiles(): Promise<number> {
  const root = path.join(dir, 'images', 'chunks');
  let n = 0;
  for (const sub of await readdir(root)) n += (await readdir(path.join(root, sub))).length;
  return n;
}

/** A 4 MiB disk: three chunks the same in every version, one chunk of its own. */
function disk(seed: number): Buffer {
  const d = Buffer.alloc(4 * MiB);
  noise(7, 3 * MiB).copy(d, 0);
  noise(100 + seed, MiB).copy(d, 3 * MiB);
  return d;
}

/** One capture as a PC makes it: the task queued, the agent run, the thin client's result posted. */
async function capture(seed: number): Promise<void> {
  const file = path.join(dir, `disk${seed}.raw`);
  await writeFile(file, disk(seed));
  const { token } = await queueChunkTask(app, 'capture', MAC, 'office');
  const r = await runAgentCli(['capture', '--server', `http://127.0.0.1:${app.ports.http}`, '--token', token, '--disk', file, '--disk-name', 'sda']);
  expect(r.code, r.stderr).toBe(0);
  const result = await postAgentResult(app, token, r);
  expect(result.state).toBe('done');
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-retention-'));
  app = await startAppliance(loopbackConfig(dir), nullLogger());
});

afterAll(async () => {
  await app?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('retention after a capture', () => {
  it('the stored policy prunes when a capture task ends done; a protected version stays and gc frees the others\' chunks', async () => {
    for (const seed of [1, 2, 3]) await capture(seed);
    await app.core.commands.protectVersion(TEST_OPERATOR, 'office', 1, true);
    await app.core.commands.imageRetention(TEST_OPERATOR, 'office', { keepLast: 1 });
    expect(await app.core.store.versions('office')).toEqual([1, 2, 3]);
    expect(await chunkFiles()).toBe(3 + 3);
    await capture(4);
    // v2 and v3 go (keep-last 1 keeps v4, v1 is protected); their own chunks with them.
    await waitFor('the retention prune after the capture', async () => (await app.core.store.versions('office')).join() === '1,4', { timeoutMs: 20_000, everyMs: 50 });
    await waitFor('gc after the prune', async () => (await chunkFiles()) === 3 + 2, { timeoutMs: 20_000, everyMs: 50 });
    expect(app.core.db.data.events.map((e) => e.message)).toContainEqual(expect.stringMatching(/^image office: retention \(keep-last 1\) removed versions 2, 3; gc freed 2\.\d MiB in 2 chunks$/));
    const shown = await app.core.commands.showImage(TEST_OPERATOR, 'office');
    expect(shown.versions.map((v) => [v.version, v.protected, v.sourceMac])).toEqual([[4, false, MAC], [1, true, MAC]]);
  });
});
