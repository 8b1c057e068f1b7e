// The signed chain's GRUB configuration, rendered from each boot-policy decision: every file must be
// one GRUB's own parser accepts (grub-script-check from grub-common, the package Debian's signed GRUB
// depends on), carry a task token only for a 'client' decision, and keep what a stranger names (a
// host name, an image name) from breaking out of its quotes.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import {
  grubBootstrap, grubClient, grubLocal, grubMenu, grubUnconfirmed, grubUnfinishedDeploy, macOfGrubPath, renderGrubDecision, type GrubContext,
} from '../../src/pxe/grub-config.js';

const ctx: GrubContext = { httpBase: '10.77.0.1:80', mac: '52:54:00:12:34:56', menuTimeoutSeconds: 7 };
// As newToken() makes them: base64url, so '-' and '_' occur.
const TOKEN = 'Zm9v-YmFy_YmF6-cXV4_cXV1eA-abc';
const TASK = { id: '0b0e6d1c-5a55-4c1e-9f0e-1f2a3b4c5d6e', kind: 'capture' as const, image: 'office-pc' };

/** GRUB's own parser: exits non-zero, naming the line, on a script GRUB would refuse. */
function grubAccepts(script: string): void {
  execFileSync('grub-script-check', [], { input: script, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Lines outside any single-quoted string: what GRUB parses as commands. */
function unquoted(script: string): string {
  return script.replace(/'[^']*'/g, "''");
}

describe('GRUB configuration for the signed chain', () => {
  const hostile = `Front desk'; linux /evil; echo '$x\nboot`;
  const files: Record<string, string> = {
    bootstrap: grubBootstrap(),
    client: grubClient(ctx, TASK, TOKEN),
    local: grubLocal('no task'),
    menu: grubMenu(ctx, { name: 'Reception 2', registered: true, actions: ['capture', 'deploy'] }),
    'menu, unregistered': grubMenu(ctx, { name: '', registered: false, actions: ['capture', 'deploy', 'register'] }),
    unconfirmed: grubUnconfirmed(ctx, { name: hostile, registered: true }, { kind: 'deploy' }),
    'unfinished, active': grubUnfinishedDeploy(ctx, { name: 'pc', registered: true }, { image: 'win11', state: 'running', reason: null }, true),
    'unfinished, failed': grubUnfinishedDeploy(ctx, { name: 'pc', registered: true }, { image: 'win11', state: 'failed', reason: `disk died'; boot` }, false),
  };

  it('renders every decision as a script GRUB\'s parser accepts', () => {
    for (const [name, script] of Object.entries(files)) {
      expect(() => grubAccepts(script), name).not.toThrow();
    }
    // The check can fail: an unterminated block is refused.
    expect(() => grubAccepts('if true; then\necho x\n')).toThrow();
  });

  it('boots the client with the task and its token on the kernel line, the kernel and initrd from this TFTP server', () => {
    const script = files.client;
    expect(script).toContain(`linux /client/vmlinuz console=tty0 console=ttyS0,115200 panic=0 netclone.server=10.77.0.1:80 netclone.task=${TASK.id} netclone.token=${TOKEN}\n`);
    expect(script).toContain('initrd /client/initrd.img\nboot\n');
    // A failed load says why and asks the server again instead of leaving the PC at a GRUB prompt.
    expect(script).toMatch(/could not load the imaging client[^\n]*\nsleep 30\nconfigfile \$prefix\/pc\/\$net_default_mac\n/);
  });

  it('puts a token into no other decision; the login menus start the client in menu mode', () => {
    for (const [name, script] of Object.entries(files)) {
      if (name === 'client') continue;
      expect(script, name).not.toContain('netclone.token');
      expect(script, name).not.toContain('netclone.task=');
    }
    for (const name of ['menu', 'unconfirmed', 'unfinished, failed']) {
      expect(files[name], name).toMatch(/linux \/client\/vmlinuz console=ttyS0,115200 console=tty0 panic=0 netclone.server=10.77.0.1:80 netclone.mode=menu\n/);
    }
    // A deploy the server still counts as running cannot be restarted from the PC.
    expect(files['unfinished, active']).not.toContain('netclone.mode=menu');
  });

  it('times the menu out to the local disk, and never boots an unfinished deploy\'s disk on its own', () => {
    expect(files.menu).toContain('set timeout=7\nset default=local\n');
    expect(files.unconfirmed).toContain('set timeout=7\nset default=local\n');
    expect(files['unfinished, failed']).toContain('set timeout=-1\nset default=again\n');
    expect(files['menu, unregistered']).toContain("This PC is not registered with netclone.");
  });

  it('boots the local disk by chaining its own loader from its own device, Windows Boot Manager first, else back to the firmware', () => {
    const local = files.local;
    const bootmgfw = local.indexOf('search --no-floppy --file --set=nc_disk /EFI/Microsoft/Boot/bootmgfw.efi');
    const removable = local.indexOf('search --no-floppy --file --set=nc_disk /EFI/BOOT/BOOTX64.EFI');
    expect(bootmgfw).toBeGreaterThan(-1);
    expect(removable).toBeGreaterThan(bootmgfw);
    // chainloader takes its device from $root: set it to the disk before each chainloader.
    expect(local).toContain('  set root=$nc_disk\n  chainloader /EFI/Microsoft/Boot/bootmgfw.efi\n  boot\n');
    expect(local).toContain('  set root=$nc_disk\n  chainloader /EFI/BOOT/BOOTX64.EFI\n  boot\n');
    expect(local.trimEnd().endsWith('exit')).toBe(true);
  });

  it('keeps names with quotes, $ and newlines inside their quotes', () => {
    const script = files.unconfirmed;
    expect(unquoted(script)).not.toContain('/evil');
    expect(unquoted(script)).not.toContain('$x');
    // The newline in the name did not start a line of its own.
    expect(script.split('\n').some((l) => l === 'boot')).toBe(false);
    expect(unquoted(files['unfinished, failed'])).not.toContain('; boot');
    expect(files['unfinished, failed']).toContain("'disk died_; boot'");
  });

  it('refuses a kernel argument that could split the kernel line', () => {
    expect(() => grubClient({ ...ctx, httpBase: '10.0.0.1:80 init=/bin/sh' }, TASK, TOKEN)).toThrow(/refusing/);
    expect(() => grubClient(ctx, { ...TASK, id: 'x y' }, TOKEN)).toThrow(/refusing/);
  });

  it('asks for the PC\'s own file by the MAC GRUB booted from, and reads that MAC back from the name', () => {
    expect(files.bootstrap).toContain('configfile $prefix/pc/$net_default_mac\n');
    expect(macOfGrubPath(['grub', 'pc', '52:54:00:AB:cd:EF'])).toBe('52:54:00:ab:cd:ef');
    for (const bad of [['grub', 'pc'], ['grub', 'pc', '52:54:00:ab:cd'], ['grub', 'x', '52:54:00:ab:cd:ef'], ['pc', '52:54:00:ab:cd:ef'], ['grub', 'pc', '52:54:00:ab:cd:ef', 'x']]) {
      expect(macOfGrubPath(bad), bad.join('/')).toBeNull();
    }
  });

  it('renders the local decision the same whichever way the policy reached it', () => {
    expect(renderGrubDecision(ctx, { kind: 'local', method: 'exit', reason: 'r' })).toBe(grubLocal('r'));
    expect(renderGrubDecision(ctx, { kind: 'chain-undionly', loader: 'undionly.kpxe', reason: 'r' })).toBe(grubLocal('r'));
  });
});
