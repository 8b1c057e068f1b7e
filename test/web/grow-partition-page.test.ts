/** The host page's deploy form may name the partition that grows or shrinks (issue 12); the task page shows it. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { login, makeHarness, type Harness } from './helpers.js';

let h: Harness;
let agent: Awaited<ReturnType<typeof login>>['agent'];
let csrf: string;

const MAC = '52:54:00:00:9c:01';

beforeAll(async () => {
  h = await makeHarness({ images: ['win11'] });
  ({ agent, csrf } = await login(h.app));
  await h.ctx.hosts.register(MAC);
});
afterAll(async () => {
  await h.close();
});

describe('the deploy form', () => {
  it('offers the partition to resize, defaulting to the largest', async () => {
    const page = await agent.get(`/hosts/${MAC}`).expect(200);
    expect(page.text).toMatch(/Partition to resize \(default: the largest\) <input name="mainPartition" type="number" min="1"/);
  });

  it('passes a number to the task, which the task page shows, and refuses what is no partition number', async () => {
    const bad = await agent.post(`/hosts/${MAC}/deploy`).type('form').send({ _csrf: csrf, image: 'win11', mainPartition: 'C:' });
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('its number in the partition table');
    expect(h.ctx.tasks.activeFor(MAC)).toBeUndefined();

    await agent.post(`/hosts/${MAC}/deploy`).type('form').send({ _csrf: csrf, image: 'win11', mainPartition: ' 2 ' }).expect(303);
    const task = h.ctx.tasks.activeFor(MAC);
    expect(task).toMatchObject({ kind: 'deploy', image: 'win11', mainPartition: 2 });
    if (!task) throw new Error('no task');
    expect((await agent.get(`/tasks/${task.id}`).expect(200)).text).toMatch(/<dt>Partition to resize<\/dt><dd>2<\/dd>/);
    await h.ctx.tasks.cancel(task.id);

    await agent.post(`/hosts/${MAC}/deploy`).type('form').send({ _csrf: csrf, image: 'win11', mainPartition: '' }).expect(303);
    const plain = h.ctx.tasks.activeFor(MAC);
    expect(plain && 'mainPartition' in plain).toBe(false);
    if (plain) {
      expect((await agent.get(`/tasks/${plain.id}`).expect(200)).text).not.toContain('Partition to resize');
      await h.ctx.tasks.cancel(plain.id);
    }
  });
});
