// The signed chain's files as our TFTP server answers them, over a real TFTP exchange on loopback:
// the bootstrap grub.cfg, the per-PC file (token only for the address DHCP tied to the MAC, as for the
// iPXE script), the imaging client's kernel and initrd, and everything else from the loaders directory.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { booterOptions, policyBooter, serviceFacts } from '../../src/domain/boot-policy.js';
import { resolveConfig } from '../../src/domain/config.js';
import { hashToken } from '../../src/lib/tokens.js';
import { nullLogger } from '../../src/lib/log.js';
import { TftpServer } from '../../src/pxe/tftp/server.js';
import { signedBootFiles } from '../../src/serve/signed-boot.js';
import { openTestDomain, type TestDomain } from '../lib/domain.js';
import { fetchFile } from '../pxe/tftp/helpers.js';

const PC = '52:54:00:5b:00:01';
const OTHER = '52:54:00:5b:00:02';

describe('signed-chain files on the TFTP server', () => {
  let d: TestDomain;
  let bootDir: string;
  let tftp: TftpServer;
  let port: number;
  const text = async (file: string): Promise<string> => {
    const r = await fetchFile({ port, file });
    if (r.error) throw new Error(`${file}: TFTP error ${r.error.code} ${r.error.message}`);
    return r.data.toString('utf8');
  };

  beforeAll(async () => {
    d = await openTestDomain('nc-signed-boot-');
    bootDir = await mkdtemp(path.join(tmpdir(), 'nc-signed-bootdir-'));
    await mkdir(path.join(bootDir, 'loaders'));
    await mkdir(path.join(bootDir, 'dist'));
    await writeFile(path.join(bootDir, 'loaders', 'shimx64.efi'), 'SHIM');
    await writeFile(path.join(bootDir, 'dist', 'vmlinuz'), 'KERNEL');
    await writeFile(path.join(bootDir, 'dist', 'initrd.img'), Buffer.alloc(3 * 1024 * 1024 + 17, 9));
    await writeFile(path.join(bootDir, 'secret.txt'), 'not a boot file');
    const config = resolveConfig({ data: d.dir, 'uefi-boot': 'signed' });
    const booter = policyBooter(serviceFacts(d.hosts, d.tasks), booterOptions(config));
    tftp = new TftpServer({
      root: path.join(bootDir, 'loaders'), port: 0, bindAddress: '127.0.0.1', logger: nullLogger(), busyPollMs: 0,
      virtualFiles: signedBootFiles({
        logger: nullLogger(), booter, hosts: d.hosts, tasks: d.tasks, bootAddresses: d.hosts.bootAddresses,
        httpBase: () => '10.77.0.1:80', bootDir, menuTimeoutSeconds: 5,
      }),
    });
    await tftp.start();
    port = tftp.address().port;
  });

  afterAll(async () => {
    await tftp?.stop();
    await d?.close();
    await rm(bootDir, { recursive: true, force: true });
  });

  it('serves the bootstrap that asks for the PC\'s own file, and the loaders from the loaders directory', async () => {
    expect(await text('grub/grub.cfg')).toContain('configfile $prefix/pc/$net_default_mac');
    expect(await text('/grub/grub.cfg')).toContain('configfile $prefix/pc/$net_default_mac');
    expect(await text('shimx64.efi')).toBe('SHIM');
  });

  it('serves the imaging client\'s kernel and initrd from the boot directory, byte for byte', async () => {
    expect(await text('client/vmlinuz')).toBe('KERNEL');
    const initrd = await fetchFile({ port, file: 'client/initrd.img', options: { blksize: '1024', tsize: '0' } });
    expect(initrd.error).toBeUndefined();
    expect(initrd.data.equals(Buffer.alloc(3 * 1024 * 1024 + 17, 9))).toBe(true);
  });

  it('gives nothing outside the loaders directory but the named client files', async () => {
    for (const file of ['../secret.txt', 'client/../../secret.txt', 'dist/vmlinuz', 'client/manifest.txt', 'grub/x86_64-efi/fs.lst', 'grub/pc/not-a-mac']) {
      const r = await fetchFile({ port, file });
      expect(r.error, file).toBeDefined();
    }
  });

  it('gives a PC with no task the menu, and records the sighting', async () => {
    const cfg = await text(`grub/pc/${PC}`);
    expect(cfg).toContain('set default=local');
    expect(cfg).toContain('netclone.mode=menu');
    expect(cfg).not.toContain('netclone.token');
    expect(d.hosts.get(PC)).toMatchObject({ mac: PC, firmware: 'uefi', ip: '127.0.0.1' });
  });

  it('gives the task token only to the address DHCP tied to the MAC; a stranger gets the login menu and the PC\'s token stands', async () => {
    const task = await d.tasks.create({ kind: 'capture', mac: OTHER, image: 'office', transport: 'chunks' });
    // DHCP saw the PC at another address: this request (from 127.0.0.1) is not the PC's.
    d.hosts.bootAddresses.note(OTHER, '10.77.0.123');
    const stranger = await text(`grub/pc/${OTHER}`);
    expect(stranger).not.toContain('netclone.token');
    expect(stranger).toContain('A capture task waits for this PC');
    expect(d.tasks.require(task.id).state).toBe('queued');

    d.hosts.bootAddresses.note(OTHER, '127.0.0.1');
    const cfg = await text(`grub/pc/${OTHER}`);
    const token = /netclone\.token=([A-Za-z0-9_-]+)/.exec(cfg)?.[1];
    expect(token, cfg).toBeDefined();
    expect(cfg).toContain(`netclone.task=${task.id}`);
    expect(cfg).toContain('linux /client/vmlinuz ');
    const booted = d.tasks.require(task.id);
    expect(booted.state).toBe('booting');
    expect(booted.tokenHash).toBe(hashToken(token as string));
    expect(booted.clientIp).toBe('127.0.0.1');
  });
});
