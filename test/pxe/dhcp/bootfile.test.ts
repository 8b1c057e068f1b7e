import { describe, expect, it } from 'vitest';
import { chooseBootFile, ipxeScriptUrl } from '../../../src/pxe/dhcp/index.js';

const cfg = { serverIp: '10.1.2.3', httpPort: 8080 };
const MAC = 'aa:bb:cc:dd:ee:ff';

describe('chooseBootFile', () => {
  it('BIOS PXE ROM gets undionly.kpxe', () => {
    expect(chooseBootFile({ mac: MAC, arch: 0, isIpxe: false }, cfg)).toEqual({ ok: true, kind: 'bios-loader', filename: 'undionly.kpxe', vendorClass: 'PXEClient' });
  });

  it('legacy client without architecture is BIOS', () => {
    const c = chooseBootFile({ mac: MAC, isIpxe: false }, cfg);
    expect(c.ok && c.filename).toBe('undionly.kpxe');
  });

  for (const arch of [6, 7, 9]) {
    it(`UEFI arch ${arch} gets snponly.efi, or ipxe.efi when the host needs it`, () => {
      const c = chooseBootFile({ mac: MAC, arch, isIpxe: false }, cfg);
      expect(c.ok && c.filename).toBe('snponly.efi');
      const seen: string[] = [];
      const d = chooseBootFile({ mac: MAC, arch, isIpxe: false }, { ...cfg, efiLoaderFor: (m) => (seen.push(m), 'ipxe.efi') });
      expect(d.ok && d.filename).toBe('ipxe.efi');
      expect(seen).toEqual([MAC]);
    });
  }

  it('UEFI HTTP boot gets the EFI binary by URL with HTTPClient', () => {
    expect(chooseBootFile({ mac: MAC, arch: 16, isIpxe: false }, cfg)).toEqual({
      ok: true,
      kind: 'http-loader',
      filename: 'http://10.1.2.3:8080/boot/ipxe.efi',
      vendorClass: 'HTTPClient',
    });
  });

  it('arm64 gets the configured file, with a default', () => {
    const d = chooseBootFile({ mac: MAC, arch: 11, isIpxe: false }, cfg);
    expect(d.ok && d.filename).toBe('ipxe-arm64.efi');
    const c = chooseBootFile({ mac: MAC, arch: 11, isIpxe: false }, { ...cfg, arm64BootFile: 'arm/snp.efi' });
    expect(c.ok && c.filename).toBe('arm/snp.efi');
  });

  it('a client already running iPXE gets its script URL whatever its architecture (no boot loop)', () => {
    const url = 'http://10.1.2.3:8080/boot/ipxe?mac=${net0/mac}&platform=${platform}&arch=${buildarch}&chip=${net0/chip}';
    expect(ipxeScriptUrl('10.1.2.3', 8080)).toBe(url);
    for (const arch of [0, 7, 9, 11, 16, undefined]) {
      const c = chooseBootFile({ mac: MAC, arch, isIpxe: true }, cfg);
      expect(c).toEqual({ ok: true, kind: 'ipxe-script', filename: url, vendorClass: 'PXEClient' });
    }
  });

  it('unknown architecture is refused with a reason', () => {
    const c = chooseBootFile({ mac: MAC, arch: 2, isIpxe: false }, cfg);
    expect(c.ok).toBe(false);
    if (!c.ok) expect(c.reason).toMatch(/architecture 2/);
  });
});
