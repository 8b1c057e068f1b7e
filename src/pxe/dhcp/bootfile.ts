/**
 * Which first-stage file a network-boot client gets. Pure: the only outside knowledge, a per-host
 * EFI loader override, arrives as an injected lookup.
 */
import { ClientArch } from './constants.js';

export type EfiLoader = 'snponly.efi' | 'ipxe.efi';

export interface BootFileConfig {
  /** Address clients use to reach our TFTP and HTTP servers. */
  readonly serverIp: string;
  readonly httpPort: number;
  /** TFTP filename for arm64 UEFI clients (arch 11). */
  readonly arm64BootFile?: string;
  /** Hosts whose NIC has no usable SNP driver boot iPXE's full driver set instead. */
  readonly efiLoaderFor?: (mac: string) => EfiLoader;
}

/** The subset of a client request the choice depends on. */
export interface BootFileRequest {
  readonly mac: string;
  readonly arch?: number;
  readonly isIpxe: boolean;
}

export type BootChoiceKind = 'ipxe-script' | 'bios-loader' | 'efi-loader' | 'http-loader' | 'arm64-loader';

export type BootChoice =
  | {
      readonly ok: true;
      readonly kind: BootChoiceKind;
      /** TFTP path or HTTP URL, as it goes into option 67 and the file field. */
      readonly filename: string;
      /** Option 60 in the reply: UEFI HTTP boot only accepts offers that say HTTPClient. */
      readonly vendorClass: 'PXEClient' | 'HTTPClient';
    }
  | { readonly ok: false; readonly reason: string };

export const DEFAULT_ARM64_BOOT_FILE = 'ipxe-arm64.efi';

/**
 * The URL of a host's iPXE script. The ${...} parts are iPXE settings that iPXE expands itself,
 * so the same reply works for every host and the HTTP side learns the MAC and platform. The chip
 * tells the boot policy that undionly.kpxe already runs: without it a BIOS PC chains undionly forever.
 */
export function ipxeScriptUrl(serverIp: string, httpPort: number): string {
  return `http://${serverIp}:${httpPort}/boot/ipxe?mac=\${net0/mac}&platform=\${platform}&arch=\${buildarch}&chip=\${net0/chip}`;
}

export function chooseBootFile(request: BootFileRequest, config: BootFileConfig): BootChoice {
  const base = `http://${config.serverIp}:${config.httpPort}/boot`;
  // Checked before the architecture: handing iPXE another iPXE binary is a boot loop.
  if (request.isIpxe) {
    return { ok: true, kind: 'ipxe-script', filename: ipxeScriptUrl(config.serverIp, config.httpPort), vendorClass: 'PXEClient' };
  }
  // Legacy PXE 2.0 ROMs predate option 93; they are all x86 BIOS.
  const arch = request.arch ?? ClientArch.X86_BIOS;
  switch (arch) {
    case ClientArch.X86_BIOS:
      return { ok: true, kind: 'bios-loader', filename: 'undionly.kpxe', vendorClass: 'PXEClient' };
    case ClientArch.EFI_IA32:
    case ClientArch.EFI_X64_BC:
    case ClientArch.EFI_X64: {
      const loader = config.efiLoaderFor?.(request.mac) ?? 'snponly.efi';
      return { ok: true, kind: 'efi-loader', filename: loader, vendorClass: 'PXEClient' };
    }
    case ClientArch.EFI_X64_HTTP:
      return { ok: true, kind: 'http-loader', filename: `${base}/ipxe.efi`, vendorClass: 'HTTPClient' };
    case ClientArch.EFI_ARM64:
      return { ok: true, kind: 'arm64-loader', filename: config.arm64BootFile ?? DEFAULT_ARM64_BOOT_FILE, vendorClass: 'PXEClient' };
    case ClientArch.EFI_ARM64_HTTP:
      return {
        ok: true,
        kind: 'http-loader',
        filename: `${base}/${config.arm64BootFile ?? DEFAULT_ARM64_BOOT_FILE}`,
        vendorClass: 'HTTPClient',
      };
    default:
      return { ok: false, reason: `client architecture ${arch} has no boot file; supported: 0, 6, 7, 9, 11, 16, 19` };
  }
}
