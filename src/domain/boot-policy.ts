/**
 * Boot policy: what one PC does when it network-boots now. Pure: it reads the host
 * and its task and returns a decision; the HTTP route carries out side effects
 * (registering the PC, minting the task token) and renders the script.
 *
 * Rules, in order:
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
 */
import type { HostRecord, LocalBoot, TaskRecord } from './database.js';
import type { AddressCheck } from './boot-addresses.js';

export type IpxePlatform = 'pcbios' | 'efi' | 'unknown';

export interface BootRequest {
  readonly platform: IpxePlatform;
  /** `${net0/chip}`: "undionly" once undionly.kpxe drives the NIC. */
  readonly chip: string | null;
  /** Whether the request comes from the address DHCP tied to the MAC (BootAddresses.check). */
  readonly address: AddressCheck;
}

export type BootDecision =
  | { readonly kind: 'chain-undionly'; readonly reason: string }
  | { readonly kind: 'client'; readonly task: TaskRecord; readonly reason: string }
  | { readonly kind: 'unconfirmed'; readonly task: TaskRecord; readonly method: LocalBoot; readonly reason: string }
  | { readonly kind: 'local'; readonly method: LocalBoot; readonly reason: string }
  /** `deploy` is the PC's last deploy that started; `active` when the server still counts it as running. */
  | { readonly kind: 'unfinished'; readonly deploy: TaskRecord; readonly active: boolean; readonly method: LocalBoot; readonly reason: string }
  | { readonly kind: 'menu'; readonly method: LocalBoot; readonly registered: boolean; readonly reason: string };

export interface PolicyOptions {
  readonly defaultLocalBoot: LocalBoot;
  readonly biosUndionlyHop: boolean;
}

export function decideBoot(
  host: HostRecord,
  task: TaskRecord | undefined,
  request: BootRequest,
  options: PolicyOptions,
  /** The PC's most recent deploy that started writing its disk (TaskService.lastStartedDeploy). */
  lastDeploy?: TaskRecord,
): BootDecision {
  if (options.biosUndionlyHop && request.platform === 'pcbios' && request.chip !== 'undionly') {
    return { kind: 'chain-undionly', reason: 'BIOS NIC ROM is iPXE; chaining undionly.kpxe once' };
  }
  const method = localBootMethod(host, request.platform, options.defaultLocalBoot);
  if (task && (task.state === 'queued' || task.state === 'booting')) {
    if (!request.address.confirmed) {
      return { kind: 'unconfirmed', task, method, reason: `${task.kind} task ${task.id} pending, but no token for this request: ${request.address.why}` };
    }
    return { kind: 'client', task, reason: `${task.kind} task ${task.id} pending` };
  }
  if (task && task.kind === 'deploy') {
    // The PC restarted while its deploy was writing the disk: what is on it is incomplete.
    return { kind: 'unfinished', deploy: task, active: true, method, reason: `deploy task ${task.id} is ${task.state}; the PC restarted during it, its disk is incomplete` };
  }
  if (task) {
    // running/verifying capture: the client already booted once for this task; a second boot
    // means the PC restarted mid-transfer, which must not start the client again.
    return { kind: 'local', method, reason: `task ${task.id} is ${task.state}; not restarting the client` };
  }
  if (lastDeploy && lastDeploy.state !== 'done') {
    return { kind: 'unfinished', deploy: lastDeploy, active: false, method, reason: `deploy task ${lastDeploy.id} ${lastDeploy.state} after it started writing the disk; not booting the incomplete disk` };
  }
  if (host.registered) return { kind: 'menu', method, registered: true, reason: 'registered PC, no task: menu' };
  return { kind: 'menu', method, registered: false, reason: 'PC not registered yet: menu' };
}

/** sanboot needs a BIOS drive number; UEFI firmware takes the boot back with exit. */
export function localBootMethod(host: HostRecord | undefined, platform: IpxePlatform, defaultLocalBoot: LocalBoot): LocalBoot {
  return platform === 'pcbios' ? (host?.localBoot ?? defaultLocalBoot) : 'exit';
}
