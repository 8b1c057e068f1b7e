/** Renders iPXE scripts. Pure: every value that reaches a script is checked or quoted here. */
import type { LocalBoot, TaskRecord } from '../appliance/database.js';

export interface ScriptContext {
  /** host:port of our HTTP server as the PC reaches it. */
  readonly httpBase: string;
  readonly mac: string;
  readonly menuTimeoutSeconds: number;
}

/** iPXE expands ${...} and treats some characters specially: only allow a safe alphabet through. */
function safe(text: string): string {
  return text.replace(/[^A-Za-z0-9 ,._:/()@+-]/g, '_');
}

function localBootLines(method: LocalBoot): string[] {
  return method === 'sanboot'
    ? ['echo netclone: booting the local disk (sanboot)', 'sanboot --no-describe --drive 0x80 || exit']
    : ['echo netclone: booting the local disk', 'exit'];
}

export function scriptChainUndionly(ctx: ScriptContext): string {
  // Our own address, not ${next-server}: with proxy DHCP, next-server is the office DHCP server's.
  const tftpHost = ctx.httpBase.replace(/:\d+$/, '');
  return [
    '#!ipxe',
    `echo netclone: ${safe(ctx.mac)} chaining undionly.kpxe`,
    // Fetch and run apart: when undionly.kpxe returns (its script chose the local disk, or it failed),
    // this ROM must leave too. Falling through to the HTTP chain would use a network stack that
    // undionly already unloaded, and SeaBIOS would never get the boot back.
    `imgfetch --name undionly tftp://${tftpHost}/undionly.kpxe || goto failed`,
    'imgexec undionly ||',
    'echo netclone: undionly.kpxe returned; leaving for the next boot device',
    'exit',
    ':failed',
    `echo netclone: could not load undionly.kpxe from ${tftpHost}; continuing with this ROM`,
    `chain http://${ctx.httpBase}/boot/ipxe?mac=\${net0/mac}&platform=\${platform}&arch=\${buildarch}&chip=undionly`,
    '',
  ].join('\n');
}

export function scriptClient(ctx: ScriptContext, task: TaskRecord, token: string): string {
  const base = `http://${ctx.httpBase}/boot/client`;
  const args = [
    'initrd=initrd.img',
    'console=tty0',
    'console=ttyS0,115200',
    'panic=0',
    `netclone.server=${ctx.httpBase}`,
    `netclone.task=${task.id}`,
    `netclone.token=${token}`,
  ];
  return [
    '#!ipxe',
    `echo netclone: ${safe(task.kind)} of image ${safe(task.image)} for ${safe(ctx.mac)}`,
    `kernel ${base}/vmlinuz ${args.join(' ')} || goto failed`,
    `initrd --name initrd.img ${base}/initrd.img || goto failed`,
    'boot || goto failed',
    ':failed',
    'echo netclone: could not load the imaging client; is it built (npm run build:client)?',
    'prompt --timeout 30000 Press a key to retry || exit',
    `chain http://${ctx.httpBase}/boot/ipxe?mac=\${net0/mac}&platform=\${platform}&arch=\${buildarch}&chip=\${net0/chip}`,
    '',
  ].join('\n');
}

export function scriptLocal(method: LocalBoot, reason: string): string {
  return ['#!ipxe', `echo netclone: ${safe(reason)}`, ...localBootLines(method), ''].join('\n');
}

export interface MenuHost {
  readonly registered: boolean;
  /** The name an operator gave the PC, shown in the menu's title; '' for none. */
  readonly name: string;
}

export function scriptMenu(ctx: ScriptContext, method: LocalBoot, images: readonly string[], host: MenuHost): string {
  const action = (what: string): string =>
    `chain http://${ctx.httpBase}/boot/ipxe/action?mac=\${net0/mac}&platform=\${platform}&do=${what} || goto local`;
  const lines = [
    '#!ipxe',
    `menu netclone - PC ${safe(host.name ? `${host.name} (${ctx.mac})` : ctx.mac)}`,
    host.registered
      ? 'item --gap This PC is registered; it has no task.'
      : 'item --gap This PC is not registered with netclone.',
    'item local     Boot the local disk',
    'item capture   Capture this PC into a new image',
    ...(images.length > 0 ? ['item deploy    Deploy an image onto this PC (erases its disk)'] : []),
    ...(host.registered ? [] : ['item register  Register this PC (then boot the local disk)']),
    `choose --timeout ${ctx.menuTimeoutSeconds * 1000} --default local selected || goto local`,
    'goto ${selected}',
    ':capture',
    action('capture'),
    ...(host.registered ? [] : [':register', action('register')]),
  ];
  if (images.length > 0) {
    lines.push(':deploy', 'menu Deploy which image? This erases the disk of this PC.');
    images.slice(0, 40).forEach((name, i) => lines.push(`item img${i} ${safe(name)}`));
    lines.push('item local (cancel: boot the local disk)', 'choose selected || goto local', 'goto ${selected}');
    images.slice(0, 40).forEach((name, i) => lines.push(`:img${i}`, action(`deploy&image=${encodeURIComponent(name)}`)));
  }
  lines.push(':local', ...localBootLines(method), '');
  return lines.join('\n');
}
