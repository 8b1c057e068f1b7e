/**
 * The boot policy as the DHCP tests ask it: no task for anyone, and the listed MACs are hosts whose
 * NIC needs ipxe.efi (the per-host EFI loader override).
 */
import { type BootHost, type BootTask, type Booter, DEFAULT_ARM64_BOOT_FILE, policyBooter } from '../../../src/domain/boot-policy.js';

export interface TestBooterOptions {
  readonly ipxeEfiMacs?: readonly string[];
  readonly arm64BootFile?: string;
  /** The appliance's uefi-boot for PCs without a host record. */
  readonly defaultUefiBoot?: 'ipxe' | 'signed';
}

export function testBooter(options: TestBooterOptions = {}): Booter {
  const ipxeEfi = new Set(options.ipxeEfiMacs ?? []);
  const host = (mac: string): BootHost | undefined =>
    ipxeEfi.has(mac) ? { name: '', registered: false, localBoot: null, efiLoader: 'ipxe.efi' } : undefined;
  return policyBooter<BootTask>(
    { host, activeTask: () => undefined, lastStartedDeploy: () => undefined },
    { defaultLocalBoot: 'exit', biosUndionlyHop: true, arm64BootFile: options.arm64BootFile ?? DEFAULT_ARM64_BOOT_FILE, defaultUefiBoot: options.defaultUefiBoot ?? 'ipxe' },
  );
}
