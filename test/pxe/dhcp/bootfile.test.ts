/**
 * What a DHCP reply says a client boots: the policy's first-stage decision (domain/boot-policy.ts),
 * rendered into option 67/60 values by bootfile.ts.
 */
import { describe, expect, it } from 'vitest';
import { type FirstStageRequest } from '../../../src/domain/boot-policy.js';
import { type BootChoice, ipxeScriptUrl, renderBootChoice } from '../../../src/pxe/dhcp/index.js';
import { testBooter, type TestBooterOptions } from './booter.js';

const server = { serverIp: '10.1.2.3', httpPort: 8080 };
const MAC = 'aa:bb:cc:dd:ee:ff';

function choose(request: FirstStageRequest, options: TestBooterOptions = {}): BootChoice {
  return renderBootChoice(testBooter(options).firstStage(request), server);
}

describe('the boot file in a DHCP reply', () => {
  it('BIOS PXE ROM gets undionly.kpxe', () => {
    expect(choose({ mac: MAC, arch: 0, isIpxe: false })).toEqual({ ok: true, kind: 'bios-loader', filename: 'undionly.kpxe', vendorClass: 'PXEClient' });
  });

  it('legacy client without architecture is BIOS', () => {
    const c = choose({ mac: MAC, isIpxe: false });
    expect(c.ok && c.filename).toBe('undionly.kpxe');
  });

  for (const arch of [6, 7, 9]) {
    it(`UEFI arch ${arch} gets snponly.efi, or ipxe.efi when the host needs it`, () => {
      expect(choose({ mac: MAC, arch, isIpxe: false })).toEqual({ ok: true, kind: 'efi-loader', filename: 'snponly.efi', vendorClass: 'PXEClient' });
      expect(choose({ mac: MAC, arch, isIpxe: false }, { ipxeEfiMacs: [MAC] })).toEqual({ ok: true, kind: 'efi-loader', filename: 'ipxe.efi', vendorClass: 'PXEClient' });
      // Another host's override is not this one's.
      const d = choose({ mac: '02:00:00:00:00:01', arch, isIpxe: false }, { ipxeEfiMacs: [MAC] });
      expect(d.ok && d.filename).toBe('snponly.efi');
    });
  }

  it('UEFI HTTP boot gets the EFI binary by URL with HTTPClient', () => {
    expect(choose({ mac: MAC, arch: 16, isIpxe: false })).toEqual({
      ok: true,
      kind: 'http-loader',
      filename: 'http://10.1.2.3:8080/boot/ipxe.efi',
      vendorClass: 'HTTPClient',
    });
  });

  it('arm64 gets the configured file, with a default, over TFTP or by URL for HTTP boot', () => {
    const d = choose({ mac: MAC, arch: 11, isIpxe: false });
    expect(d).toEqual({ ok: true, kind: 'arm64-loader', filename: 'ipxe-arm64.efi', vendorClass: 'PXEClient' });
    const c = choose({ mac: MAC, arch: 11, isIpxe: false }, { arm64BootFile: 'arm/snp.efi' });
    expect(c.ok && c.filename).toBe('arm/snp.efi');
    expect(choose({ mac: MAC, arch: 19, isIpxe: false }, { arm64BootFile: 'snp-arm64.efi' })).toEqual({
      ok: true,
      kind: 'http-loader',
      filename: 'http://10.1.2.3:8080/boot/snp-arm64.efi',
      vendorClass: 'HTTPClient',
    });
  });

  it('a client already running iPXE gets its script URL whatever its architecture (no boot loop)', () => {
    const url = 'http://10.1.2.3:8080/boot/ipxe?mac=${net0/mac}&platform=${platform}&arch=${buildarch}&chip=${net0/chip}';
    expect(ipxeScriptUrl('10.1.2.3', 8080)).toBe(url);
    for (const arch of [0, 7, 9, 11, 16, undefined]) {
      const c = choose({ mac: MAC, arch, isIpxe: true });
      expect(c).toEqual({ ok: true, kind: 'ipxe-script', filename: url, vendorClass: 'PXEClient' });
    }
  });

  it('unknown architecture is refused with a reason', () => {
    const c = choose({ mac: MAC, arch: 2, isIpxe: false });
    expect(c.ok).toBe(false);
    if (!c.ok) expect(c.reason).toMatch(/architecture 2/);
  });

  it('renders each kind of decision: a TFTP path as is, an HTTP loader as a URL under /boot/ with HTTPClient', () => {
    expect(renderBootChoice({ ok: true, kind: 'efi-loader', loader: 'x.efi', via: 'tftp' }, server)).toEqual({ ok: true, kind: 'efi-loader', filename: 'x.efi', vendorClass: 'PXEClient' });
    expect(renderBootChoice({ ok: true, kind: 'http-loader', loader: 'x.efi', via: 'http' }, server)).toEqual({
      ok: true, kind: 'http-loader', filename: 'http://10.1.2.3:8080/boot/x.efi', vendorClass: 'HTTPClient',
    });
    expect(renderBootChoice({ ok: false, reason: 'no' }, server)).toEqual({ ok: false, reason: 'no' });
  });
});
