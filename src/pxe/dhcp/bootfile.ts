/**
 * Renders the boot policy's first-stage decision into what a DHCP reply carries: the boot file
 * (option 67 and the file field) and the vendor class (option 60). Which file a client gets is
 * the policy's (domain/boot-policy.ts); here only how it is written down.
 */
import type { FirstStage, LoaderKind } from '../../domain/boot-policy.js';

/** Where our TFTP and HTTP servers are, as clients reach them. */
export interface BootServer {
  readonly serverIp: string;
  readonly httpPort: number;
}

export type BootChoiceKind = 'ipxe-script' | LoaderKind;

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

/**
 * The URL of a host's iPXE script. The ${...} parts are iPXE settings that iPXE expands itself,
 * so the same reply works for every host and the HTTP side learns the MAC and platform. The chip
 * tells the boot policy that undionly.kpxe already runs: without it a BIOS PC chains undionly forever.
 */
export function ipxeScriptUrl(serverIp: string, httpPort: number): string {
  return `http://${serverIp}:${httpPort}/boot/ipxe?mac=\${net0/mac}&platform=\${platform}&arch=\${buildarch}&chip=\${net0/chip}`;
}

export function renderBootChoice(stage: FirstStage, server: BootServer): BootChoice {
  if (!stage.ok) return stage;
  if (stage.kind === 'ipxe-script') {
    // iPXE fetches its script itself: an ordinary PXE offer, whatever the URL.
    return { ok: true, kind: stage.kind, filename: ipxeScriptUrl(server.serverIp, server.httpPort), vendorClass: 'PXEClient' };
  }
  if (stage.via === 'http') {
    // The firmware fetches the loader by URL: UEFI HTTP boot.
    return { ok: true, kind: stage.kind, filename: `http://${server.serverIp}:${server.httpPort}/boot/${stage.loader}`, vendorClass: 'HTTPClient' };
  }
  return { ok: true, kind: stage.kind, filename: stage.loader, vendorClass: 'PXEClient' };
}
