/**
 * Boot policy: the one place that decides what a PC boots, from the DHCP answer to the iPXE
 * script. Pure: it reads the PC, its task, its firmware and its chip and returns a decision. The
 * DHCP reply builder (pxe/dhcp) and the /boot routes (web/boot-routes.ts) only render it, and
 * carry out the side effects themselves (recording the sighting, minting the task token, logging).
 * The servers ask through one {@link Booter}, as Pixiecore's servers do.
 *
 * First stage, answered over DHCP by client architecture (RFC 4578, option 93):
 * - A client already running iPXE gets its boot script. Checked before the architecture: handing
 *   iPXE another iPXE binary is a boot loop.
 * - x86 BIOS, and legacy PXE 2.0 ROMs, which predate option 93 and are all x86 BIOS: undionly.kpxe
 *   over TFTP.
 * - x86-64 UEFI with the signed chain (the host's uefiBoot, else the appliance's `uefi-boot`): Debian's
 *   Microsoft-signed shim over TFTP, which loads Debian's signed GRUB beside it; GRUB reads its per-PC
 *   configuration (the same decisions as the iPXE script, {@link decideBoot}) over TFTP. A PC with
 *   Secure Boot on runs this chain without a key enrolled; iPXE is not signed and such a PC refuses it.
 * - x86 UEFI with iPXE: snponly.efi over TFTP, or ipxe.efi for a PC whose NIC has no usable SNP driver
 *   (the host's efiLoader). 32-bit UEFI always gets iPXE: Debian signs no 32-bit shim.
 * - UEFI HTTP boot: ipxe.efi over HTTP. arm64 UEFI: the configured arm64 loader, over TFTP, or over
 *   HTTP for arm64 HTTP boot.
 * - Any other architecture: no boot file, with the reason.
 *
 * iPXE script, rules in order:
 * 1. A BIOS PC whose NIC ROM is already iPXE makes one hop through undionly.kpxe, so
 *    the path a real vendor PXE ROM takes (ROM → undionly.kpxe → script) is the path
 *    every BIOS PC takes. undionly reports chip "undionly", which ends the hop: no loop.
 * 2. A queued or booting task → the imaging client, but only when the request comes from the
 *    address DHCP tied to this MAC lately; anyone else gets no token ("unconfirmed": the PC's
 *    screen offers a technician login to start the task there instead).
 * 3. A deploy that started writing the disk and did not finish (it failed, was cancelled, or
 *    is still counted as running while the PC boots again) → "unfinished": the PC's disk is
 *    incomplete and is never booted on its own; the screen says what happened and offers to
 *    deploy again. A running capture only reads the disk: that PC boots its disk.
 * 4. No task → the menu (capture, deploy, register, local disk), which times out to the
 *    local disk: a technician at the PC can start work there, an unattended PC boots its
 *    disk after the timeout. A registered PC's menu says so and drops "register".
 * The local disk is booted with sanboot or exit (localBootMethod).
 */
import type { AddressCheck } from './boot-addresses.js';
import type { Config } from './config.js';
import type { Firmware, HostRecord, LocalBoot, TaskKind, TaskRecord, TaskState } from './database.js';
import type { HostService } from './hosts.js';
import type { TaskService } from './tasks.js';

export type { Firmware, LocalBoot } from './database.js';

/** `${platform}` as iPXE reports it. */
export type IpxePlatform = 'pcbios' | 'efi' | 'unknown';

export type EfiLoader = HostRecord['efiLoader'];

/** How an x86-64 UEFI PC boots from the network: iPXE (unsigned) or the signed shim → GRUB chain. */
export type UefiBoot = 'ipxe' | 'signed';

/** What the policy reads of a PC (a HostRecord is one). */
export type BootHost = Pick<HostRecord, 'name' | 'registered' | 'localBoot' | 'efiLoader' | 'uefiBoot'>;

/** What the policy and the scripts read of a task: a view, not the database record. */
export interface BootTask {
  readonly id: string;
  readonly kind: TaskKind;
  readonly image: string;
  readonly state: TaskState;
  /** Why it failed or was cancelled; null otherwise. */
  readonly reason: string | null;
}

// ---------------------------------------------------------------------------------------------
// Firmware names

/** RFC 4578 / IANA processor architecture types (DHCP option 93). */
export const ClientArch = {
  X86_BIOS: 0,
  EFI_IA32: 6,
  EFI_X64_BC: 7,
  EFI_X64: 9,
  EFI_ARM32: 10,
  EFI_ARM64: 11,
  EFI_X64_HTTP: 16,
  EFI_ARM64_HTTP: 19,
} as const;

/**
 * The firmware a DHCP client architecture names, as the host table records it. Without option 93
 * the record says "unknown", although the first stage treats such a client as BIOS.
 */
export function firmwareOfClientArch(arch: number | undefined): Firmware {
  if (arch === undefined) return 'unknown';
  switch (arch) {
    case ClientArch.X86_BIOS:
      return 'bios';
    case ClientArch.EFI_X64_HTTP:
      return 'uefi-http';
    case ClientArch.EFI_IA32:
    case ClientArch.EFI_X64_BC:
    case ClientArch.EFI_X64:
      return 'uefi';
    // The same arm64 machine, whether it boots by TFTP or by HTTP.
    case ClientArch.EFI_ARM64:
    case ClientArch.EFI_ARM64_HTTP:
      return 'arm64';
    default:
      return 'unknown';
  }
}

/** iPXE's `${platform}`; anything else (a missing or forged parameter) is "unknown". */
export function platformOf(value: unknown): IpxePlatform {
  return value === 'pcbios' || value === 'efi' ? value : 'unknown';
}

/** The firmware iPXE's `${platform}` and `${buildarch}` name, as the host table records it. */
export function firmwareOfIpxe(platform: IpxePlatform, arch: unknown): Firmware {
  if (platform === 'pcbios') return 'bios';
  if (platform === 'efi') return arch === 'arm64' ? 'arm64' : 'uefi';
  return 'unknown';
}

// ---------------------------------------------------------------------------------------------
// First stage (DHCP)

export const BIOS_LOADER = 'undionly.kpxe';
export const DEFAULT_EFI_LOADER: EfiLoader = 'snponly.efi';
/** UEFI HTTP boot clients fetch iPXE's full EFI build by URL. */
export const HTTP_EFI_LOADER = 'ipxe.efi';
export const DEFAULT_ARM64_BOOT_FILE = 'ipxe-arm64.efi';
/** The signed chain's first stage (Debian's shim-signed); shim loads {@link SIGNED_GRUB} from the same TFTP directory. */
export const SIGNED_SHIM = 'shimx64.efi';
/** Debian's signed network GRUB (grubnetx64.efi.signed), under the name shim asks for. */
export const SIGNED_GRUB = 'grubx64.efi';

/** The subset of a DHCP request the first stage depends on. */
export interface FirstStageRequest {
  readonly mac: string;
  /** Option 93; legacy PXE 2.0 ROMs send none. */
  readonly arch?: number;
  readonly isIpxe: boolean;
}

export type LoaderKind = 'bios-loader' | 'efi-loader' | 'signed-loader' | 'http-loader' | 'arm64-loader';

export type FirstStage =
  /** The client runs iPXE: its boot script (GET /boot/ipxe). */
  | { readonly ok: true; readonly kind: 'ipxe-script' }
  /** A loader file: a TFTP path under the loaders directory, or a file the HTTP server serves under /boot/. */
  | { readonly ok: true; readonly kind: LoaderKind; readonly loader: string; readonly via: 'tftp' | 'http' }
  | { readonly ok: false; readonly reason: string };

export interface FirstStageOptions {
  /** Loader for arm64 UEFI clients (arch 11, and 19 over HTTP). */
  readonly arm64BootFile: string;
  /** x86-64 UEFI PCs without a choice of their own (the host's uefiBoot) boot this way. */
  readonly defaultUefiBoot: UefiBoot;
}

/** The host's own choice, else the appliance's. */
export function uefiBootOf(host: Pick<BootHost, 'uefiBoot'> | undefined, defaultUefiBoot: UefiBoot): UefiBoot {
  return host?.uefiBoot ?? defaultUefiBoot;
}

export function decideFirstStage(request: FirstStageRequest, host: Pick<BootHost, 'efiLoader' | 'uefiBoot'> | undefined, options: FirstStageOptions): FirstStage {
  if (request.isIpxe) return { ok: true, kind: 'ipxe-script' };
  const arch = request.arch ?? ClientArch.X86_BIOS;
  switch (arch) {
    case ClientArch.X86_BIOS:
      return { ok: true, kind: 'bios-loader', loader: BIOS_LOADER, via: 'tftp' };
    case ClientArch.EFI_X64_BC:
    case ClientArch.EFI_X64:
      if (uefiBootOf(host, options.defaultUefiBoot) === 'signed') return { ok: true, kind: 'signed-loader', loader: SIGNED_SHIM, via: 'tftp' };
      return { ok: true, kind: 'efi-loader', loader: host?.efiLoader ?? DEFAULT_EFI_LOADER, via: 'tftp' };
    case ClientArch.EFI_IA32:
      return { ok: true, kind: 'efi-loader', loader: host?.efiLoader ?? DEFAULT_EFI_LOADER, via: 'tftp' };
    case ClientArch.EFI_X64_HTTP:
      return { ok: true, kind: 'http-loader', loader: HTTP_EFI_LOADER, via: 'http' };
    case ClientArch.EFI_ARM64:
      return { ok: true, kind: 'arm64-loader', loader: options.arm64BootFile, via: 'tftp' };
    case ClientArch.EFI_ARM64_HTTP:
      return { ok: true, kind: 'http-loader', loader: options.arm64BootFile, via: 'http' };
    default:
      return { ok: false, reason: `client architecture ${arch} has no boot file; supported: 0, 6, 7, 9, 11, 16, 19` };
  }
}

// ---------------------------------------------------------------------------------------------
// iPXE script (HTTP)

export interface BootRequest {
  readonly platform: IpxePlatform;
  /** `${net0/chip}`: "undionly" once undionly.kpxe drives the NIC. */
  readonly chip: string | null;
  /** Whether the request comes from the address DHCP tied to the MAC (BootAddresses.check). */
  readonly address: AddressCheck;
}

/** What the PC's screen says about it. */
export interface PcView {
  readonly name: string;
  readonly registered: boolean;
}

/** Menu actions that need a technician's login. The menu always offers the local disk too: its timeout goes there. */
export type MenuAction = 'capture' | 'deploy' | 'register';

export interface MenuScreen extends PcView {
  readonly actions: readonly MenuAction[];
}

/**
 * `T` is the caller's task type: the route gets back the record it handed in (to mint its token),
 * the scripts see only {@link BootTask}.
 */
export type ScriptDecision<T extends BootTask = BootTask> =
  | { readonly kind: 'chain-undionly'; readonly loader: string; readonly reason: string }
  | { readonly kind: 'client'; readonly task: T; readonly reason: string }
  | { readonly kind: 'unconfirmed'; readonly task: T; readonly pc: PcView; readonly method: LocalBoot; readonly reason: string }
  | { readonly kind: 'local'; readonly method: LocalBoot; readonly reason: string }
  /** `deploy` is the PC's last deploy that started; `active` when the server still counts it as running. */
  | { readonly kind: 'unfinished'; readonly deploy: T; readonly active: boolean; readonly pc: PcView; readonly method: LocalBoot; readonly reason: string }
  | { readonly kind: 'menu'; readonly menu: MenuScreen; readonly method: LocalBoot; readonly reason: string };

export interface PolicyOptions {
  readonly defaultLocalBoot: LocalBoot;
  readonly biosUndionlyHop: boolean;
}

export function decideBoot<T extends BootTask>(
  host: BootHost,
  task: T | undefined,
  request: BootRequest,
  options: PolicyOptions,
  /** The PC's most recent deploy that started writing its disk (TaskService.lastStartedDeploy). */
  lastDeploy?: T,
): ScriptDecision<T> {
  if (options.biosUndionlyHop && request.platform === 'pcbios' && request.chip !== 'undionly') {
    return { kind: 'chain-undionly', loader: BIOS_LOADER, reason: `BIOS NIC ROM is iPXE; chaining ${BIOS_LOADER} once` };
  }
  const method = localBootMethod(host, request.platform, options.defaultLocalBoot);
  const pc: PcView = { name: host.name, registered: host.registered };
  if (task && (task.state === 'queued' || task.state === 'booting')) {
    if (!request.address.confirmed) {
      return { kind: 'unconfirmed', task, pc, method, reason: `${task.kind} task ${task.id} pending, but no token for this request: ${request.address.why}` };
    }
    return { kind: 'client', task, reason: `${task.kind} task ${task.id} pending` };
  }
  if (task && task.kind === 'deploy') {
    // The PC restarted while its deploy was writing the disk: what is on it is incomplete.
    return { kind: 'unfinished', deploy: task, active: true, pc, method, reason: `deploy task ${task.id} is ${task.state}; the PC restarted during it, its disk is incomplete` };
  }
  if (task) {
    // running/verifying capture: the client already booted once for this task; a second boot
    // means the PC restarted mid-transfer, which must not start the client again.
    return { kind: 'local', method, reason: `task ${task.id} is ${task.state}; not restarting the client` };
  }
  if (lastDeploy && lastDeploy.state !== 'done') {
    return { kind: 'unfinished', deploy: lastDeploy, active: false, pc, method, reason: `deploy task ${lastDeploy.id} ${lastDeploy.state} after it started writing the disk; not booting the incomplete disk` };
  }
  const menu: MenuScreen = { ...pc, actions: menuActions(host.registered) };
  return { kind: 'menu', menu, method, reason: host.registered ? 'registered PC, no task: menu' : 'PC not registered yet: menu' };
}

/** A registered PC's menu drops "register". */
export function menuActions(registered: boolean): readonly MenuAction[] {
  return registered ? ['capture', 'deploy'] : ['capture', 'deploy', 'register'];
}

/** sanboot needs a BIOS drive number; UEFI firmware takes the boot back with exit. */
export function localBootMethod(host: Pick<BootHost, 'localBoot'> | undefined, platform: IpxePlatform, defaultLocalBoot: LocalBoot): LocalBoot {
  return platform === 'pcbios' ? (host?.localBoot ?? defaultLocalBoot) : 'exit';
}

// ---------------------------------------------------------------------------------------------
// The Booter: the questions the servers ask

/** The iPXE script's question: the PC by MAC, and what its iPXE reported. */
export interface ScriptRequest extends BootRequest {
  readonly mac: string;
}

/**
 * What the DHCP and HTTP servers ask about a PC (Pixiecore's Booter). They render the answer into
 * DHCP options or an iPXE script and decide nothing themselves; the TFTP server only serves the
 * loader files the answers name.
 */
export interface Booter<T extends BootTask = BootTask> {
  /** DHCP: which first-stage file this PXE client gets, or why it gets none. */
  firstStage(request: FirstStageRequest): FirstStage;
  /** HTTP GET /boot/ipxe: what the PC's iPXE script does now. */
  script(request: ScriptRequest): ScriptDecision<T>;
}

/** What the booter reads about a PC by MAC: lookups in memory, no I/O and no changes. */
export interface BootFacts<T extends BootTask> {
  host(mac: string): BootHost | undefined;
  activeTask(mac: string): T | undefined;
  lastStartedDeploy(mac: string): T | undefined;
}

export interface BooterOptions extends PolicyOptions, FirstStageOptions {}

export function booterOptions(config: Pick<Config, 'localBoot' | 'arm64BootFile' | 'uefiBoot'>): BooterOptions {
  return { defaultLocalBoot: config.localBoot, biosUndionlyHop: true, arm64BootFile: config.arm64BootFile, defaultUefiBoot: config.uefiBoot };
}

/**
 * A PC the host table does not hold. The boot routes sight a PC before asking, but a sighting
 * the auto-registration limits refused stores nothing (HostService.sighted), and a PC may be
 * removed meanwhile: the policy treats such a PC as an unregistered one.
 */
const UNKNOWN_PC: BootHost = { name: '', registered: false, localBoot: null, efiLoader: DEFAULT_EFI_LOADER, uefiBoot: null };

export function policyBooter<T extends BootTask>(facts: BootFacts<T>, options: BooterOptions): Booter<T> {
  return {
    firstStage: (request) => decideFirstStage(request, facts.host(request.mac), options),
    script: (request) =>
      decideBoot(facts.host(request.mac) ?? UNKNOWN_PC, facts.activeTask(request.mac), request, options, facts.lastStartedDeploy(request.mac)),
  };
}

/** The facts from the appliance's host and task services. */
export function serviceFacts(hosts: Pick<HostService, 'get'>, tasks: Pick<TaskService, 'activeFor' | 'lastStartedDeploy'>): BootFacts<TaskRecord> {
  return {
    host: (mac) => hosts.get(mac),
    activeTask: (mac) => tasks.activeFor(mac),
    lastStartedDeploy: (mac) => tasks.lastStartedDeploy(mac),
  };
}
