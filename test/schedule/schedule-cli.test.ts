/** The schedule and group commands as a technician types them (built CLI on a data directory, no server). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cli } from '../cli/processes.js';

const A = '52:54:00:13:c1:01';
const B = '52:54:00:13:c1:02';
let dir: string;

beforeAll(async () => {
  if (!existsSync(path.resolve('dist/cli/main.js'))) throw new Error('run npm run build first (npm test does)');
  dir = await mkdtemp(path.join(tmpdir(), 'nc-sched-cli-'));
  for (const [mac, name] of [[A, 'Front desk'], [B, 'Back office']]) expect((await cli(dir, ['host', 'add', mac, '--name', name])).code).toBe(0);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function ok(args: string[]): Promise<string> {
  const r = await cli(dir, args);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout;
}

describe('netclone host group / group list', () => {
  it('puts hosts in a group, shows it in host list, and --none takes one out', async () => {
    expect(await ok(['host', 'group', A, 'Front office'])).toBe(`${A} is in group "Front office"\n`);
    await ok(['host', 'group', B, 'front office']);
    expect(await ok(['host', 'list'])).toMatch(/GROUP[\s\S]*Front desk\s+Front office/);
    const groups = JSON.parse(await ok(['group', 'list', '--json'])) as Array<{ name: string; hosts: string[] }>;
    expect(groups.map((g) => [g.name, [...g.hosts].sort()])).toEqual([['Front office', [A, B]]]);
    expect(await ok(['host', 'group', B, '--none'])).toBe(`${B} is in no group\n`);
    const bad = await cli(dir, ['host', 'group', A, '!!']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/is not a group name/);
  });
});

describe('netclone schedule add / list / rm', () => {
  it('adds the three kinds the issue names, lists them, and removes one', async () => {
    expect(await ok(['schedule', 'add', '--host', A, '--capture', 'desk', '--daily', '02:00', '--wake'])).toMatch(/^schedule \S+: capture host 52:54:00:13:c1:01 into desk, daily at 02:00, with Wake-on-LAN, then poweroff; next run \d{4}-\d\d-\d\d 02:00\n$/);
    // A group's PCs each capture into their own image: the output says which.
    expect(await ok(['schedule', 'add', '--group', 'Front office', '--capture', 'office', '--weekly', 'mon', '22:30', '--after', 'reboot'])).toContain('capture group "Front office" into office-{host}, weekly');
    await ok(['schedule', 'add', '--host', B, '--capture', 'back', '--cron', '*/30 8-18 * * 1-5']);
    const list = JSON.parse(await ok(['schedule', 'list', '--json'])) as Array<{ id: string; description: string; targetLabel: string; image: string; after: string; wake: boolean }>;
    expect(list.map((s) => [s.targetLabel, s.image, s.description, s.after, s.wake])).toEqual([
      [`host ${A}`, 'desk', 'daily at 02:00', 'poweroff', true],
      ['group "Front office"', 'office', 'weekly on mon at 22:30', 'reboot', false],
      [`host ${B}`, 'back', 'cron */30 8-18 * * 1-5', 'reboot', false],
    ]);
    const text = await ok(['schedule', 'list']);
    expect(text.split('\n')[0]).toMatch(/^ID\s+TARGET\s+IMAGE\s+WHEN\s+WAKE\s+AFTER\s+NEXT RUN\s+LAST RUN$/);
    expect(text).toContain('weekly on mon at 22:30');
    expect(text).toMatch(/group "Front office"\s+office-\{host\}\s+weekly/);
    expect(await ok(['schedule', 'rm', list[1].id])).toBe(`schedule ${list[1].id} removed\n`);
    expect((JSON.parse(await ok(['schedule', 'list', '--json'])) as unknown[]).length).toBe(2);
  });

  it('refuses a schedule without a time, with two, or with a wrong one, and says how to write it', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--host', A, '--capture', 'x'], /exactly one of --daily HH:MM, --weekly DAY HH:MM or --cron/],
      [['--host', A, '--capture', 'x', '--daily', '02:00', '--cron', '0 2 * * *'], /exactly one of/],
      [['--host', A, '--capture', 'x', '--weekly', 'someday', '02:00'], /not a day of the week/],
      [['--host', A, '--capture', 'x', '--weekly', 'mon'], /--weekly takes a day and a time/],
      [['--host', A, '--capture', 'x', '--cron', '0 2 * *'], /five fields/],
      [['--capture', 'x', '--daily', '02:00'], /one host \(--host MAC\) or one group/],
      [['--host', A, '--capture', 'x', '--daily', '02:00', '--after', 'sleep'], /--after must be poweroff or reboot/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(dir, ['schedule', 'add', ...args]);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr).toMatch(message);
    }
    expect((await cli(dir, ['schedule', 'rm', 'nope'])).stderr).toMatch(/no schedule nope/);
  });
});
