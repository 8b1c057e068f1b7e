import { describe, expect, it } from 'vitest';
import {
  type BootTask, booterOptions, ClientArch, decideBoot, decideFirstStage, firmwareOfClientArch, firmwareOfIpxe, localBootMethod, menuActions, platformOf,
  policyBooter, serviceFacts,
} from '../../src/domain/boot-policy.js';
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
    expect(d).toMatchObject({ kind: 'menu', method: 'sanboot', menu: { registered: true, name: '', actions: ['capture', 'deploy'] } });
    const e = decideBoot(host({ registered: true, localBoot: 'sanboot' }), undefined, { platform: 'efi', chip: null, address: confirmed }, opts);
    expect(e).toMatchObject({ kind: 'menu', method: 'exit', menu: { registered: true } });
    expect(decideBoot(host({ name: 'desk 4' }), undefined, { platform: 'efi', chip: null, address: confirmed }, opts)).toEqual({
      kind: 'menu', method: 'exit', menu: { registered: false, name: 'desk 4', actions: ['capture', 'deploy', 'register'] }, reason: 'PC not registered yet: menu',
    });
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

describe('boot policy: the first stage, by client architecture', () => {
  const fs = { arm64BootFile: 'ipxe-arm64.efi', defaultUefiBoot: 'ipxe' } as const;
  const MAC = '52:54:00:12:34:56';

  it('gives every supported architecture its loader, by TFTP or HTTP', () => {
    const cases: Array<[number | undefined, unknown]> = [
      [undefined, { ok: true, kind: 'bios-loader', loader: 'undionly.kpxe', via: 'tftp' }],
      [ClientArch.X86_BIOS, { ok: true, kind: 'bios-loader', loader: 'undionly.kpxe', via: 'tftp' }],
      [ClientArch.EFI_IA32, { ok: true, kind: 'efi-loader', loader: 'snponly.efi', via: 'tftp' }],
      [ClientArch.EFI_X64_BC, { ok: true, kind: 'efi-loader', loader: 'snponly.efi', via: 'tftp' }],
      [ClientArch.EFI_X64, { ok: true, kind: 'efi-loader', loader: 'snponly.efi', via: 'tftp' }],
      [ClientArch.EFI_ARM64, { ok: true, kind: 'arm64-loader', loader: 'ipxe-arm64.efi', via: 'tftp' }],
      [ClientArch.EFI_X64_HTTP, { ok: true, kind: 'http-loader', loader: 'ipxe.efi', via: 'http' }],
      [ClientArch.EFI_ARM64_HTTP, { ok: true, kind: 'http-loader', loader: 'ipxe-arm64.efi', via: 'http' }],
    ];
    for (const [arch, want] of cases) expect(decideFirstStage({ mac: MAC, arch, isIpxe: false }, undefined, fs), `arch ${arch}`).toEqual(want);
    expect(decideFirstStage({ mac: MAC, arch: 11, isIpxe: false }, undefined, { arm64BootFile: 'arm/snp.efi', defaultUefiBoot: 'ipxe' })).toMatchObject({ loader: 'arm/snp.efi', via: 'tftp' });
  });

  it('gives a client already running iPXE its script, whatever its architecture', () => {
    for (const arch of [undefined, 0, 7, 9, 10, 11, 16, 19, 2]) {
      expect(decideFirstStage({ mac: MAC, arch, isIpxe: true }, host({ efiLoader: 'ipxe.efi' }), fs)).toEqual({ ok: true, kind: 'ipxe-script' });
    }
  });

  it('boots ipxe.efi instead of snponly.efi on the x86 UEFI PCs whose host says so, and only there', () => {
    const needsIpxe = host({ efiLoader: 'ipxe.efi' });
    for (const arch of [6, 7, 9]) expect(decideFirstStage({ mac: MAC, arch, isIpxe: false }, needsIpxe, fs)).toEqual({ ok: true, kind: 'efi-loader', loader: 'ipxe.efi', via: 'tftp' });
    for (const arch of [6, 7, 9]) expect(decideFirstStage({ mac: MAC, arch, isIpxe: false }, host(), fs)).toMatchObject({ loader: 'snponly.efi' });
    expect(decideFirstStage({ mac: MAC, arch: 0, isIpxe: false }, needsIpxe, fs)).toMatchObject({ loader: 'undionly.kpxe' });
    expect(decideFirstStage({ mac: MAC, arch: 16, isIpxe: false }, needsIpxe, fs)).toMatchObject({ loader: 'ipxe.efi', via: 'http' });
    expect(decideFirstStage({ mac: MAC, arch: 11, isIpxe: false }, needsIpxe, fs)).toMatchObject({ loader: 'ipxe-arm64.efi' });
  });

  it('offers the signed shim to x86-64 UEFI PCs whose host or the appliance says signed, and iPXE to the rest', () => {
    const signed = { ...fs, defaultUefiBoot: 'signed' } as const;
    const shim = { ok: true, kind: 'signed-loader', loader: 'shimx64.efi', via: 'tftp' };
    for (const arch of [7, 9]) {
      expect(decideFirstStage({ mac: MAC, arch, isIpxe: false }, host({ uefiBoot: 'signed' }), fs), `host signed, arch ${arch}`).toEqual(shim);
      expect(decideFirstStage({ mac: MAC, arch, isIpxe: false }, undefined, signed), `default signed, arch ${arch}`).toEqual(shim);
      expect(decideFirstStage({ mac: MAC, arch, isIpxe: false }, host({ uefiBoot: null }), signed), `host null, arch ${arch}`).toEqual(shim);
      // A host's own choice wins over the appliance's default, both ways.
      expect(decideFirstStage({ mac: MAC, arch, isIpxe: false }, host({ uefiBoot: 'ipxe' }), signed)).toMatchObject({ kind: 'efi-loader', loader: 'snponly.efi' });
    }
    // Debian signs no 32-bit shim; BIOS, HTTP boot, arm64 and iPXE itself are untouched.
    expect(decideFirstStage({ mac: MAC, arch: 6, isIpxe: false }, host({ uefiBoot: 'signed' }), signed)).toMatchObject({ loader: 'snponly.efi' });
    expect(decideFirstStage({ mac: MAC, arch: 0, isIpxe: false }, host({ uefiBoot: 'signed' }), signed)).toMatchObject({ loader: 'undionly.kpxe' });
    expect(decideFirstStage({ mac: MAC, arch: 16, isIpxe: false }, host({ uefiBoot: 'signed' }), signed)).toMatchObject({ loader: 'ipxe.efi', via: 'http' });
    expect(decideFirstStage({ mac: MAC, arch: 11, isIpxe: false }, host({ uefiBoot: 'signed' }), signed)).toMatchObject({ loader: 'ipxe-arm64.efi' });
    expect(decideFirstStage({ mac: MAC, arch: 7, isIpxe: true }, host({ uefiBoot: 'signed' }), signed)).toEqual({ ok: true, kind: 'ipxe-script' });
  });

  it('refuses an unknown architecture, naming it and the supported ones', () => {
    for (const arch of [1, 2, 10, 12, 20, 255]) {
      expect(decideFirstStage({ mac: MAC, arch, isIpxe: false }, undefined, fs)).toEqual({
        ok: false, reason: `client architecture ${arch} has no boot file; supported: 0, 6, 7, 9, 11, 16, 19`,
      });
    }
  });
});

describe('boot policy: firmware names', () => {
  it('names the firmware of a DHCP client architecture as the host table records it', () => {
    expect(firmwareOfClientArch(0)).toBe('bios');
    expect(firmwareOfClientArch(16)).toBe('uefi-http');
    for (const arch of [11, 19]) expect(firmwareOfClientArch(arch)).toBe('arm64');
    for (const arch of [6, 7, 9]) expect(firmwareOfClientArch(arch)).toBe('uefi');
    // An architecture we have no loader for (Itanium, x86 BIOS over HTTP…) is not guessed at.
    for (const arch of [2, 10, 15, 40]) expect(firmwareOfClientArch(arch)).toBe('unknown');
    expect(firmwareOfClientArch(undefined)).toBe('unknown');
  });

  it('names the firmware iPXE reports, and takes only the platforms iPXE has', () => {
    expect(platformOf('pcbios')).toBe('pcbios');
    expect(platformOf('efi')).toBe('efi');
    for (const v of ['EFI', '', undefined, ['efi'], 'arm64']) expect(platformOf(v)).toBe('unknown');
    expect(firmwareOfIpxe('pcbios', 'i386')).toBe('bios');
    expect(firmwareOfIpxe('efi', 'x86_64')).toBe('uefi');
    expect(firmwareOfIpxe('efi', 'arm64')).toBe('arm64');
    expect(firmwareOfIpxe('unknown', 'arm64')).toBe('unknown');
  });

  it('boots the local disk with the host\'s method on BIOS, the default without one, and exit on UEFI', () => {
    expect(localBootMethod(host({ localBoot: 'sanboot' }), 'pcbios', 'exit')).toBe('sanboot');
    expect(localBootMethod(host(), 'pcbios', 'sanboot')).toBe('sanboot');
    expect(localBootMethod(undefined, 'pcbios', 'exit')).toBe('exit');
    expect(localBootMethod(host({ localBoot: 'sanboot' }), 'efi', 'sanboot')).toBe('exit');
    expect(localBootMethod(host({ localBoot: 'sanboot' }), 'unknown', 'sanboot')).toBe('exit');
  });
});

describe('the booter', () => {
  const MAC = '52:54:00:12:34:56';
  const facts = (h: HostRecord | undefined, active?: TaskRecord, last?: TaskRecord) => ({
    host: (mac: string) => (mac === MAC ? h : undefined),
    activeTask: (mac: string) => (mac === MAC ? active : undefined),
    lastStartedDeploy: (mac: string) => (mac === MAC ? last : undefined),
  });
  const options = booterOptions({ localBoot: 'sanboot', arm64BootFile: 'arm.efi', uefiBoot: 'ipxe' });

  it('answers DHCP from the PC\'s host record and the configured arm64 loader', () => {
    const booter = policyBooter(facts(host({ efiLoader: 'ipxe.efi' })), options);
    expect(booter.firstStage({ mac: MAC, arch: 7, isIpxe: false })).toMatchObject({ loader: 'ipxe.efi' });
    expect(booter.firstStage({ mac: '02:00:00:00:00:01', arch: 7, isIpxe: false })).toMatchObject({ loader: 'snponly.efi' });
    expect(booter.firstStage({ mac: MAC, arch: 11, isIpxe: false })).toMatchObject({ loader: 'arm.efi' });
  });

  it('answers the script from the PC, its task and its last deploy, handing back the task it was given', () => {
    const t = task('queued');
    const booter = policyBooter(facts(host({ registered: true, name: 'desk', localBoot: null }), t), options);
    const d = booter.script({ mac: MAC, platform: 'efi', chip: null, address: confirmed });
    expect(d).toEqual({ kind: 'client', task: t, reason: 'capture task t1 pending' });
    if (d.kind === 'client') expect(d.task).toBe(t);
    expect(booter.script({ mac: MAC, platform: 'pcbios', chip: 'e1000', address: confirmed })).toEqual({
      kind: 'chain-undionly', loader: 'undionly.kpxe', reason: 'BIOS NIC ROM is iPXE; chaining undionly.kpxe once',
    });
    const idle = policyBooter(facts(host({ registered: true, name: 'desk' })), options);
    expect(idle.script({ mac: MAC, platform: 'pcbios', chip: 'undionly', address: confirmed })).toMatchObject({
      kind: 'menu', method: 'sanboot', menu: { registered: true, name: 'desk', actions: ['capture', 'deploy'] },
    });
    const failed: TaskRecord = { ...task('failed'), kind: 'deploy' };
    expect(policyBooter(facts(host(), undefined, failed), options).script({ mac: MAC, platform: 'efi', chip: null, address: confirmed }))
      .toMatchObject({ kind: 'unfinished', deploy: failed, active: false, method: 'exit' });
  });

  it('treats a PC the host table does not hold as a new, unregistered one', () => {
    const booter = policyBooter(facts(undefined), options);
    expect(booter.script({ mac: '02:00:00:00:00:09', platform: 'pcbios', chip: 'undionly', address: confirmed })).toMatchObject({
      kind: 'menu', method: 'sanboot', menu: { registered: false, name: '', actions: ['capture', 'deploy', 'register'] },
    });
    expect(booter.firstStage({ mac: '02:00:00:00:00:09', arch: 9, isIpxe: false })).toMatchObject({ loader: 'snponly.efi' });
  });

  it('reads the appliance\'s host and task services', () => {
    const t = task('queued');
    const asked: string[] = [];
    const f = serviceFacts(
      { get: (mac: string) => (asked.push(`host ${mac}`), host()) },
      { activeFor: (mac: string) => (asked.push(`task ${mac}`), t), lastStartedDeploy: (mac: string) => (asked.push(`last ${mac}`), undefined) },
    );
    expect(f.host(MAC)).toEqual(host());
    expect(f.activeTask(MAC)).toBe(t);
    expect(f.lastStartedDeploy(MAC)).toBeUndefined();
    expect(asked).toEqual([`host ${MAC}`, `task ${MAC}`, `last ${MAC}`]);
  });

  it('scripts see a task as a view: any record with its id, kind, image, state and reason will do', () => {
    const view: BootTask = { id: 't9', kind: 'deploy', image: 'lab', state: 'queued', reason: null };
    expect(decideBoot(host(), view, { platform: 'efi', chip: null, address: confirmed }, opts)).toEqual({ kind: 'client', task: view, reason: 'deploy task t9 pending' });
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
    const s = scriptMenu(ctx, 'exit', { registered: false, name: '', actions: menuActions(false) });
    expect(s).toContain('choose --timeout 7000 --default local selected');
    expect(s).toMatch(/:local\n.*\nexit/);
    expect(s).toMatch(/^iseq \$\{netclone-forms\} 1 && item register /m);
    expect(s).toMatch(/^iseq \$\{netclone-forms\} 1 && item deploy /m);
    expect(s).not.toMatch(/^item img/m);
    expect(lintIpxe(s)).toEqual([]);
  });
  it('menu actions ask for a login and go out as a form POST, never as a GET with a query', () => {
    const s = scriptMenu(ctx, 'exit', { registered: false, name: '', actions: menuActions(false) });
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
    const s = scriptMenu(ctx, 'sanboot', { registered: true, name: 'desk-${evil}', actions: menuActions(true) });
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
  it('the menu offers exactly the actions the policy lists, in its order, each with its login POST', () => {
    const s = scriptMenu(ctx, 'exit', { registered: true, name: '', actions: ['deploy'] });
    expect(s).toMatch(/^iseq \$\{netclone-forms\} 1 && item deploy /m);
    expect(s).not.toMatch(/item capture|item register|:capture|:register/);
    expect(s).toContain(':deploy\nlogin || goto local\n');
    expect(s).toContain('param do deploy-list\n');
    expect(lintIpxe(s)).toEqual([]);
    const none = scriptMenu(ctx, 'exit', { registered: true, name: '', actions: [] });
    expect(none).not.toMatch(/login|params \|\||item client/);
    expect(none).toMatch(/^item local /m);
    expect(lintIpxe(none)).toEqual([]);
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
    expect(lintIpxe(scriptChainUndionly(ctx, 'undionly.kpxe'))).toEqual([]);
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
    const hop = scriptChainUndionly(ctx, 'undionly.kpxe');
    // Our address, not ${next-server} (the office DHCP server's under proxy DHCP).
    expect(hop).toContain('imgfetch --name undionly tftp://10.0.0.1/undionly.kpxe || goto failed');
    expect(hop).not.toContain('${next-server}');
    // When undionly returns (it chose the local disk), the ROM leaves too instead of chaining again.
    expect(hop).toMatch(/^imgexec undionly \|\|\n(echo .*\n)?exit\n:failed\n/m);
    expect(scriptLocal('sanboot', 'x')).toContain('sanboot --no-describe --drive 0x80');
  });
});
