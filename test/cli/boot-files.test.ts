/**
 * `netclone serve` says at startup when the files PCs boot from are missing or were not built for
 * it, naming what and the command that fixes it; before, the first sign was a PC that picked
 * "Capture" and printed "could not load the imaging client".
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawnServer, type ServerProcess } from './processes.js';
import { PACKAGE_ROOT } from '../../src/domain/config.js';
import { CLIENT_FILES, expectedStamps, LOADER_FILES, loadersManifest, type ExpectedStamps } from '../../src/serve/boot-files.js';

interface LogLine {
  readonly level: number;
  readonly msg: string;
  readonly bootFiles?: string;
  readonly fix?: string;
}

let dir: string;
let stamps: ExpectedStamps;
let server: ServerProcess | null = null;

beforeAll(async () => {
  if (!existsSync(path.resolve('dist/cli/main.js'))) throw new Error('run npm run build first (npm test does)');
  dir = await mkdtemp(path.join(tmpdir(), 'nc-serve-bootfiles-'));
  stamps = await expectedStamps(PACKAGE_ROOT);
});
afterEach(async () => {
  await server?.stop();
  server = null;
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The boot file lines a server logged before it said it was up. */
async function startupBootLines(name: string, bootDir: string): Promise<LogLine[]> {
  server = spawnServer(path.join(dir, name, 'data'), bootDir);
  await server.up();
  const lines = server.log().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as LogLine);
  const up = lines.findIndex((l) => l.msg === 'netclone is up');
  return lines.slice(0, up).filter((l) => l.bootFiles !== undefined);
}

async function writeSet(bootDir: string, sub: string, names: readonly string[], manifest: string): Promise<void> {
  await mkdir(path.join(bootDir, sub), { recursive: true });
  for (const n of names) await writeFile(path.join(bootDir, sub, n), 'boot file');
  // The loaders' manifest sits beside their folder (TFTP serves the folder); the client's inside dist/.
  await writeFile(sub === 'loaders' ? loadersManifest(path.join(bootDir, sub)) : path.join(bootDir, sub, 'manifest.txt'), manifest);
}

const stamp = (version: string, sources: string | null): string => `netclone-version: ${version}\nsources: ${sources}\n`;

describe('serve at startup', () => {
  it('logs an error naming the missing loaders and client, each with the command that fixes it', async () => {
    const bootDir = path.join(dir, 'empty', 'boot');
    const lines = await startupBootLines('empty', bootDir);
    expect(lines.map((l) => [l.level, l.bootFiles])).toEqual([[50, 'loaders'], [50, 'client']]);
    const loadersFix = `bash ${path.join(PACKAGE_ROOT, 'boot', 'setup-loaders.sh')} ${path.join(bootDir, 'loaders')}`;
    expect(lines[0].msg).toBe(
      `the network boot loaders are missing from ${path.join(bootDir, 'loaders')}: undionly.kpxe, snponly.efi, ipxe.efi, shimx64.efi, grubx64.efi; ` +
      `PCs cannot network-boot (TFTP and UEFI HTTP boot have nothing to send them); to fix it run: ${loadersFix}`,
    );
    expect(lines[0].fix).toBe(loadersFix);
    expect(lines[1].msg).toMatch(/^the imaging client is missing from \S+: vmlinuz, initrd\.img; a PC that starts a capture or deploy stops at "could not load the imaging client"; to fix it run: /);
    expect(lines[1].fix).toContain(`cd ${PACKAGE_ROOT} && npm run build:client`);
  });

  it('logs a warning when the client was built from other sources than this server\'s', async () => {
    const bootDir = path.join(dir, 'stale', 'boot');
    await writeSet(bootDir, 'loaders', LOADER_FILES, stamp(stamps.version, stamps.loaders));
    await writeSet(bootDir, 'dist', CLIENT_FILES, stamp(stamps.version, `sha256:${'0'.repeat(64)}`));
    const lines = await startupBootLines('stale', bootDir);
    expect(lines.map((l) => [l.level, l.bootFiles])).toEqual([[40, 'client']]);
    expect(lines[0].msg).toContain(`the imaging client files in ${path.join(bootDir, 'dist')} are out of date: built from sources other than this server's boot/build.sh and boot/client`);
  });

  it('says nothing about boot files that are in place and current', async () => {
    const bootDir = path.join(dir, 'current', 'boot');
    await writeSet(bootDir, 'loaders', LOADER_FILES, stamp(stamps.version, stamps.loaders));
    await writeSet(bootDir, 'dist', CLIENT_FILES, stamp(stamps.version, stamps.client));
    expect(await startupBootLines('current', bootDir)).toEqual([]);
  });
});
