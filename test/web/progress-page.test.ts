/** The task page counts what the PC's disk sees: disk bytes covered against the disk, and the wire apart. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { login, makeHarness, type Harness } from './helpers.js';
import { coverageWords } from '../../src/web/pages/progress-words.js';
import type { TaskRecord } from '../../src/domain/database.js';

let h: Harness;
let agent: Awaited<ReturnType<typeof login>>['agent'];

const GiB = 1024 ** 3;
const DISK = { name: 'nvme0n1', size: 512 * GiB, logicalSectorSize: 512, serial: 'S1' };

beforeAll(async () => {
  h = await makeHarness({ images: ['win11'] });
  ({ agent } = await login(h.app));
});
afterAll(async () => {
  await h.close();
});

async function running(mac: string, kind: TaskRecord['kind'], transport: 'chunks' | 'nbd', total: number): Promise<TaskRecord> {
  const task = await h.ctx.tasks.create({ kind, mac, image: 'win11', transport });
  await h.ctx.tasks.beginBoot(task, '10.0.0.9');
  await h.ctx.tasks.markRunning(task, DISK, '10.0.0.9', total);
  return task;
}

const text = (s: string): string => s.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ');

describe('task progress on the page', () => {
  it('a chunk capture shows the disk covered (free and reused chunks included) and the wire apart', async () => {
    const task = await running('52:54:00:30:00:01', 'capture', 'chunks', 512 * GiB);
    // The agent went through 256 GiB of the disk; only 2 GiB of it crossed the network.
    h.ctx.tasks.chunkProgress(task, 256 * GiB, { reused: 900, sent: 100, zero: 60_000, total: 131_072 });
    h.ctx.tasks.wireBytes(task, 2 * GiB);
    const frag = text((await agent.get(`/tasks/${task.id}/progress`).expect(200)).text);
    expect(frag).toContain('50 %');
    expect(frag).toContain('covered 256 GiB of 512 GiB of the disk, 2.0 GiB on the wire');
    expect(frag).toContain('90 % of the data already stored');
    // Not the data bytes as if they were the progress.
    expect(frag).not.toMatch(/2\.0 GiB of 512 GiB/);
  });

  it('a chunk deploy says what is already on the disk', async () => {
    const task = await running('52:54:00:30:00:02', 'deploy', 'chunks', 64 * GiB);
    h.ctx.tasks.chunkProgress(task, 16 * GiB, { reused: 10, sent: 30, zero: 5, total: 1000 });
    h.ctx.tasks.wireBytes(task, 512 * 1024 ** 2);
    const frag = text((await agent.get(`/tasks/${task.id}`).expect(200)).text);
    expect(frag).toContain('covered 16.0 GiB of 64.0 GiB of the disk, 512 MiB on the wire');
    expect(frag).toContain('25 % of the data already on the disk');
  });

  it('an NBD capture counts the disk covered; an NBD deploy says it counts the image\'s data', () => {
    const base = { progress: { bytes: GiB, total: 4 * GiB, percent: 25, mbps: 0, etaSeconds: null } };
    expect(coverageWords({ ...base, kind: 'capture', transport: 'nbd' })).toEqual({ covered: 'covered 1.0 GiB of 4.0 GiB of the disk', wire: null, reused: null });
    expect(coverageWords({ ...base, kind: 'deploy', transport: 'nbd' }).covered).toBe("read 1.0 GiB of 4.0 GiB of the image's data");
  });
});
