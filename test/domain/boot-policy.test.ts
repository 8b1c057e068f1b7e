import { describe, expect, it } from 'vitest';
import { decideBoot } from '../../src/domain/boot-policy.js';
import { scriptClient, scriptMenu, scriptChainUndionly, scriptLocal, scriptUnconfirmed, scriptDeployChoice, scriptNotice } from '../../src/pxe/ipxe-script.js';
import { BootAddresses } from '../../src/domain/boot-addresses.js';
import { lintIpxe } from '../lib/ipxe-lint.js';
import type { AddressCheck } from '../../src/domain/boot-addresses.js';
import type { HostRecord, TaskRecord } from '../../src/domain/database.js';

const host = (over: Partial<HostRecord> = {}): HostRecord => ({
  mac: '52:54:00:12:34:56', name: '', ip: null, firmware: 'bios', arch: null, vendorClass: null,
  firstSeen: '', lastSeen: '', registered: false, hardware: null, assignedImage: null, localBoot: null,
  efiLoader: 'snponly.efi', ...over,
});
const task = (state: TaskRecord['state']): TaskRecord => ({
  id: 't1', kind: 'capture', mac: '52:54:00:12:34:56', image: 'win11', state, createdAt: '', updatedAt: '',
  startedAt: null, finishedAt: null, reason: null, diskSerial: null, after: 'reboot', tokenHash: '', clientIp: null,
  disk: null, progress: { bytes: 0, total: 0, percent: 0, mbps: 0, etaSeconds: null }, result: null, log: [],
});
const opts = { defaultLocalBoot: 'exit' as const, biosUndionlyHop: true };
const confirmed: AddressCheck = { confirmed: true };
const stranger: AddressCheck = { confirmed: false, why: 'DHCP tied this MAC to 10.0.0.5, but the request came from 10.0.0.66' };

describe('boot policy', () => {
  it('makes a BIOS iPXE ROM hop through undionly once, then never again', () => {
    expect(decideBoot(host(), undefined, { platform: 'pcbios', chip: 'e1000', address: confirmed }, opts).kind).toBe('chain-undionly');
    expect(decideBoot(host(), undefined, { platform: 'pcbios', chip: 'undionly', address: confirmed }, opts).kind).toBe('menu');
    expect(decideBoot(host(), undefined, { platform: 'efi', chip: 'virtio-net', address: confirmed }, opts).kind).toBe('menu');
  });

  it('boots the client for a pending task, not for one already running', () => {
    expect(decideBoot(host(), task('queued'), { platform: 'efi', chip: null, address: confirmed }, opts).kind).toBe('client');
    expect(decideBoot(host(), task('booting'), { platform: 'efi', chip: null, address: confirmed }, opts).kind).toBe('client');
    expect(decideBoot(host(), task('running'), { platform: 'efi', chip: null, address: confirmed }, opts).kind).toBe('local');
  });

  it('gives a registered PC without a task the menu, timing out with its own local boot method on BIOS', () => {
    const d = decideBoot(host({ registered: true, localBoot: 'sanboot' }), undefined, { platform: 'pcbios', chip: 'undionly', address: confirmed }, opts);
    expect(d).toMatchObject({ kind: 'menu', method: 'sanboot', registered: true });
    const e = decideBoot(host({ registered: true, localBoot: 'sanboot' }), undefined, { platform: 'efi', chip: null, address: confirmed }, opts);
    expect(e).toMatchObject({ kind: 'menu', method: 'exit', registered: true });
    expect(decideBoot(host(), undefined, { platform: 'efi', chip: null, address: confirmed }, opts)).toMatchObject({ kind: 'menu', registered: false });
  });

  it('withholds the client from a request whose address DHCP did not confirm, and says why', () => {
    const d = decideBoot(host(), task('queued'), { platform: 'efi', chip: null, address: stranger }, opts);
    expect(d).toMatchObject({ kind: 'unconfirmed', method: 'exit' });
    expect(d.reason).toContain('the request came from 10.0.0.66');
    // A running task sends the PC to its disk whoever asks; no token is involved there.
    expect(decideBoot(host(), task('running'), { platform: 'efi', chip: null, address: stranger }, opts).kind).toBe('local');
    expect(decideBoot(host(), undefined, { platform: 'efi', chip: null, address: stranger }, opts).kind).toBe('menu');
  });
});

describe('boot addresses', () => {
  it('confirms only the address DHCP tied to the MAC, within the window', () => {
    const book = new BootAddresses(60_000);
    const now = 1_000_000;
    expect(book.check('52:54:00:12:34:56', '10.0.0.5', now)).toMatchObject({ confirmed: false, why: expect.stringContaining('no DHCP/PXE exchange') });
    book.note('52-54-00-12-34-56', '::ffff:10.0.0.5', now - 1000);
    expect(book.check('52:54:00:12:34:56', '10.0.0.5', now)).toEqual({ confirmed: true });
    expect(book.check('52:54:00:12:34:56', '::ffff:10.0.0.5', now)).toEqual({ confirmed: true });
    expect(book.check('52:54:00:12:34:56', '10.0.0.66', now)).toMatchObject({ confirmed: false, why: 'DHCP tied this MAC to 10.0.0.5, but the request came from 10.0.0.66' });
    expect(book.check('52:54:00:12:34:56', '10.0.0.5', now + 60_000)).toMatchObject({ confirmed: false, why: expect.stringContaining('61 s ago') });
    book.note('52:54:00:12:34:56', '0.0.0.0', now);
    expect(book.seen('52:54:00:12:34:56')?.ip).toBe('10.0.0.5');
  });

  it('keeps a bounded number of MACs, dropping the oldest sighting first', () => {
    const book = new BootAddresses();
    const mac = (i: number): string => `02:00:00:00:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;
    for (let i = 0; i < 5000; i++) book.note(mac(i), '10.1.0.1');
    expect(book.seen(mac(0))).toBeUndefined();
    expect(book.seen(mac(4999))?.ip).toBe('10.1.0.1');
  });
});

describe('iPXE scripts', () => {
  const ctx = { httpBase: '10.0.0.1:8080', mac: '52:54:00:12:34:56', menuTimeoutSeconds: 7 };
  it('boots the client with initrd= for EFI, the server and the token on the kernel line', () => {
    const s = scriptClient(ctx, task('queued'), 'TOKEN_abc');
    expect(s.startsWith('#!ipxe\n')).toBe(true);
    expect(s).toMatch(/^kernel http:\/\/10\.0\.0\.1:8080\/boot\/client\/vmlinuz initrd=initrd\.img .*netclone\.server=10\.0\.0\.1:8080 netclone\.task=t1 netclone\.token=TOKEN_abc/m);
    expect(s).toMatch(/^initrd --name initrd\.img http:\/\/10\.0\.0\.1:8080\/boot\/client\/initrd\.img/m);
  });
  it('menu times out to the local disk and names no image', () => {
    const s = scriptMenu(ctx, 'exit', { registered: false, name: '' });
    expect(s).toContain('choose --timeout 7000 --default local selected');
    expect(s).toMatch(/:local\n.*\nexit/);
    expect(s).toMatch(/^iseq \$\{netclone-forms\} 1 && item register /m);
    expect(s).toMatch(/^iseq \$\{netclone-forms\} 1 && item deploy /m);
    expect(s).not.toMatch(/^item img/m);
    expect(lintIpxe(s)).toEqual([]);
  });
  it('menu actions ask for a login and go out as a form POST, never as a GET with a query', () => {
    const s = scriptMenu(ctx, 'exit', { registered: false, name: '' });
    for (const [label, what] of [['capture', 'capture'], ['deploy', 'deploy-list'], ['register', 'register']]) {
      const block = s.slice(s.indexOf(`\n:${label}\n`), s.indexOf('\n:', s.indexOf(`\n:${label}\n`) + 2));
      expect(block, label).toMatch(/^login \|\| goto local$/m);
      expect(block, label).toMatch(/^params \|\| goto local$/m);
      expect(block, label).toContain(`param do ${what}\n`);
      expect(block, label).toContain('param username ${username:uristring}\nparam password ${password:uristring}\n');
      expect(block, label).toMatch(/^chain http:\/\/10\.0\.0\.1:8080\/boot\/ipxe\/action##params \|\| goto local$/m);
    }
    expect(s).not.toContain('/boot/ipxe/action?');
    // Without PARAM_CMD (Debian's iPXE) the probe fails and the menu explains instead of offering actions.
    expect(s).toMatch(/^params && set netclone-forms 1 \|\| set netclone-forms 0$/m);
    expect(s).toMatch(/^iseq \$\{netclone-forms\} 1 \|\| item --gap .*PARAM_CMD/m);
  });
  it('a registered PC\'s menu names it, offers capture, deploy and local disk, not register', () => {
    const s = scriptMenu(ctx, 'sanboot', { registered: true, name: 'desk-${evil}' });
    expect(s).toMatch(/^menu netclone - PC desk-__evil_ \(52:54:00:12:34:56\)$/m);
    expect(s).toContain('This PC is registered');
    expect(s).toMatch(/item capture /m);
    expect(s).toMatch(/item deploy /m);
    expect(s).not.toContain('item register');
    expect(s).not.toContain('param do register');
    expect(s).toContain('choose --timeout 7000 --default local selected');
    expect(s).toMatch(/:local\n.*\nsanboot --no-describe --drive 0x80/);
    expect(lintIpxe(s)).toEqual([]);
  });
  it('a PC whose request was not confirmed gets no token, only a login to start its task or the local disk', () => {
    const s = scriptUnconfirmed(ctx, 'exit', { registered: true, name: '' }, { kind: 'deploy' });
    expect(s).not.toContain('netclone.token');
    // The imaging client may be offered in menu mode (login at the PC), never with a task.
    expect(s).not.toContain('netclone.task=');
    expect(s).toMatch(/^iseq \$\{netclone-forms\} 1 && item start /m);
    expect(s).toContain('param do start\n');
    expect(s).toContain('choose --timeout 7000 --default local selected');
    expect(lintIpxe(s)).toEqual([]);
  });
  it('after a login, lists the images that fit a script line, each posting the login again', () => {
    const s = scriptDeployChoice(ctx, 'exit', ['win11', 'evil${x}', 'lab.v2']);
    expect(s).toMatch(/^item img0 win11$/m);
    expect(s).toMatch(/^item img1 lab\.v2$/m);
    expect(s).not.toContain('evil');
    expect(s).toContain('param do deploy\nparam image lab.v2\nparam username ${username:uristring}');
    expect(s).not.toMatch(/^login/m);
    expect(lintIpxe(s)).toEqual([]);
    const none = scriptDeployChoice(ctx, 'exit', []);
    expect(none).toContain('no image has a committed version');
    expect(lintIpxe(none)).toEqual([]);
  });
  it('notices and the other scripts are valid iPXE', () => {
    expect(lintIpxe(scriptNotice(ctx, 'wrong username or password; ${x}'))).toEqual([]);
    expect(scriptNotice(ctx, '${x}')).not.toContain('${x}');
    expect(lintIpxe(scriptClient(ctx, task('queued'), 'TOKEN_abc'))).toEqual([]);
    expect(lintIpxe(scriptChainUndionly(ctx))).toEqual([]);
    expect(lintIpxe(scriptLocal('sanboot', 'x'))).toEqual([]);
    expect(lintIpxe(scriptLocal('exit', 'x'))).toEqual([]);
  });
  it('the linter itself finds a missing label, an unknown command, an unclosed ${ and a quote', () => {
    expect(lintIpxe('#!ipxe\ngoto nowhere\n')).toEqual(['line 2: goto nowhere: no such label']);
    expect(lintIpxe('#!ipxe\nfrobnicate now\n')[0]).toMatch(/unknown command "frobnicate"/);
    expect(lintIpxe('#!ipxe\necho ${net0/mac\n')[0]).toMatch(/unclosed/);
    expect(lintIpxe('#!ipxe\nmenu x\nitem a A\nchoose s\ngoto ${s}\n')[0]).toMatch(/menu item "a" has no label/);
    expect(lintIpxe("#!ipxe\necho it's\n")[0]).toMatch(/quote character/);
  });
  it('chains undionly over TFTP and local boot exits', () => {
    const hop = scriptChainUndionly(ctx);
    // Our address, not ${next-server} (the office DHCP server's under proxy DHCP).
    expect(hop).toContain('imgfetch --name undionly tftp://10.0.0.1/undionly.kpxe || goto failed');
    expect(hop).not.toContain('${next-server}');
    // When undionly returns (it chose the local disk), the ROM leaves too instead of chaining again.
    expect(hop).toMatch(/^imgexec undionly \|\|\n(echo .*\n)?exit\n:failed\n/m);
    expect(scriptLocal('sanboot', 'x')).toContain('sanboot --no-describe --drive 0x80');
  });
});
