import { describe, expect, it } from 'vitest';
import { decideBoot } from '../../src/pxe/boot-policy.js';
import { scriptClient, scriptMenu, scriptChainUndionly, scriptLocal } from '../../src/pxe/ipxe-script.js';
import type { HostRecord, TaskRecord } from '../../src/appliance/database.js';

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

describe('boot policy', () => {
  it('makes a BIOS iPXE ROM hop through undionly once, then never again', () => {
    expect(decideBoot(host(), undefined, { platform: 'pcbios', chip: 'e1000' }, opts).kind).toBe('chain-undionly');
    expect(decideBoot(host(), undefined, { platform: 'pcbios', chip: 'undionly' }, opts).kind).toBe('menu');
    expect(decideBoot(host(), undefined, { platform: 'efi', chip: 'virtio-net' }, opts).kind).toBe('menu');
  });

  it('boots the client for a pending task, not for one already running', () => {
    expect(decideBoot(host(), task('queued'), { platform: 'efi', chip: null }, opts).kind).toBe('client');
    expect(decideBoot(host(), task('booting'), { platform: 'efi', chip: null }, opts).kind).toBe('client');
    expect(decideBoot(host(), task('running'), { platform: 'efi', chip: null }, opts).kind).toBe('local');
  });

  it('gives a registered PC without a task the menu, timing out with its own local boot method on BIOS', () => {
    const d = decideBoot(host({ registered: true, localBoot: 'sanboot' }), undefined, { platform: 'pcbios', chip: 'undionly' }, opts);
    expect(d).toMatchObject({ kind: 'menu', method: 'sanboot', registered: true });
    const e = decideBoot(host({ registered: true, localBoot: 'sanboot' }), undefined, { platform: 'efi', chip: null }, opts);
    expect(e).toMatchObject({ kind: 'menu', method: 'exit', registered: true });
    expect(decideBoot(host(), undefined, { platform: 'efi', chip: null }, opts)).toMatchObject({ kind: 'menu', registered: false });
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
  it('menu times out to the local disk', () => {
    const s = scriptMenu(ctx, 'exit', ['win11', 'evil${x}'], { registered: false, name: '' });
    expect(s).toContain('choose --timeout 7000 --default local selected');
    expect(s).toMatch(/:local\n.*\nexit/);
    expect(s).not.toContain('evil${x}');
    expect(s).toContain('item register');
    expect(s).toContain('do=register');
  });
  it('a registered PC\'s menu names it, offers capture, deploy and local disk, not register', () => {
    const s = scriptMenu(ctx, 'sanboot', ['win11'], { registered: true, name: 'desk-${evil}' });
    expect(s).toMatch(/^menu netclone - PC desk-__evil_ \(52:54:00:12:34:56\)$/m);
    expect(s).toContain('This PC is registered');
    expect(s).toMatch(/^item capture /m);
    expect(s).toMatch(/^item deploy /m);
    expect(s).not.toContain('register  ');
    expect(s).not.toContain('do=register');
    expect(s).toContain('choose --timeout 7000 --default local selected');
    expect(s).toMatch(/:local\n.*\nsanboot --no-describe --drive 0x80/);
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
