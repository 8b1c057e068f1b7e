/**
 * Renders iPXE scripts from the boot policy's decisions (domain/boot-policy.ts). Pure: every value
 * that reaches a script is checked or quoted here.
 */
import type { BootTask, LocalBoot, MenuAction, MenuScreen, PcView } from '../domain/boot-policy.js';

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

/** Only names that cannot break a script line reach one (image names are this alphabet already). */
const SCRIPT_WORD = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function localBootLines(method: LocalBoot): string[] {
  return method === 'sanboot'
    ? ['echo netclone: booting the local disk (sanboot)', 'sanboot --no-describe --drive 0x80 || exit']
    : ['echo netclone: booting the local disk', 'exit'];
}

/** `loader` is the BIOS loader the policy chains (undionly.kpxe), fetched from our TFTP server. */
export function scriptChainUndionly(ctx: ScriptContext, loader: string): string {
  if (!SCRIPT_WORD.test(loader)) throw new Error(`refusing to put loader ${JSON.stringify(loader)} into an iPXE script`);
  // Our own address, not ${next-server}: with proxy DHCP, next-server is the office DHCP server's.
  const tftpHost = ctx.httpBase.replace(/:\d+$/, '');
  return [
    '#!ipxe',
    `echo netclone: ${safe(ctx.mac)} chaining ${loader}`,
    // Fetch and run apart: when undionly.kpxe returns (its script chose the local disk, or it failed),
    // this ROM must leave too. Falling through to the HTTP chain would use a network stack that
    // undionly already unloaded, and SeaBIOS would never get the boot back.
    `imgfetch --name undionly tftp://${tftpHost}/${loader} || goto failed`,
    'imgexec undionly ||',
    `echo netclone: ${loader} returned; leaving for the next boot device`,
    'exit',
    ':failed',
    `echo netclone: could not load ${loader} from ${tftpHost}; continuing with this ROM`,
    `chain http://${ctx.httpBase}/boot/ipxe?mac=\${net0/mac}&platform=\${platform}&arch=\${buildarch}&chip=undionly`,
    '',
  ].join('\n');
}

/** Where the imaging client's files are, as the PC fetches them (a GET that changes nothing). */
function clientBase(ctx: ScriptContext): string {
  return `http://${ctx.httpBase}/boot/client`;
}

export function scriptClient(ctx: ScriptContext, task: Pick<BootTask, 'id' | 'kind' | 'image'>, token: string): string {
  const base = clientBase(ctx);
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

/**
 * The imaging client in menu mode (boot/client/lib/menu.sh): no task and no token on the kernel
 * line. The technician logs in at the PC and picks the action there, and the client POSTs both,
 * so this works with every loader, including iPXE builds without `params` and a Secure Boot chain.
 * console=tty0 comes last on purpose: /dev/console, where the client asks for the login, is the
 * last console= one, and a technician at the PC types on its keyboard, not on a serial port.
 */
function clientMenuLines(ctx: ScriptContext): string[] {
  const base = clientBase(ctx);
  const args = ['initrd=initrd.img', 'console=ttyS0,115200', 'console=tty0', 'panic=0', `netclone.server=${ctx.httpBase}`, 'netclone.mode=menu'];
  return [
    ':client',
    'echo netclone: starting the imaging client; log in there to capture, deploy or register this PC',
    `kernel ${base}/vmlinuz ${args.join(' ')} || goto client-failed`,
    `initrd --name initrd.img ${base}/initrd.img || goto client-failed`,
    'boot || goto client-failed',
    ':client-failed',
    'echo netclone: could not load the imaging client; is it built (npm run build:client)?',
    'prompt --timeout 15000 Press a key to boot the local disk ||',
    'goto local',
  ];
}

export function scriptLocal(method: LocalBoot, reason: string): string {
  return ['#!ipxe', `echo netclone: ${safe(reason)}`, ...localBootLines(method), ''].join('\n');
}

/**
 * Menu actions go to the server as a form POST (iPXE `params`/`param`, `##params` on the URI),
 * never as a GET, with the credentials the technician typed into iPXE's `login`. iPXE builds
 * without PARAM_CMD (Debian's, among others) have no `params` command: the menu probes for it
 * and, where it is missing, offers the imaging client in menu mode instead (clientMenuLines),
 * which asks for the login and sends the action itself.
 */
const FORMS_PROBE = 'params && set netclone-forms 1 || set netclone-forms 0';
const IF_FORMS = 'iseq ${netclone-forms} 1 &&';
const UNLESS_FORMS = 'iseq ${netclone-forms} 1 ||';

/** The title names the PC by the name an operator gave it ('' for none) and its MAC. */
function menuTitle(ctx: ScriptContext, host: PcView): string {
  return `menu netclone - PC ${safe(host.name ? `${host.name} (${ctx.mac})` : ctx.mac)}`;
}

/** Ask for a login, then POST `fields` with it to the action route; any failure boots the local disk. */
function loginAndPost(ctx: ScriptContext, label: string, fields: ReadonlyArray<readonly [string, string]>, askLogin: boolean): string[] {
  for (const [key, value] of fields) {
    if (!SCRIPT_WORD.test(key) || !SCRIPT_WORD.test(value)) throw new Error(`refusing to put ${JSON.stringify(key)}=${JSON.stringify(value)} into an iPXE script`);
  }
  return [
    `:${label}`,
    ...(askLogin ? ['login || goto local'] : []),
    'params || goto local',
    'param mac ${net0/mac}',
    'param platform ${platform}',
    ...fields.map(([key, value]) => `param ${key} ${value}`),
    // uristring keeps spaces and other separators of a password intact through iPXE's argument split.
    'param username ${username:uristring}',
    'param password ${password:uristring}',
    `chain http://${ctx.httpBase}/boot/ipxe/action##params || goto local`,
  ];
}

const MENU_ITEMS: Readonly<Record<MenuAction, string>> = {
  capture: `${IF_FORMS} item capture   Capture this PC into a new image (log in first) ||`,
  deploy: `${IF_FORMS} item deploy    Deploy an image onto this PC (log in first; erases its disk) ||`,
  register: `${IF_FORMS} item register  Register this PC (log in first; then boot the local disk) ||`,
};

/** What each menu item POSTs as `do`: deploy first asks which image, after the login. */
const MENU_POSTS: Readonly<Record<MenuAction, string>> = { capture: 'capture', deploy: 'deploy-list', register: 'register' };

/**
 * The menu of a PC without a task: the local disk and the actions the policy offers. It names no
 * image: the list comes only after a login (`scriptDeployChoice`). Every action asks for a login
 * and is sent as a POST.
 */
export function scriptMenu(ctx: ScriptContext, method: LocalBoot, menu: MenuScreen): string {
  const lines = [
    '#!ipxe',
    FORMS_PROBE,
    menuTitle(ctx, menu),
    menu.registered
      ? 'item --gap This PC is registered; it has no task.'
      : 'item --gap This PC is not registered with netclone.',
    'item local     Boot the local disk',
    ...menu.actions.map((action) => MENU_ITEMS[action]),
    ...(menu.actions.length > 0
      ? [
          `${UNLESS_FORMS} item --gap This iPXE has no PARAM_CMD (form POSTs): the imaging client asks for the login. ||`,
          `${UNLESS_FORMS} item client    Capture, deploy or register this PC (technician login) ||`,
        ]
      : []),
    `choose --timeout ${ctx.menuTimeoutSeconds * 1000} --default local selected || goto local`,
    'goto ${selected}',
    ...menu.actions.flatMap((action) => loginAndPost(ctx, action, [['do', MENU_POSTS[action]]], true)),
    ...(menu.actions.length > 0 ? clientMenuLines(ctx) : []),
    ':local',
    ...localBootLines(method),
    '',
  ];
  return lines.join('\n');
}

/**
 * A task waits for this PC, but the request did not come from the address DHCP tied to its MAC:
 * no token. A technician at the PC may log in to start the task here; otherwise the local disk.
 */
export function scriptUnconfirmed(ctx: ScriptContext, method: LocalBoot, host: PcView, task: Pick<BootTask, 'kind'>): string {
  return [
    '#!ipxe',
    FORMS_PROBE,
    menuTitle(ctx, host),
    `item --gap A ${safe(task.kind)} task waits for this PC, but the server could not confirm`,
    'item --gap that this request comes from it (the server log says why).',
    'item local     Boot the local disk',
    `${IF_FORMS} item start     Log in and start the ${safe(task.kind)} on this PC ||`,
    `${UNLESS_FORMS} item client    Log in at the PC to start the ${safe(task.kind)} (imaging client) ||`,
    `choose --timeout ${ctx.menuTimeoutSeconds * 1000} --default local selected || goto local`,
    'goto ${selected}',
    ...loginAndPost(ctx, 'start', [['do', 'start']], true),
    ...clientMenuLines(ctx),
    ':local',
    ...localBootLines(method),
    '',
  ].join('\n');
}

/**
 * The PC's last deploy started writing its disk and did not finish: the disk is incomplete, so
 * nothing here boots it unless a technician picks that item. No timeout: the screen waits for
 * someone and says what happened. The login actions fall back to asking the server again (their
 * failure label is "local" here), never to the disk.
 */
export function scriptUnfinishedDeploy(
  ctx: ScriptContext,
  method: LocalBoot,
  host: PcView,
  deploy: Pick<BootTask, 'image' | 'state' | 'reason'>,
  active: boolean,
): string {
  const retry = !active && SCRIPT_WORD.test(deploy.image);
  const what = active
    ? `The deploy of image ${safe(deploy.image)} onto this PC is still ${safe(deploy.state)} on the server,`
    : `The deploy of image ${safe(deploy.image)} onto this PC did not finish (${safe(deploy.state)}):`;
  const why = active
    ? 'but the PC restarted during it. The server fails it when the PC stays silent, or cancel it on the admin page.'
    : safe((deploy.reason ?? 'no reason recorded').slice(0, 160));
  return [
    '#!ipxe',
    FORMS_PROBE,
    menuTitle(ctx, host),
    `item --gap ${what}`,
    `item --gap ${why}`,
    'item --gap Its disk is incomplete: netclone does not boot it until a deploy finishes.',
    ...(retry ? [`${IF_FORMS} item retry     Deploy ${deploy.image} again (log in first; erases the disk) ||`] : []),
    ...(active ? [] : [`${UNLESS_FORMS} item --gap This iPXE cannot send a login (no PARAM_CMD): queue the deploy on the admin page. ||`]),
    'item local     Ask the server again (after queuing a deploy of any image on the admin page)',
    'item disk      Boot the incomplete local disk anyway',
    'choose --default local selected || goto local',
    'goto ${selected}',
    ...(retry ? loginAndPost(ctx, 'retry', [['do', 'deploy'], ['image', deploy.image]], true) : []),
    ':local',
    'echo netclone: asking the server again',
    `chain http://${ctx.httpBase}/boot/ipxe?mac=\${net0/mac}&platform=\${platform}&arch=\${buildarch}&chip=\${net0/chip}`,
    ':disk',
    ...localBootLines(method),
    '',
  ].join('\n');
}

/** After a login: which image to deploy. The credentials iPXE holds from `login` go along again. */
export function scriptDeployChoice(ctx: ScriptContext, method: LocalBoot, images: readonly string[]): string {
  const names = images.filter((name) => SCRIPT_WORD.test(name)).slice(0, 40);
  if (names.length === 0) return scriptNotice(ctx, 'no image has a committed version yet; capture a PC first');
  const lines = ['#!ipxe', 'menu Deploy which image? This erases the disk of this PC.'];
  names.forEach((name, i) => lines.push(`item img${i} ${name}`));
  lines.push('item local (cancel: boot the local disk)', 'choose selected || goto local', 'goto ${selected}');
  names.forEach((name, i) => lines.push(...loginAndPost(ctx, `img${i}`, [['do', 'deploy'], ['image', name]], false)));
  lines.push(':local', ...localBootLines(method), '');
  return lines.join('\n');
}

/** Say something on the PC's screen, then ask for the boot script again. */
export function scriptNotice(ctx: ScriptContext, message: string): string {
  return [
    '#!ipxe',
    `echo netclone: ${safe(message)}`,
    'prompt --timeout 15000 Press a key to continue ||',
    `chain http://${ctx.httpBase}/boot/ipxe?mac=\${net0/mac}&platform=\${platform}&arch=\${buildarch}&chip=\${net0/chip}`,
    '',
  ].join('\n');
}
