/**
 * What a technician can do, in one place, so the HTML page and the JSON API run the same
 * code and can never drift apart.
 */
import type { HostRecord, TaskRecord } from '../domain/database.js';
import { HostError } from '../domain/hosts.js';
import { isActive, TaskError } from '../domain/tasks.js';
import { normalizeMac } from '../lib/mac.js';
import { CatalogError, requireImageName, type CatalogImageDetail, type VerifyTracker } from './verify-tracker.js';
import type { WebContext } from './context.js';
import type { WakeSender } from '../lib/wake-on-lan.js';

export type HostState = 'idle' | 'task pending' | 'imaging' | 'failed';

/** What a technician may change on a host: its name, image, and how it leaves iPXE. */
export interface HostPatchInput {
  name?: string;
  assignedImage?: string | null;
  localBoot?: 'exit' | 'sanboot' | null;
  efiLoader?: 'snponly.efi' | 'ipxe.efi';
}

export function hostState(host: HostRecord, tasks: readonly TaskRecord[]): HostState {
  const mine = tasks.filter((t) => t.mac === host.mac);
  const active = mine.find(isActive);
  if (active) return active.state === 'running' || active.state === 'verifying' ? 'imaging' : 'task pending';
  const last = [...mine].sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
  return last?.state === 'failed' ? 'failed' : 'idle';
}

export function requireMac(input: string): string {
  const mac = normalizeMac(String(input));
  if (!mac) throw new HostError(400, `"${String(input).slice(0, 40)}" is not a MAC address (expected aa:bb:cc:dd:ee:ff)`);
  return mac;
}

export interface StartTaskInput {
  readonly kind: 'capture' | 'deploy';
  readonly mac: string;
  /** Capture: the name to store under (required). Deploy: defaults to the host's assigned image. */
  readonly image?: string;
  readonly wake?: boolean;
  readonly after?: 'reboot' | 'poweroff';
  readonly diskSerial?: string | null;
}

export interface StartTaskResult {
  readonly task: TaskRecord;
  /** Where the magic packet went, or why it did not. */
  readonly wake: { sent: boolean; detail: string } | null;
}

export class Actions {
  constructor(
    private readonly ctx: WebContext,
    readonly verifier: VerifyTracker,
    private readonly wakeSender: WakeSender,
  ) {}

  async imageExists(name: string): Promise<boolean> {
    const list = await this.ctx.store.list();
    return list.some((i) => i.name === name);
  }

  async requireImage(name: string): Promise<void> {
    requireImageName(name);
    if (!(await this.imageExists(name))) throw new CatalogError(404, `there is no image "${name}"; the Images page lists them`);
  }

  async addHost(mac: string, name?: string): Promise<HostRecord> {
    return this.ctx.hosts.add(requireMac(mac), name === '' ? undefined : name);
  }

  async updateHost(mac: string, patch: HostPatchInput): Promise<HostRecord> {
    this.ctx.hosts.require(requireMac(mac));
    if (patch.assignedImage !== undefined && patch.assignedImage !== null) {
      requireImageName(patch.assignedImage);
      if (!(await this.imageExists(patch.assignedImage))) {
        throw new CatalogError(400, `there is no image "${patch.assignedImage}" to assign; capture one first or pick one from the Images page`);
      }
    }
    return this.ctx.hosts.update(mac, patch);
  }

  async removeHost(mac: string): Promise<void> {
    const active = this.ctx.tasks.activeFor(requireMac(mac));
    if (active) throw new HostError(409, `${active.mac} has a ${active.kind} task in progress (${active.state}); cancel it before removing the host`);
    await this.ctx.hosts.remove(mac);
  }

  async startTask(input: StartTaskInput): Promise<StartTaskResult> {
    const host = this.ctx.hosts.require(requireMac(input.mac));
    let image: string;
    if (input.kind === 'capture') {
      if (!input.image) throw new TaskError(400, 'a capture needs the name to store the image under');
      image = requireImageName(input.image);
    } else {
      const chosen = input.image || host.assignedImage;
      if (!chosen) throw new TaskError(400, `${host.mac} has no assigned image; choose an image to deploy`);
      image = requireImageName(chosen);
      if (!(await this.imageExists(image))) throw new CatalogError(404, `there is no image "${image}"; capture one first`);
    }
    const task = await this.ctx.tasks.create({ kind: input.kind, mac: host.mac, image, after: input.after, diskSerial: input.diskSerial ?? null });
    let wake: StartTaskResult['wake'] = null;
    if (input.wake) {
      try {
        const target = await this.wakeSender(host.mac);
        wake = { sent: true, detail: `magic packet sent to ${target.address}:${target.port}` };
        await this.ctx.tasks.note(task, `Wake-on-LAN ${wake.detail}`);
      } catch (err) {
        wake = { sent: false, detail: `Wake-on-LAN failed: ${err instanceof Error ? err.message : String(err)}; switch the PC on by hand` };
        await this.ctx.events.record('warn', wake.detail, host.mac);
      }
    }
    return { task, wake };
  }

  async cancelTask(id: string): Promise<TaskRecord> {
    return this.ctx.tasks.cancel(id);
  }

  /** An image with its versions newest first. */
  async image(name: string): Promise<CatalogImageDetail> {
    requireImageName(name);
    const d = await this.ctx.store.show(name);
    return { ...d, versions: [...d.versions].sort((a, b) => b.version - a.version) };
  }

  async renameImage(from: string, to: string): Promise<void> {
    requireImageName(from);
    requireImageName(to);
    if (from === to) return;
    if (!(await this.imageExists(from))) throw new CatalogError(404, `there is no image "${from}"`);
    if (await this.imageExists(to)) throw new CatalogError(409, `an image named "${to}" exists already; pick another name or delete it first`);
    const busy = this.ctx.tasks.list({ active: true }).find((t) => t.image === from);
    if (busy) throw new TaskError(409, `image "${from}" is in use by a ${busy.kind} task for ${busy.mac}; wait for it or cancel it`);
    await storeCall(() => this.ctx.store.renameImage(from, to));
    this.verifier.rename(from, to);
    for (const h of this.ctx.hosts.list().filter((x) => x.assignedImage === from)) {
      await this.ctx.hosts.update(h.mac, { assignedImage: to });
    }
    await this.ctx.events.record('info', `image ${from} renamed to ${to}`);
  }

  async removeVersion(name: string, version: number): Promise<void> {
    requireImageName(name);
    if (!Number.isInteger(version) || version < 1) throw new CatalogError(400, `"${version}" is not a version number`);
    const busy = this.ctx.tasks.list({ active: true }).find((t) => t.image === name && t.kind === 'deploy');
    if (busy) throw new TaskError(409, `image "${name}" is being deployed to ${busy.mac}; wait for it or cancel it`);
    await storeCall(() => this.ctx.store.removeVersion(name, version));
    await this.ctx.events.record('info', `image ${name} version ${version} deleted`);
  }

  async nbdUrl(name: string, ttlSeconds: number | undefined, host: string | undefined): Promise<{ uri: string; exportName: string; expiresAt: string }> {
    requireImageName(name);
    if (!(await this.imageExists(name))) throw new CatalogError(404, `there is no image "${name}"`);
    return this.ctx.nbd.createUrl({ image: name, write: false, ttlSeconds, host });
  }
}

/** The store reports "in use" conflicts as plain errors; they are the technician's 409, not our 500. */
async function storeCall<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof Error && /is being captured|already exists/.test(e.message) && !('status' in e)) throw new CatalogError(409, e.message);
    throw e;
  }
}
