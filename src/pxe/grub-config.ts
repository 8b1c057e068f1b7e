/**
 * Renders the boot policy's decisions (domain/boot-policy.ts) as GRUB configuration for the signed
 * chain: Debian's shim loads Debian's signed network GRUB, which reads `grub/grub.cfg` from our TFTP
 * server ({@link grubBootstrap}) and from there this PC's own file, named by its MAC. Pure: every
 * value that reaches a script is checked or quoted here.
 *
 * Debian's signed grubnetx64 carries no http module, so the per-PC file and the imaging client come
 * over TFTP. Under Secure Boot GRUB loads no module and boots only kernels shim trusts: Debian's own,
 * which is the kernel the client is built from.
 *
 * GRUB cannot send a form, so every action that needs a technician's login starts the imaging client
 * in menu mode (boot/client/lib/menu.sh), which asks for the login and sends the action itself, as
 * the iPXE menu does for iPXE builds without PARAM_CMD.
 */
import type { BootTask, MenuScreen, PcView, ScriptDecision } from '../domain/boot-policy.js';

/** Where the per-PC files live under GRUB's prefix (`(tftp,SERVER)/grub`). */
export const GRUB_PC_DIR = 'pc';
/** The TFTP names of the imaging client's files, for GRUB's `linux` and `initrd`. */
export const GRUB_CLIENT_FILES = { kernel: 'client/vmlinuz', initrd: 'client/initrd.img' } as const;

export interface GrubContext {
  /** host:port of our HTTP server as the PC reaches it (the client talks to it). */
  readonly httpBase: string;
  readonly mac: string;
  readonly menuTimeoutSeconds: number;
}

/** Inside single quotes GRUB expands nothing; only a quote could end the string, and it never gets through. */
function quoted(text: string): string {
  return `'${text.replace(/[^\x20-\x7e]|'/g, '_')}'`;
}

/** Values that go onto the kernel line unquoted. */
const KERNEL_WORD = /^[A-Za-z0-9._:,\-[\]_]{1,200}$/;

function kernelArgs(args: readonly string[]): string {
  for (const a of args) if (!KERNEL_WORD.test(a.replace(/^[a-z.]+=/, ''))) throw new Error(`refusing to put ${JSON.stringify(a)} onto a kernel line`);
  return args.join(' ');
}

/** Ask the server again for this PC's file (after a failure, or when a technician says so). */
function askAgainLines(): string[] {
  return [`configfile $prefix/${GRUB_PC_DIR}/$net_default_mac`];
}

/**
 * The PC's own boot loader, with Secure Boot still on: Windows Boot Manager on any disk's ESP, else
 * the removable-media path every UEFI disk may carry, else back to the firmware, which tries its next
 * boot entry. GRUB under shim verifies what it chainloads against the firmware's keys, so this boots
 * only signed loaders, as the firmware itself would.
 */
function localLines(reason: string): string[] {
  const paths = ['/EFI/Microsoft/Boot/bootmgfw.efi', '/EFI/BOOT/BOOTX64.EFI'];
  return [
    `echo ${quoted(`netclone: ${reason}`)}`,
    ...paths.flatMap((p) => [
      `if search --no-floppy --file --set=nc_disk ${p}; then`,
      `  echo ${quoted(`netclone: booting the local disk (${p})`)}`,
      // chainloader hands the firmware the device of $root, not of the file: without this the
      // loader starts believing it came from the network and cannot find its own files.
      '  set root=$nc_disk',
      `  chainloader ${p}`,
      '  boot',
      'fi',
    ]),
    `echo ${quoted('netclone: no boot loader found on the local disks; handing back to the firmware')}`,
    'exit',
  ];
}

function clientLines(args: readonly string[], what: string): string[] {
  return [
    `echo ${quoted(what)}`,
    `linux /${GRUB_CLIENT_FILES.kernel} ${kernelArgs(args)}`,
    `initrd /${GRUB_CLIENT_FILES.initrd}`,
    'boot',
    `echo ${quoted('netclone: could not load the imaging client; is it built (npm run build:client)?')}`,
    'sleep 30',
    ...askAgainLines(),
  ];
}

/** The imaging client in menu mode: console=tty0 last, so the login is asked on the PC's own screen. */
function clientMenuEntry(ctx: GrubContext, title: string): string[] {
  const args = ['console=ttyS0,115200', 'console=tty0', 'panic=0', `netclone.server=${ctx.httpBase}`, 'netclone.mode=menu'];
  return [
    `menuentry ${quoted(title)} --id client {`,
    ...clientLines(args, 'netclone: starting the imaging client; log in there to capture, deploy or register this PC').map((l) => `  ${l}`),
    '}',
  ];
}

function localEntry(title: string, reason: string): string[] {
  return [`menuentry ${quoted(title)} --id local {`, ...localLines(reason).map((l) => `  ${l}`), '}'];
}

function header(ctx: GrubContext, pc: PcView, lines: readonly string[]): string[] {
  return [
    '# netclone: the boot configuration of this PC, decided by the server for this boot only',
    `echo ${quoted(`netclone - PC ${pc.name ? `${pc.name} (${ctx.mac})` : ctx.mac}`)}`,
    ...lines.map((l) => `echo ${quoted(l)}`),
  ];
}

function menu(timeoutSeconds: number | null, defaultId: string, entries: readonly string[]): string[] {
  return ['set timeout_style=menu', `set timeout=${timeoutSeconds ?? -1}`, `set default=${defaultId}`, ...entries];
}

export function grubClient(ctx: GrubContext, task: Pick<BootTask, 'id' | 'kind' | 'image'>, token: string): string {
  const args = ['console=tty0', 'console=ttyS0,115200', 'panic=0', `netclone.server=${ctx.httpBase}`, `netclone.task=${task.id}`, `netclone.token=${token}`];
  return [
    '# netclone: the boot configuration of this PC, decided by the server for this boot only',
    ...clientLines(args, `netclone: ${task.kind} of image ${task.image} for ${ctx.mac}`),
    '',
  ].join('\n');
}

export function grubLocal(reason: string): string {
  return ['# netclone: this PC boots its own disk', ...localLines(reason), ''].join('\n');
}

export function grubMenu(ctx: GrubContext, screen: MenuScreen): string {
  return [
    ...header(ctx, screen, [screen.registered ? 'This PC is registered; it has no task.' : 'This PC is not registered with netclone.']),
    ...menu(ctx.menuTimeoutSeconds, 'local', [
      ...localEntry('Boot the local disk', 'no task for this PC'),
      ...(screen.actions.length > 0 ? clientMenuEntry(ctx, 'Capture, deploy or register this PC (technician login)') : []),
    ]),
    '',
  ].join('\n');
}

export function grubUnconfirmed(ctx: GrubContext, pc: PcView, task: Pick<BootTask, 'kind'>): string {
  return [
    ...header(ctx, pc, [
      `A ${task.kind} task waits for this PC, but the server could not confirm`,
      'that this request comes from it (the server log says why).',
    ]),
    ...menu(ctx.menuTimeoutSeconds, 'local', [
      ...localEntry('Boot the local disk', 'task not confirmed for this request'),
      ...clientMenuEntry(ctx, `Log in at the PC to start the ${task.kind} (imaging client)`),
    ]),
    '',
  ].join('\n');
}

/** As the iPXE screen: the incomplete disk is booted only when a technician picks it; no timeout. */
export function grubUnfinishedDeploy(ctx: GrubContext, pc: PcView, deploy: Pick<BootTask, 'image' | 'state' | 'reason'>, active: boolean): string {
  const what = active
    ? [`The deploy of image ${deploy.image} onto this PC is still ${deploy.state} on the server,`, 'but the PC restarted during it. The server fails it when the PC stays silent, or cancel it on the admin page.']
    : [`The deploy of image ${deploy.image} onto this PC did not finish (${deploy.state}):`, (deploy.reason ?? 'no reason recorded').slice(0, 160)];
  return [
    ...header(ctx, pc, [...what, 'Its disk is incomplete: netclone does not boot it until a deploy finishes.']),
    ...menu(null, 'again', [
      `menuentry ${quoted('Ask the server again (after queuing a deploy on the admin page)')} --id again {`,
      `  echo ${quoted('netclone: asking the server again')}`,
      ...askAgainLines().map((l) => `  ${l}`),
      '}',
      ...(active ? [] : clientMenuEntry(ctx, 'Log in at the PC to deploy again (imaging client; erases the disk)')),
      ...localEntry('Boot the incomplete local disk anyway', 'booting the incomplete disk as the technician chose'),
    ]),
    '',
  ].join('\n');
}

/** One decision of the policy as this PC's file. 'chain-undionly' concerns BIOS iPXE only and never reaches GRUB. */
export function renderGrubDecision<T extends BootTask>(ctx: GrubContext, decision: Exclude<ScriptDecision<T>, { kind: 'client' }>): string {
  switch (decision.kind) {
    case 'chain-undionly':
    case 'local':
      return grubLocal(decision.reason);
    case 'unconfirmed':
      return grubUnconfirmed(ctx, decision.pc, decision.task);
    case 'unfinished':
      return grubUnfinishedDeploy(ctx, decision.pc, decision.deploy, decision.active);
    case 'menu':
      return grubMenu(ctx, decision.menu);
  }
}

/**
 * `grub/grub.cfg`, the file Debian's network GRUB reads first (its prefix is `/grub` on the TFTP
 * server it came from): it asks for this PC's own file by the MAC of the interface it booted on.
 */
export function grubBootstrap(): string {
  return [
    '# netclone: the signed chain (shim, GRUB) asks the server for the configuration of this PC',
    'if [ -z "$net_default_mac" ]; then',
    `  echo ${quoted('netclone: GRUB knows no network interface, so it cannot ask the server; booting the next device')}`,
    '  sleep 15',
    '  exit',
    'fi',
    ...askAgainLines(),
    `echo ${quoted('netclone: the server sent no configuration for this PC; booting the next device')}`,
    'sleep 15',
    'exit',
    '',
  ].join('\n');
}

/** The MAC in a per-PC file name (`pc/aa:bb:…`), as GRUB's `$net_default_mac` spells it. */
export function macOfGrubPath(segments: readonly string[]): string | null {
  if (segments.length !== 3 || segments[0] !== 'grub' || segments[1] !== GRUB_PC_DIR) return null;
  return /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(segments[2]) ? segments[2].toLowerCase() : null;
}
