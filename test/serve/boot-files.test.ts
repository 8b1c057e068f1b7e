/**
 * The startup check of the files PCs boot from (src/serve/boot-files.ts): missing loaders, a
 * missing client, stamps from another version or other sources, and all in place. The stamps the
 * shell scripts write must be the ones the server computes, or every build would look outdated.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  bootFixes, checkBootFiles, CLIENT_FILES, CLIENT_SOURCES, expectedStamps, LOADER_FILES, LOADER_SOURCES, parseStamp, sourcesHash,
  type BootFixes, type ExpectedStamps,
} from '../../src/serve/boot-files.js';
import { PACKAGE_ROOT } from '../../src/domain/config.js';

const exec = promisify(execFile);

const EXPECTED: ExpectedStamps = { version: '1.2.0', client: `sha256:${'c'.repeat(64)}`, loaders: `sha256:${'l'.repeat(64)}` };
const FIXES: BootFixes = { loaders: 'FIX-LOADERS', client: 'FIX-CLIENT' };

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'nc-bootfiles-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function stamp(version: string, sources: string | null): string {
  return `# test manifest\nnetclone-version: ${version}\n${sources ? `sources: ${sources}\n` : ''}\n[outputs]\n`;
}

async function writeLoaders(names: readonly string[], manifest: string | null = stamp(EXPECTED.version, EXPECTED.loaders)): Promise<void> {
  await mkdir(path.join(dir, 'loaders'), { recursive: true });
  for (const n of names) await writeFile(path.join(dir, 'loaders', n), 'loader');
  if (manifest !== null) await writeFile(path.join(dir, 'loaders.manifest.txt'), manifest);
}

async function writeClient(names: readonly string[], manifest: string | null = stamp(EXPECTED.version, EXPECTED.client)): Promise<void> {
  await mkdir(path.join(dir, 'dist'), { recursive: true });
  for (const n of names) await writeFile(path.join(dir, 'dist', n), 'client');
  if (manifest !== null) await writeFile(path.join(dir, 'dist', 'manifest.txt'), manifest);
}

describe('checkBootFiles', () => {
  it('reports nothing when loaders and client are in place with this server\'s stamps', async () => {
    await writeLoaders(LOADER_FILES);
    await writeClient(CLIENT_FILES);
    expect(await checkBootFiles(dir, EXPECTED, FIXES)).toEqual([]);
  });

  it('reports an empty boot directory as both sets missing, each with its fix', async () => {
    const problems = await checkBootFiles(dir, EXPECTED, FIXES);
    expect(problems.map((p) => [p.files, p.state, p.fix])).toEqual([['loaders', 'missing', 'FIX-LOADERS'], ['client', 'missing', 'FIX-CLIENT']]);
    expect(problems[0].message).toBe(`the network boot loaders are missing from ${path.join(dir, 'loaders')}: undionly.kpxe, snponly.efi, ipxe.efi, shimx64.efi, grubx64.efi; PCs cannot network-boot (TFTP and UEFI HTTP boot have nothing to send them)`);
    expect(problems[1].message).toBe(`the imaging client is missing from ${path.join(dir, 'dist')}: vmlinuz, initrd.img; a PC that starts a capture or deploy stops at "could not load the imaging client"`);
  });

  it('names the one missing loader and leaves a complete client alone', async () => {
    await writeLoaders(['undionly.kpxe', 'ipxe.efi', 'shimx64.efi', 'grubx64.efi']);
    await writeClient(CLIENT_FILES);
    const problems = await checkBootFiles(dir, EXPECTED, FIXES);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ files: 'loaders', state: 'missing', fix: 'FIX-LOADERS' });
    expect(problems[0].message).toContain(': snponly.efi;');
  });

  it('counts an empty initrd (an interrupted copy) as missing', async () => {
    await writeLoaders(LOADER_FILES);
    await writeClient(['vmlinuz']);
    await writeFile(path.join(dir, 'dist', 'initrd.img'), '');
    const problems = await checkBootFiles(dir, EXPECTED, FIXES);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ files: 'client', state: 'missing', fix: 'FIX-CLIENT' });
    expect(problems[0].message).toContain(': initrd.img;');
  });

  it('reports a client built by another netclone version as outdated', async () => {
    await writeLoaders(LOADER_FILES);
    await writeClient(CLIENT_FILES, stamp('1.1.0', EXPECTED.client));
    const problems = await checkBootFiles(dir, EXPECTED, FIXES);
    expect(problems).toEqual([{
      files: 'client', state: 'outdated', fix: 'FIX-CLIENT',
      message: `the imaging client files in ${path.join(dir, 'dist')} are out of date: built by netclone 1.1.0; this server is 1.2.0; PCs may fail mid-capture or mid-deploy where the client and this server disagree`,
    }]);
  });

  it('reports a client built from other sources (same version) as outdated', async () => {
    await writeLoaders(LOADER_FILES);
    await writeClient(CLIENT_FILES, stamp(EXPECTED.version, `sha256:${'0'.repeat(64)}`));
    const problems = await checkBootFiles(dir, EXPECTED, FIXES);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ files: 'client', state: 'outdated' });
    expect(problems[0].message).toContain("built from sources other than this server's boot/build.sh and boot/client");
  });

  it('reports a client manifest without a stamp (built before stamps) and a client without a manifest as outdated', async () => {
    await writeLoaders(LOADER_FILES);
    await writeClient(CLIENT_FILES, '# netclone thin client build manifest\nkernel-version: 6.1.0-57-amd64\n');
    let problems = await checkBootFiles(dir, EXPECTED, FIXES);
    expect(problems).toHaveLength(1);
    expect(problems[0].message).toContain('their manifest.txt has no netclone stamp');
    await rm(path.join(dir, 'dist', 'manifest.txt'));
    problems = await checkBootFiles(dir, EXPECTED, FIXES);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ files: 'client', state: 'outdated' });
    expect(problems[0].message).toContain('no manifest.txt says which netclone made them');
  });

  it('reports loaders set up by another version, or without a manifest, as outdated', async () => {
    await writeLoaders(LOADER_FILES, stamp('1.3.0', EXPECTED.loaders));
    await writeClient(CLIENT_FILES);
    let problems = await checkBootFiles(dir, EXPECTED, FIXES);
    expect(problems).toEqual([{
      files: 'loaders', state: 'outdated', fix: 'FIX-LOADERS',
      message: `the iPXE loaders in ${path.join(dir, 'loaders')} are out of date: set up by netclone 1.3.0; this server is 1.2.0`,
    }]);
    await rm(path.join(dir, 'loaders.manifest.txt'));
    problems = await checkBootFiles(dir, EXPECTED, FIXES);
    expect(problems[0].message).toContain('no manifest.txt says which netclone made them');
  });

  it('compares versions only where this installation has no sources to hash', async () => {
    await writeLoaders(LOADER_FILES, stamp(EXPECTED.version, `sha256:${'1'.repeat(64)}`));
    await writeClient(CLIENT_FILES, stamp(EXPECTED.version, `sha256:${'2'.repeat(64)}`));
    expect(await checkBootFiles(dir, { ...EXPECTED, client: null, loaders: null }, FIXES)).toEqual([]);
  });
});

describe('stamps', () => {
  it('reads the stamp lines of a manifest', () => {
    expect(parseStamp(stamp('0.1.0', `sha256:${'a'.repeat(64)}`))).toEqual({ version: '0.1.0', sources: `sha256:${'a'.repeat(64)}` });
    expect(parseStamp('kernel-version: 6.1\n')).toEqual({ version: null, sources: null });
  });

  it('hashes sources as the scripts do (find | sort | sha256sum | sha256sum), skipping documentation', async () => {
    await mkdir(path.join(dir, 'boot', 'client', 'lib'), { recursive: true });
    await writeFile(path.join(dir, 'boot', 'build.sh'), 'echo build\n');
    await writeFile(path.join(dir, 'boot', 'client', 'init'), '#!/bin/sh\n');
    await writeFile(path.join(dir, 'boot', 'client', 'lib', 'a.sh'), 'a\n');
    await writeFile(path.join(dir, 'boot', 'client', 'lib', 'B.sh'), 'b\n');
    await writeFile(path.join(dir, 'boot', 'client', 'README.md'), 'docs\n');
    for (const f of ['src/agent/main.ts', 'src/imaging/chunk-format.ts', 'src/imaging/disk-layout.ts', 'src/imaging/partitions.ts', 'src/imaging/layout-plan.ts',
      'src/imaging/partition-write.ts', 'src/imaging/domain-map.ts', 'src/transport/chunk-wire.ts', 'src/lib/worker.ts', 'package-lock.json']) {
      await mkdir(path.dirname(path.join(dir, f)), { recursive: true });
      await writeFile(path.join(dir, f), `${f}\n`);
    }
    const { stdout } = await exec('bash', ['-c', `find ${CLIENT_SOURCES.join(' ')} -type f ! -name '*.md' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1`], { cwd: dir });
    const before = await sourcesHash(dir, CLIENT_SOURCES);
    expect(before).toBe(`sha256:${stdout.trim()}`);
    await writeFile(path.join(dir, 'boot', 'client', 'README.md'), 'other docs\n');
    expect(await sourcesHash(dir, CLIENT_SOURCES)).toBe(before);
    await writeFile(path.join(dir, 'boot', 'client', 'lib', 'a.sh'), 'changed\n');
    expect(await sourcesHash(dir, CLIENT_SOURCES)).not.toBe(before);
    expect(await sourcesHash(dir, ['boot/no-such-file'])).toBeNull();
  });

  it('is what boot/build.sh and boot/setup-loaders.sh stamp (--print-stamp)', async () => {
    const expected = await expectedStamps(PACKAGE_ROOT);
    const client = await exec('bash', [path.join(PACKAGE_ROOT, 'boot', 'build.sh'), '--print-stamp']);
    expect(parseStamp(client.stdout)).toEqual({ version: expected.version, sources: expected.client });
    const loaders = await exec('bash', [path.join(PACKAGE_ROOT, 'boot', 'setup-loaders.sh'), '--print-stamp']);
    expect(parseStamp(loaders.stdout)).toEqual({ version: expected.version, sources: expected.loaders });
    expect(expected.client).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(expected.loaders).toBe(await sourcesHash(PACKAGE_ROOT, LOADER_SOURCES));
  });
});

describe('bootFixes', () => {
  it('gives the npm scripts for the checkout\'s own boot directory', () => {
    expect(bootFixes('/opt/netclone/boot', '/opt/netclone')).toEqual({ loaders: 'cd /opt/netclone && npm run setup:boot', client: 'cd /opt/netclone && npm run build:client' });
  });

  it('says where to copy to for a boot directory elsewhere', () => {
    const fixes = bootFixes('/srv/boot', '/opt/netclone');
    expect(fixes.loaders).toBe('bash /opt/netclone/boot/setup-loaders.sh /srv/boot/loaders');
    expect(fixes.client).toBe('cd /opt/netclone && npm run build:client && mkdir -p /srv/boot/dist && cp boot/dist/vmlinuz boot/dist/initrd.img boot/dist/manifest.txt /srv/boot/dist/');
  });
});
