import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { run } from './helpers.js';

const SCRIPT = path.resolve(import.meta.dirname, '../../../boot/setup-loaders.sh');

describe('boot/setup-loaders.sh', () => {
  let dest: string;
  beforeAll(async () => {
    dest = await mkdtemp(path.join(tmpdir(), 'nctftp-loaders-'));
  });
  afterAll(async () => {
    await rm(dest, { recursive: true, force: true });
    await rm(`${dest}.manifest.txt`, { force: true });
  });

  it('copies the three iPXE loaders and the signed shim and GRUB byte-exact from their packages', async () => {
    const r = await run('bash', [SCRIPT, dest]);
    expect(r.code, r.stderr).toBe(0);
    // Only loaders in the folder TFTP serves; the stamp netclone serve checks them by sits beside it.
    expect((await readdir(dest)).sort()).toEqual(['grubx64.efi', 'ipxe.efi', 'shimx64.efi', 'snponly.efi', 'undionly.kpxe']);
    for (const f of ['ipxe.efi', 'snponly.efi', 'undionly.kpxe']) {
      expect((await readFile(path.join(dest, f))).equals(await readFile(path.join('/usr/lib/ipxe', f))), f).toBe(true);
    }
    // shim loads grubx64.efi from its own directory: Debian's network GRUB goes under that name.
    expect((await readFile(path.join(dest, 'shimx64.efi'))).equals(await readFile('/usr/lib/shim/shimx64.efi.signed'))).toBe(true);
    expect((await readFile(path.join(dest, 'grubx64.efi'))).equals(await readFile('/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed'))).toBe(true);
    expect(await readFile(`${dest}.manifest.txt`, 'utf8')).toMatch(/^netclone-version: \S+\nsources: sha256:[0-9a-f]{64}\n/m);
  });

  it('tells the user to apt-get install the package when it is missing', async () => {
    const r = await run('bash', [SCRIPT, path.join(dest, 'never')], { env: { ...process.env, NETCLONE_IPXE_PACKAGE: 'nctftp-no-such-package' } });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/apt-get install nctftp-no-such-package/);
  });

  it('names the shim package when the signed chain is missing', async () => {
    const r = await run('bash', [SCRIPT, path.join(dest, 'never')], { env: { ...process.env, NETCLONE_SHIM_PACKAGE: 'nctftp-no-shim' } });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/package 'nctftp-no-shim' is not installed; it provides the Microsoft-signed shim/);
    expect(r.stderr).toMatch(/apt-get install ipxe nctftp-no-shim grub-efi-amd64-signed/);
  });
});
