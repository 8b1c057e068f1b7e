/**
 * `netclone image prune|retention|protect|unprotect|note` (issue 13), run in this process on a data
 * directory (no server), so they need no build: human output, --json, and refusals.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { run } from '../../src/cli/main.js';
import { forgetDatabase } from '../../src/domain/database.js';

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
  dir = await mkdtemp(path.join(tmpdir(), 'nc-retention-cli-'));
  for (let v = 1; v <= 3; v++) {
    const file = path.join(dir, `disk${v}.raw`);
    await writeFile(file, Buffer.alloc(2 * 1024 * 1024, 0x30 + v));
    const imported = await cli(['image', 'import', 'office', file]);
    expect(imported.code, imported.stderr).toBe(0);
  }
});

afterAll(async () => {
  forgetDatabase(dir);
  await rm(dir, { recursive: true, force: true });
});

describe('netclone image prune / retention / protect', () => {
  it('protect, note, a dry run that says what would go, the prune that removes it, and image show with notes and protect flags', async () => {
    const p = await cli(['image', 'protect', 'office', '1']);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout).toBe('image office version 1 protected: no prune removes it\n');
    expect((await cli(['image', 'note', 'office', '2', 'before', 'the', 'update'])).stdout).toBe('image office version 2: note saved\n');

    const dry = await cli(['image', 'prune', 'office', '--keep-last', '1', '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/^image office: keep-last 1 \(the keep flags given\), dry run: nothing removed\n/);
    expect(dry.stdout).toMatch(/ v3 .* keep +newest version, last 1\n/);
    expect(dry.stdout).toMatch(/ v2 .* would remove\n/);
    expect(dry.stdout).toMatch(/ v1 .* keep +protected\n/);
    expect(dry.stdout).toContain('1 version would be removed; run without --dry-run to remove them');

    const json = JSON.parse((await cli(['image', 'prune', 'office', '--keep-last', '1', '--json'])).stdout) as { removed: number[]; gc: { removedChunks: number } };
    expect(json.removed).toEqual([2]);
    expect(json.gc.removedChunks).toBe(1);
    const shown = JSON.parse((await cli(['image', 'show', 'office', '--json'])).stdout) as { versions: Array<{ version: number; protected: boolean }> };
    expect(shown.versions.map((v) => [v.version, v.protected])).toEqual([[3, false], [1, true]]);
    await cli(['image', 'note', 'office', '3', 'golden', 'master']);
    const text = (await cli(['image', 'show', 'office'])).stdout;
    expect(text).toMatch(/^ +3 .* changed .*\n +note: golden master\n +1 .*PROTECTED\n/m);
  });

  it('retention stores the policy, shows it, and clears it; bad counts, a missing VERSION and an unknown version are refused', async () => {
    expect((await cli(['image', 'retention', 'office', '--keep-daily', '7', '--keep-weekly', '4'])).stdout)
      .toBe('image office: retention keep-daily 7, keep-weekly 4; applied after each capture and by "netclone image prune office"\n');
    expect(JSON.parse((await cli(['image', 'retention', 'office', '--json'])).stdout)).toEqual({ image: 'office', retention: { keepDaily: 7, keepWeekly: 4 } });
    expect((await cli(['image', 'retention', 'office', '--clear'])).stdout).toContain('no retention policy');
    const bad = await cli(['image', 'prune', 'office', '--keep-daily', 'seven']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('--keep-daily takes a whole number, not "seven"');
    const usage = await cli(['image', 'protect', 'office']);
    expect(usage.code).not.toBe(0);
    expect(usage.stderr).toContain('usage: netclone image protect NAME VERSION');
    const missing = await cli(['image', 'unprotect', 'office', '7']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('image office has no version 7');
  });
});
