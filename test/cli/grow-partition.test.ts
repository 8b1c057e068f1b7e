/**
 * `netclone task deploy MAC --image NAME --grow-partition N` names the partition that grows or
 * shrinks (issue 12). Run in this process on a data directory (no server), so it needs no build.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs, UsageError } from '../../src/cli/args.js';
import { COMMANDS, run } from '../../src/cli/main.js';
import { forgetDatabase } from '../../src/domain/database.js';

const MAC = '52:54:00:00:9b:01';
let dir: string;

/** Runs the CLI in this process: its exit code and what it wrote. */
async function cli(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => ((stdout += String(chunk)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => ((stderr += String(chunk)), true));
  const before = process.exitCode;
  try {
    await run([...argv, '--data', dir]);
    return { code: Number(process.exitCode ?? 0), stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
    process.exitCode = before;
  }
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-grow-partition-'));
  const file = path.join(dir, 'disk.raw');
  await writeFile(file, Buffer.alloc(2 * 1024 * 1024, 0x33));
  const imported = await cli(['image', 'import', 'flat', file]);
  expect(imported.code, imported.stderr).toBe(0);
});

afterAll(async () => {
  forgetDatabase(dir);
  await rm(dir, { recursive: true, force: true });
});

describe('--grow-partition', () => {
  it('is a flag of task deploy with a value, and no flag of task capture', () => {
    const parsed = parseArgs([MAC, '--image', 'flat', '--grow-partition', '3'], COMMANDS['task deploy']);
    expect(parsed).toEqual({ positionals: [MAC], flags: { image: 'flat', 'grow-partition': '3' } });
    expect(parseArgs([MAC, '--grow-partition=2'], COMMANDS['task deploy']).flags['grow-partition']).toBe('2');
    expect(() => parseArgs([MAC, '--image', 'flat', '--grow-partition'], COMMANDS['task deploy'])).toThrow(new UsageError('--grow-partition needs a value'));
    expect(() => parseArgs([MAC, '--image', 'x', '--grow-partition', '3'], COMMANDS['task capture'])).toThrow(/unknown flag --grow-partition/);
  });

  it('reaches the task, which task show prints; a value that is no partition number is refused', async () => {
    const bad = await cli(['task', 'deploy', MAC, '--image', 'flat', '--grow-partition', 'C:']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/--grow-partition takes the partition's number in the partition table \(1, 2, …\), not "C:"/);

    const created = await cli(['task', 'deploy', MAC, '--image', 'flat', '--grow-partition', '2', '--transport', 'chunks', '--json']);
    expect(created.code, created.stderr).toBe(0);
    const task = JSON.parse(created.stdout) as { id: string; mainPartition?: number };
    expect(task.mainPartition).toBe(2);
    const shown = await cli(['task', 'show', task.id]);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toContain('partition that grows or shrinks: 2\n');
  });
});
