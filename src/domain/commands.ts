/**
 * Everything a person can ask of the appliance, implemented once: the CLI (directly or through
 * the control socket), the JSON API, the admin pages and the menus at a PC all call these
 * methods, so validation, "is this image busy" and who may do what cannot drift apart.
 *
 * Every command names its actor. `authorize` (the one authorisation hook) runs first: an
 * operator (the CLI, a logged-in admin, an API token) may run every command; a technician
 * logged in at a PC's menu may only act on that PC. Callers authenticate before they build an
 * actor; no command runs without one.
 */
import type { Readable } from 'node:stream';
import { createReadStream } from 'node:fs';
import { mkdir, open, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from './config.js';
import type { ApiTokenRecord, Database, HostRecord, LocalBoot, TaskKind, TaskRecord, TaskTransport } from './database.js';
import type { EventLog } from './events.js';
import type { HostService } from './hosts.js';
import { isActive, type TaskService } from './tasks.js';
import type { NbdAccess, NbdUrl } from './running-server.js';
import { createApiToken, listApiTokens, revokeApiToken, setAdminPassword, type NewApiToken } from './users.js';
import type { ImageStore, VerifyResult } from '../imaging/image-store.js';
import { describeImage, type ImageDetails } from '../imaging/image-details.js';
import { importStream } from '../imaging/image-import.js';
import type { ImageSummary } from '../imaging/types.js';
import { isValidImageName } from '../imaging/names.js';
import { LayoutPlanError, mainPartition } from '../imaging/layout-plan.js';
import { mismatchMessage, modelsDiffer, pcModelOf, previewDeploy, versionOrigin, type DeployPreview } from './deploy-checks.js';
import { normalizeMac } from '../lib/mac.js';
import { wakeRepeatedly, type WakeSender } from '../lib/wake-on-lan.js';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ScheduleRecord } from './database.js';
import {
  ScheduleInputError, buildSchedule, findSchedule, hostsInGroup, imageForHost, listGroups, normalizeGroup, viewSchedule,
  type GroupSummary, type NewSchedule, type ScheduleView,
} from './schedules.js';
import type { Logger } from '../lib/log.js';
import { RetentionService, type PruneResult } from './retention.js';
import { ImageNotFoundError, VersionProtectedError } from '../imaging/image-store.js';
import { RetentionPolicyError, describePolicy, isEmptyPolicy, type RetentionPolicy } from '../imaging/retention.js';
import { ImageMetaError, type VersionMeta } from '../imaging/image-meta.js';
import type { StoreSpace } from '../imaging/store-space.js';

/** A refusal the person can act on (4xx), or 500 for what they cannot. The message says which. */
export class CommandError extends Error {
  constructor(readonly status: 400 | 401 | 403 | 404 | 409 | 500, message: string) {
    super(message);
    this.name = 'CommandError';
  }
}

export type OperatorChannel = 'cli' | 'control socket' | 'admin page' | 'api' | 'scheduler';
export type PcMenu = 'boot menu' | 'client menu';

export type Actor =
  /** The appliance's owner: root at the CLI, a logged-in admin, or an API token. */
  | { readonly kind: 'operator'; readonly name: string; readonly via: OperatorChannel }
  /** A technician who typed a login at one PC's menu: acts on that PC only. */
  | { readonly kind: 'technician'; readonly name: string; readonly via: PcMenu; readonly mac: string; readonly ip: string };

/** Every command, as the authorisation hook and the logs name it. */
export const COMMAND_NAMES = [
  'image.list', 'image.show', 'image.verify', 'image.rm', 'image.rm-version', 'image.rename', 'image.gc', 'image.url',
  'image.import', 'image.export',
  'host.add', 'host.list', 'host.update', 'host.rm', 'host.register',
  'task.create', 'task.list', 'task.show', 'task.cancel', 'task.start-at-pc',
  'admin.passwd', 'admin.token.create', 'admin.token.list', 'admin.token.revoke',
  'host.group', 'host.wake', 'group.list', 'group.wake', 'group.task', 'schedule.add', 'schedule.list', 'schedule.rm',
  'image.prune', 'image.retention', 'image.protect', 'image.unprotect', 'image.note',
] as const;

export type CommandName = (typeof COMMAND_NAMES)[number];

/** What a command acts on, for the authorisation hook. */
export interface CommandTarget {
  readonly mac?: string;
  readonly image?: string;
}

/** null: allowed. A string: why not, shown to the person as a 403. */
export type Authorize = (actor: Actor, command: CommandName, target: CommandTarget) => string | null;

/** What a technician at a PC may ask for there (the menus offer no more). */
const PC_MENU_COMMANDS: ReadonlySet<CommandName> = new Set<CommandName>(['image.list', 'host.register', 'task.create', 'task.start-at-pc']);

export const defaultAuthorize: Authorize = (actor, command, target) => {
  if (actor.kind === 'operator') return null;
  if (!PC_MENU_COMMANDS.has(command)) return `${command} is not offered at a PC; use the admin page`;
  if (target.mac !== undefined && normalizeMac(target.mac) !== actor.mac) return `a login at PC ${actor.mac} acts on that PC only`;
  return null;
};

export type HostState = 'idle' | 'task pending' | 'imaging' | 'failed';

export function hostState(host: HostRecord, tasks: readonly TaskRecord[]): HostState {
  const mine = tasks.filter((t) => t.mac === host.mac);
  const active = mine.find(isActive);
  if (active) return active.state === 'running' || active.state === 'verifying' ? 'imaging' : 'task pending';
  const last = [...mine].sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
  return last?.state === 'failed' ? 'failed' : 'idle';
}

export function requireMac(input: unknown): string {
  const mac = normalizeMac(String(input ?? ''));
  if (!mac) throw new CommandError(400, `"${String(input ?? '').slice(0, 40)}" is not a MAC address (expected aa:bb:cc:dd:ee:ff)`);
  return mac;
}

export function requireImageName(name: unknown): string {
  if (typeof name !== 'string' || !isValidImageName(name)) {
    throw new CommandError(400, `"${String(name ?? '').slice(0, 80)}" is not a valid image name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
  return name;
}

/** A capture started at a PC without a name is named after it: its name as an image name, else pc-<mac digits>. */
export function defaultCaptureImage(host: Pick<HostRecord, 'name'> | undefined, mac: string): string {
  const fromName = host?.name ? host.name.replace(/[^A-Za-z0-9._-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').replace(/\.\.+/g, '.').slice(0, 64) : '';
  return fromName && isValidImageName(fromName) ? fromName : `pc-${mac.replace(/:/g, '')}`;
}

/** What a technician may change on a host: its name, image, and how it leaves iPXE. */
export interface HostPatch {
  name?: string;
  assignedImage?: string | null;
  localBoot?: LocalBoot | null;
  efiLoader?: 'snponly.efi' | 'ipxe.efi';
  /** null: the appliance's `uefi-boot`. */
  uefiBoot?: 'ipxe' | 'signed' | null;
}

export interface StartTaskInput {
  readonly kind: TaskKind;
  readonly mac: string;
  /** Capture: the name to store under (required). Deploy: defaults to the host's assigned image. */
  readonly image?: string;
  readonly wake?: boolean;
  readonly after?: 'reboot' | 'poweroff';
  readonly diskSerial?: string | null;
  /** How the PC moves its disk; the configured `transport` when absent. */
  readonly transport?: TaskTransport;
  /**
   * Deploys only: the partition (its table index) that grows onto a larger disk or shrinks onto a
   * smaller one; the largest ntfs/ext2/3/4/xfs/btrfs partition when absent.
   */
  readonly mainPartition?: number;
  /** Deploys only: the image version to restore (issue 13); the newest when the PC starts, when absent. */
  readonly version?: number;
  /**
   * Deploys only: go ahead although the version was captured from another PC model than this PC's
   * (without it such a deploy is refused with 409).
   */
  readonly force?: boolean;
}

export interface StartTaskResult {
  readonly task: TaskRecord;
  /** Where the magic packet went, or why it did not. */
  readonly wake: { readonly sent: boolean; readonly detail: string } | null;
}

/** A task a technician started (or found waiting) at a PC, with the token its imaging client uses there. */
export interface PcTask {
  readonly task: TaskRecord;
  readonly token: string;
}

export interface ImageUrlRequest {
  readonly image: string;
  readonly write: boolean;
  readonly size?: number;
  readonly ttlSeconds?: number;
  readonly host?: string;
}

export interface Progress {
  (p: { readonly done: number; readonly total: number; readonly label?: string }): void;
}

/** Where exported bytes go: holes are passed as lengths so a file sink can leave them sparse. */
export interface ExportSink {
  begin(size: number): void;
  write(data: Buffer): Promise<void>;
  hole?(length: number): Promise<void>;
}

export interface CommandDeps {
  readonly config: Config;
  readonly logger: Logger;
  readonly db: Database;
  readonly events: EventLog;
  readonly hosts: HostService;
  readonly tasks: TaskService;
  readonly store: ImageStore;
  /** nbd:// URLs need a live NBD listener: null outside a running server. */
  readonly nbd: () => NbdAccess | null;
  /** Wake-on-LAN for "start a task and wake the PC"; absent where no network is set up (CLI without a server). */
  readonly wake?: WakeSender;
  readonly authorize?: Authorize;
  /** The time schedules are created and listed at; tests that drive the Scheduler's clock pass the same one. */
  readonly now?: () => Date;
}

/** Which active tasks keep an image from a change: any task for a remove or rename; only a deploy reads old versions. */
type BusyFor = 'remove' | 'rename' | 'remove-version';

const ZEROES = Buffer.alloc(1024 * 1024);

export class Commands {
  private readonly authorize: Authorize;
  /** Called after an image is renamed, for state kept beside the store (the web's last verify results). */
  private readonly renameListeners: Array<(from: string, to: string) => void> = [];
  /** Called after a password changed, so whoever keeps logins (the web's sessions) ends that user's. */
  private readonly passwordListeners: Array<(username: string) => void> = [];
  private readonly scheduleListeners: Array<() => void> = [];

  /** Prunes by retention policy; the server also runs it after each capture (retention-after-capture.ts). */
  readonly retention: RetentionService;

  constructor(private readonly deps: CommandDeps) {
    this.authorize = deps.authorize ?? defaultAuthorize;
    this.retention = new RetentionService({ store: deps.store, tasks: deps.tasks, events: deps.events, logger: deps.logger, keepVersions: deps.config.keepVersions });
    deps.store.setVersionsInUse((image) => this.retention.versionsInUse(image));
  }

  onImageRenamed(listener: (from: string, to: string) => void): void {
    this.renameListeners.push(listener);
  }

  /** Called after a schedule was added or removed, so the Scheduler re-arms its timer. */
  onSchedulesChanged(listener: () => void): void {
    this.scheduleListeners.push(listener);
  }

  onPasswordChanged(listener: (username: string) => void): void {
    this.passwordListeners.push(listener);
  }

  private allow(actor: Actor, command: CommandName, target: CommandTarget = {}): void {
    const why = this.authorize(actor, command, target);
    if (why !== null) {
      this.deps.logger.warn({ actor: actor.name, via: actor.via, command, ...target }, `${command} refused: ${why}`);
      throw new CommandError(403, why);
    }
  }

  // ---- images ----

  async listImages(actor: Actor): Promise<ImageSummary[]> {
    this.allow(actor, 'image.list');
    return this.deps.store.list();
  }

  /** Names of images with a committed version (what a deploy can use). */
  async imageNames(actor: Actor): Promise<string[]> {
    return (await this.listImages(actor)).map((i) => i.name);
  }

  private async requireExisting(name: string, hint: string): Promise<string> {
    requireImageName(name);
    if (!(await this.deps.store.exists(name))) throw new CommandError(404, `no image by that name ("${name}") has a committed version, nothing was changed; ${hint}`);
    return name;
  }

  /** An image with its versions newest first and its partition table. */
  async showImage(actor: Actor, name: string): Promise<ImageDetails> {
    this.allow(actor, 'image.show', { image: name });
    requireImageName(name);
    const d = await describeImage(this.deps.store, name);
    // The capturing PC by its name where the version's source names a registered PC (issue 13).
    const sourceName = (mac: string | null): string | null => (mac ? this.deps.hosts.get(mac)?.name || null : null);
    return { ...d, versions: [...d.versions].sort((a, b) => b.version - a.version).map((v) => ({ ...v, sourceName: sourceName(v.sourceMac) })) };
  }

  /**
   * Refuses a verify of an image that is not there, before a background verify starts: the page and
   * the API answer 404 at once instead of a verify that fails later.
   */
  async checkVerifiable(actor: Actor, name: string): Promise<void> {
    this.allow(actor, 'image.verify', { image: name });
    await this.requireExisting(name, '"netclone image list" and the Images page list them');
  }

  async verifyImage(actor: Actor, name: string, options: { version?: number; progress?: Progress } = {}): Promise<VerifyResult> {
    this.allow(actor, 'image.verify', { image: name });
    await this.requireExisting(name, '"netclone image list" and the Images page list them');
    const progress = options.progress;
    return this.deps.store.verify(name, {
      version: options.version,
      onProgress: progress ? (done: number, total: number) => progress({ done, total, label: 'verify' }) : undefined,
    });
  }

  private refuseIfBusy(name: string, purpose: BusyFor): void {
    const busy = this.deps.tasks.list({ active: true }).find((t) => t.image === name && (purpose !== 'remove-version' || t.kind === 'deploy'));
    if (!busy) return;
    const what = purpose === 'rename' ? 'renaming it' : purpose === 'remove' ? 'removing it' : 'deleting a version';
    throw new CommandError(409, `image "${name}" is in use by a ${busy.kind} task for ${busy.mac} (${busy.state}, task ${busy.id}); wait for it or cancel it before ${what}`);
  }

  async removeImage(actor: Actor, name: string): Promise<{ removed: string }> {
    this.allow(actor, 'image.rm', { image: name });
    await this.requireExisting(name, '"netclone image list" and the Images page list them');
    this.refuseIfBusy(name, 'remove');
    await storeConflict(() => this.deps.store.remove(name));
    await this.deps.events.record('info', `image ${name} removed`);
    return { removed: name };
  }

  async removeVersion(actor: Actor, name: string, version: number): Promise<void> {
    this.allow(actor, 'image.rm-version', { image: name });
    requireImageName(name);
    if (!Number.isInteger(version) || version < 1) throw new CommandError(400, `"${version}" is not a version number`);
    this.refuseIfBusy(name, 'remove-version');
    await storeConflict(() => this.deps.store.removeVersion(name, version));
    await this.deps.events.record('info', `image ${name} version ${version} deleted`);
  }

  async renameImage(actor: Actor, from: string, to: string): Promise<void> {
    this.allow(actor, 'image.rename', { image: from });
    requireImageName(from);
    requireImageName(to);
    if (from === to) return;
    await this.requireExisting(from, '"netclone image list" and the Images page list them');
    if (await this.deps.store.exists(to)) throw new CommandError(409, `an image named "${to}" exists already; pick another name or delete it first`);
    this.refuseIfBusy(from, 'rename');
    await storeConflict(() => this.deps.store.renameImage(from, to));
    for (const listener of this.renameListeners) listener(from, to);
    for (const h of this.deps.hosts.list().filter((x) => x.assignedImage === from)) {
      await this.deps.hosts.update(h.mac, { assignedImage: to });
    }
    await this.deps.events.record('info', `image ${from} renamed to ${to}`);
  }

  async gc(actor: Actor): ReturnType<ImageStore['gc']> {
    this.allow(actor, 'image.gc');
    return this.deps.store.gc();
  }

  /** An unguessable nbd:// URL for an image: read its newest version, or (write) capture a new one. */
  async imageUrl(actor: Actor, request: ImageUrlRequest): Promise<NbdUrl> {
    this.allow(actor, 'image.url', { image: request.image });
    const nbd = this.deps.nbd();
    if (!nbd) throw new CommandError(409, 'nbd:// URLs are issued by the running server; start it with "netclone serve"');
    if (request.write) {
      requireImageName(request.image);
      if (!request.size) throw new CommandError(400, 'a writable URL needs the disk size (--size BYTES)');
    } else {
      await this.requireExisting(request.image, '"netclone image list" and the Images page list them');
      if (request.size !== undefined) throw new CommandError(400, 'a size only makes sense for a writable URL (--write)');
    }
    return nbd.createUrl({ ...request, ttlSeconds: request.ttlSeconds ?? this.deps.config.urlTtlSeconds });
  }

  /**
   * Import a raw disk from a stream (a file, stdin, or a control-socket request body). A pipe has
   * no size up front, and a capture needs one: such input is spooled to a sparse temp file first.
   */
  async importImage(actor: Actor, name: string, input: Readable, size: number | null, source: string, progress: Progress): Promise<unknown> {
    this.allow(actor, 'image.import', { image: name });
    requireImageName(name);
    if (size === null) return this.importSpooled(actor, name, input, source, progress);
    const info = await importStream(this.deps.store, name, input, size, {
      source,
      onProgress: (done: number, total: number) => progress({ done, total, label: `import ${name}` }),
    });
    await this.deps.events.record('info', `image ${name} imported (${source})`);
    return info;
  }

  private async importSpooled(actor: Actor, name: string, input: Readable, source: string, progress: Progress): Promise<unknown> {
    const dir = path.join(this.deps.config.dataDir, 'state', 'tmp');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const spool = path.join(dir, `import-${process.pid}-${Date.now()}.raw`);
    try {
      let total = 0;
      const fh = await open(spool, 'w', 0o600);
      try {
        for await (const chunk of input as AsyncIterable<Buffer>) {
          await fh.write(chunk, 0, chunk.length, total);
          total += chunk.length;
          progress({ done: total, total: 0, label: `reading ${name}` });
        }
      } finally {
        await fh.close();
      }
      if (total === 0) throw new CommandError(400, 'the input was empty: nothing to import');
      return await this.importImage(actor, name, createReadStream(spool, { highWaterMark: 1024 * 1024 }), total, source, progress);
    } finally {
      await unlink(spool).catch(() => undefined);
    }
  }

  async exportImage(actor: Actor, name: string, sink: ExportSink, progress?: Progress): Promise<void> {
    this.allow(actor, 'image.export', { image: name });
    requireImageName(name);
    const reader = await this.deps.store.openVersion(name);
    try {
      sink.begin(reader.size);
      const step = Math.max(reader.chunkSize, 1024 * 1024);
      for (let offset = 0; offset < reader.size; offset += step) {
        const pieces = await reader.read(offset, Math.min(step, reader.size - offset));
        for (const p of pieces) {
          if (p.kind === 'data') await sink.write(p.data);
          else if (sink.hole) await sink.hole(p.length);
          else for (let left = p.length; left > 0; left -= ZEROES.length) await sink.write(ZEROES.subarray(0, Math.min(left, ZEROES.length)));
        }
        progress?.({ done: Math.min(offset + step, reader.size), total: reader.size, label: `export ${name}` });
      }
    } finally {
      await reader.close();
    }
  }

  // ---- hosts ----

  listHosts(actor: Actor): HostRecord[] {
    this.allow(actor, 'host.list');
    return this.deps.hosts.list();
  }

  async addHost(actor: Actor, mac: string, name?: string, options: { rename?: boolean } = {}): Promise<HostRecord> {
    const m = requireMac(mac);
    this.allow(actor, 'host.add', { mac: m });
    return this.deps.hosts.add(m, name === '' ? undefined : name, options);
  }

  /** Make sure a PC is registered, keeping its name; `already` says whether it was. */
  async registerHost(actor: Actor, mac: string): Promise<{ host: HostRecord; already: boolean }> {
    const m = requireMac(mac);
    this.allow(actor, 'host.register', { mac: m });
    const already = this.deps.hosts.get(m)?.registered === true;
    return { host: await this.deps.hosts.register(m), already };
  }

  async updateHost(actor: Actor, mac: string, patch: HostPatch): Promise<HostRecord> {
    const m = requireMac(mac);
    this.allow(actor, 'host.update', { mac: m });
    this.deps.hosts.require(m);
    if (patch.assignedImage !== undefined && patch.assignedImage !== null) {
      requireImageName(patch.assignedImage);
      if (!(await this.deps.store.exists(patch.assignedImage))) {
        throw new CommandError(400, `there is no image "${patch.assignedImage}" to assign; capture one first or pick one from the Images page`);
      }
    }
    return this.deps.hosts.update(m, patch);
  }

  async removeHost(actor: Actor, mac: string): Promise<{ removed: string }> {
    const m = requireMac(mac);
    this.allow(actor, 'host.rm', { mac: m });
    const active = this.deps.tasks.activeFor(m);
    if (active) throw new CommandError(409, `${active.mac} has a ${active.kind} task in progress (${active.state}); cancel it before removing the host`);
    await this.deps.hosts.remove(m);
    return { removed: m };
  }

  // ---- tasks ----

  /**
   * Queue a capture or deploy for a PC. A PC not known yet is registered (it will boot into
   * the task). A deploy needs an image with a committed version; without a name it takes the
   * PC's assigned image.
   */
  async startTask(actor: Actor, input: StartTaskInput): Promise<StartTaskResult> {
    if (input.kind !== 'capture' && input.kind !== 'deploy') throw new CommandError(400, 'task kind must be capture or deploy');
    const mac = requireMac(input.mac);
    this.allow(actor, 'task.create', { mac, image: input.image });
    if (input.after !== undefined && input.after !== 'reboot' && input.after !== 'poweroff') throw new CommandError(400, 'after must be reboot or poweroff');
    if (input.transport !== undefined && input.transport !== 'chunks' && input.transport !== 'nbd') throw new CommandError(400, 'transport must be chunks or nbd');
    if (input.mainPartition !== undefined) {
      if (input.kind !== 'deploy') throw new CommandError(400, 'a capture resizes no partition: the partition to grow or shrink is named for deploys only');
      if (!Number.isSafeInteger(input.mainPartition) || input.mainPartition < 1) {
        throw new CommandError(400, `the partition to grow or shrink is its number in the partition table (1, 2, …), not "${String(input.mainPartition).slice(0, 40)}"`);
      }
    }
    if (input.version !== undefined) {
      if (input.kind !== 'deploy') throw new CommandError(400, 'a capture makes a new version: a version number is named for deploys only');
      if (!Number.isSafeInteger(input.version) || input.version < 1) throw new CommandError(400, `"${String(input.version).slice(0, 40)}" is not a version number (1, 2, …)`);
    }
    const known = this.deps.hosts.get(mac);
    let image: string;
    if (input.kind === 'capture') {
      if (!input.image) throw new CommandError(400, 'a capture needs the name to store the image under');
      image = requireImageName(input.image);
    } else {
      const chosen = input.image || known?.assignedImage;
      if (!chosen) throw new CommandError(400, `${mac} has no assigned image; choose an image to deploy`);
      image = await this.requireExisting(chosen, 'capture one first or choose one that exists');
      await this.checkDeployVersion(image, input.version, mac, input.force === true);
      if (input.mainPartition !== undefined) await this.checkMainPartition(image, input.mainPartition, input.version);
    }
    const transport = input.transport ?? this.deps.config.transport;
    if (input.mainPartition !== undefined && transport !== 'chunks') {
      throw new CommandError(400, 'over NBD an image is restored at its own size and no partition is resized: deploy with --transport chunks to name the partition to grow or shrink');
    }
    const host = await this.deps.hosts.register(mac);
    const task = await this.deps.tasks.create({
      kind: input.kind,
      mac,
      image,
      after: input.after ?? 'reboot',
      diskSerial: input.diskSerial ?? null,
      transport,
      ...(input.mainPartition !== undefined ? { mainPartition: input.mainPartition } : {}),
      ...(input.version !== undefined ? { version: input.version } : {}),
    });
    return { task, wake: input.wake ? await this.wakeFor(host, task) : null };
  }

  /**
   * The named partition must be one the newest version's layout can grow or shrink. A version
   * captured without a layout is restored at its own size, so there is nothing to check against;
   * the restore plan checks it again against the version the deploy gets.
   */
  private async checkMainPartition(image: string, index: number, version?: number): Promise<void> {
    const layout = await this.deps.store.layout(image, version);
    if (layout === null) return;
    try {
      mainPartition(layout, index);
    } catch (e) {
      if (e instanceof LayoutPlanError) throw new CommandError(400, `image ${image}: ${e.message}`);
      throw e;
    }
  }

  /**
   * A deploy's version must be committed (404 naming the versions there are), and the PC model it
   * was captured from must be this PC's unless the person confirmed (409 saying both models).
   */
  private async checkDeployVersion(image: string, version: number | undefined, mac: string, force: boolean): Promise<void> {
    const versions = await this.deps.store.versions(image);
    const v = version ?? versions[versions.length - 1];
    if (v === undefined || !versions.includes(v)) {
      throw new CommandError(404, `image ${image} has no version ${version}; its versions are ${versions.join(', ') || 'none'} ("netclone image show ${image}" lists them)`);
    }
    if (force) return;
    const from = await versionOrigin(this.deps.store, image, v);
    const to = pcModelOf(this.deps.hosts.get(mac));
    if (from && to && modelsDiffer(from, to)) throw new CommandError(409, mismatchMessage(image, v, from, mac, to));
  }

  /**
   * What the deploy form shows before a deploy of `image` (version `version`, default the newest)
   * onto the PC: the versions to pick from, the model check and how its disk takes the image.
   */
  async previewDeploy(actor: Actor, mac: string, image: string, options: { version?: number; diskSerial?: string | null; mainPartition?: number } = {}): Promise<DeployPreview> {
    const m = requireMac(mac);
    this.allow(actor, 'image.show', { image, mac: m });
    await this.requireExisting(image, 'capture one first or choose one that exists');
    try {
      return await previewDeploy(this.deps.store, this.deps.hosts.get(m), image, options.version, options.diskSerial, options.mainPartition);
    } catch (e) {
      if (e instanceof RangeError) throw new CommandError(404, `${e.message}; "netclone image show ${image}" lists its versions`);
      throw e;
    }
  }

  private async wakeFor(host: HostRecord, task: TaskRecord): Promise<StartTaskResult['wake']> {
    if (!this.deps.wake) return { sent: false, detail: 'Wake-on-LAN is not available here; switch the PC on by hand' };
    try {
      const target = await this.deps.wake(host.mac);
      const wake = { sent: true, detail: `magic packet sent to ${target.address}:${target.port}` };
      await this.deps.tasks.note(task, `Wake-on-LAN ${wake.detail}`);
      return wake;
    } catch (err) {
      const wake = { sent: false, detail: `Wake-on-LAN failed: ${err instanceof Error ? err.message : String(err)}; switch the PC on by hand` };
      await this.deps.events.record('warn', wake.detail, host.mac);
      return wake;
    }
  }

  /**
   * A technician at the PC starts a task there (or, without `input`, the one waiting for it).
   * It gets a fresh token bound to the address the request came from, so the imaging client
   * there, and only there, can use it.
   */
  async startAtPc(actor: Actor & { readonly kind: 'technician' }, input?: { readonly kind: TaskKind; readonly image?: string }): Promise<PcTask> {
    let task: TaskRecord;
    if (input) {
      const image = input.kind === 'capture' ? (input.image ?? defaultCaptureImage(this.deps.hosts.get(actor.mac), actor.mac)) : input.image ?? '';
      task = (await this.startTask(actor, { kind: input.kind, mac: actor.mac, image })).task;
    } else {
      this.allow(actor, 'task.start-at-pc', { mac: actor.mac });
      const waiting = this.deps.tasks.activeFor(actor.mac);
      if (!waiting || (waiting.state !== 'queued' && waiting.state !== 'booting')) throw new CommandError(409, 'no task waits for this PC');
      task = waiting;
    }
    const token = await this.deps.tasks.beginBoot(task, actor.ip);
    this.deps.logger.info({ mac: actor.mac, ip: actor.ip, task: task.id, user: actor.name, via: actor.via }, `${actor.via}: ${task.kind} of ${task.image} starts at the PC; its token is bound to ${actor.ip}`);
    return { task, token };
  }

  listTasks(actor: Actor, filter: { mac?: string; active?: boolean } = {}): TaskRecord[] {
    this.allow(actor, 'task.list', { mac: filter.mac });
    return this.deps.tasks.list({ active: filter.active, mac: filter.mac === undefined ? undefined : requireMac(filter.mac) });
  }

  showTask(actor: Actor, id: string): TaskRecord {
    this.allow(actor, 'task.show');
    return this.deps.tasks.require(id);
  }

  async cancelTask(actor: Actor, id: string): Promise<TaskRecord> {
    this.allow(actor, 'task.cancel');
    return this.deps.tasks.cancel(id);
  }

  // ---- schedules and groups ----

  /** Put a host in a group ("Front office"); null or an empty name takes it out of its group. */
  async setHostGroup(actor: Actor, mac: string, group: string | null): Promise<HostRecord> {
    const m = requireMac(mac);
    this.allow(actor, 'host.group', { mac: m });
    const host = this.deps.hosts.require(m);
    const name = scheduleInput(() => normalizeGroup(group));
    // An existing group keeps the spelling it has ("lab 2" joins "Lab 2").
    const existing = name === null ? undefined : listGroups(this.deps.hosts.list()).find((g) => g.name.toLowerCase() === name.toLowerCase());
    host.group = existing?.name ?? name;
    await this.deps.db.write();
    await this.deps.events.record('info', host.group ? `host ${m} is in group "${host.group}"` : `host ${m} is in no group now`, m);
    return host;
  }

  listGroups(actor: Actor): GroupSummary[] {
    this.allow(actor, 'group.list');
    return listGroups(this.deps.hosts.list());
  }

  private groupHosts(group: string): HostRecord[] {
    const name = scheduleInput(() => normalizeGroup(group));
    const members = name === null ? [] : hostsInGroup(this.deps.hosts.list(), name);
    if (members.length === 0) throw new CommandError(404, `no host is in group "${String(group).slice(0, 64)}"; put hosts in it with "netclone host group MAC NAME"`);
    return members;
  }

  /** Wake-on-LAN now: the magic packet a few times, on the interface that serves the PC's network. */
  async wakeHost(actor: Actor, mac: string): Promise<WakeReport> {
    const m = requireMac(mac);
    this.allow(actor, 'host.wake', { mac: m });
    return this.sendWake(m, this.deps.hosts.get(m)?.ip ?? null);
  }

  async wakeGroup(actor: Actor, group: string): Promise<WakeReport[]> {
    this.allow(actor, 'group.wake');
    return Promise.all(this.groupHosts(group).map((h) => this.sendWake(h.mac, h.ip)));
  }

  private async sendWake(mac: string, ip: string | null): Promise<WakeReport> {
    if (!this.deps.wake) return { mac, sent: false, detail: 'Wake-on-LAN is sent by the running server; start it with "netclone serve"' };
    try {
      const target = await wakeRepeatedly(this.deps.wake, mac, ip, (ms) => sleep(ms));
      await this.deps.events.record('info', `Wake-on-LAN sent to ${mac} (${target.address}:${target.port})`, mac);
      return { mac, sent: true, detail: `magic packet sent to ${target.address}:${target.port}` };
    } catch (err) {
      const detail = `Wake-on-LAN failed: ${err instanceof Error ? err.message : String(err)}; switch the PC on by hand`;
      await this.deps.events.record('warn', detail, mac);
      return { mac, sent: false, detail };
    }
  }

  /**
   * Capture or deploy every host of a group; one host's refusal (say, a task already running) does
   * not stop the others. A capture's image name takes "{host}" (else "-{host}" is appended), so each
   * PC gets its own image; a deploy without an image uses each host's assigned one.
   */
  async groupTask(actor: Actor, group: string, input: GroupTaskInput): Promise<GroupTaskResult[]> {
    this.allow(actor, 'group.task');
    const members = this.groupHosts(group);
    const results: GroupTaskResult[] = [];
    for (const host of members) {
      try {
        const image = input.kind === 'capture' ? imageForHost(requireImageTemplate(input.image), true, host, host.mac) : input.image;
        const { task, wake } = await this.startTask(actor, { kind: input.kind, mac: host.mac, image, after: input.after, wake: input.wake });
        results.push({ mac: host.mac, name: host.name, ok: true, task, wake, error: null });
      } catch (err) {
        if (!(err instanceof Error) || !('status' in err)) throw err;
        results.push({ mac: host.mac, name: host.name, ok: false, task: null, wake: null, error: err.message });
      }
    }
    return results;
  }

  async addSchedule(actor: Actor, input: NewSchedule): Promise<ScheduleView> {
    this.allow(actor, 'schedule.add', { mac: input.mac, image: input.capture });
    const now = this.deps.now?.() ?? new Date();
    const schedule = scheduleInput(() => buildSchedule(input, now));
    this.deps.db.data.schedules.push(schedule);
    await this.deps.db.write();
    const view = viewSchedule(this.deps.db, schedule, now);
    await this.deps.events.record('info', `schedule ${schedule.id} added: capture ${view.targetLabel} into ${view.imageLabel}, ${view.description}${schedule.wake ? ', with Wake-on-LAN' : ''}`, 'mac' in schedule.target ? schedule.target.mac : null);
    for (const listener of this.scheduleListeners) listener();
    return view;
  }

  listSchedules(actor: Actor): ScheduleView[] {
    this.allow(actor, 'schedule.list');
    const now = this.deps.now?.() ?? new Date();
    return this.deps.db.data.schedules.map((s) => viewSchedule(this.deps.db, s, now));
  }

  /** Remove a schedule; its past runs stay in the history, a task it already queued is left to finish. */
  async removeSchedule(actor: Actor, id: string): Promise<{ removed: string }> {
    this.allow(actor, 'schedule.rm');
    const schedule: ScheduleRecord = scheduleInput(() => findSchedule(this.deps.db, String(id)));
    this.deps.db.data.schedules = this.deps.db.data.schedules.filter((s) => s !== schedule);
    await this.deps.db.write();
    await this.deps.events.record('info', `schedule ${schedule.id} removed`);
    for (const listener of this.scheduleListeners) listener();
    return { removed: schedule.id };
  }

  // ---- retention ----

  /** Prunes an image by `policy`, else its stored policy, else keep-last keep-versions; gc follows. */
  async pruneImage(actor: Actor, name: string, opts: { policy?: RetentionPolicy; dryRun?: boolean } = {}): Promise<PruneResult> {
    this.allow(actor, 'image.prune', { image: name });
    await this.requireExisting(name, '"netclone image list" and the Images page list them');
    return retentionRefusal(() => this.retention.prune(name, opts));
  }

  /** Stores an image's policy (null clears it); without `policy` only reads it. */
  async imageRetention(actor: Actor, name: string, policy?: RetentionPolicy | null): Promise<{ image: string; retention: RetentionPolicy | null }> {
    this.allow(actor, 'image.retention', { image: name });
    await this.requireExisting(name, '"netclone image list" and the Images page list them');
    return retentionRefusal(async () => {
      if (policy !== undefined) {
        // Rules all 0 or absent clear the policy: "keep everything" would silently stop keep-versions too.
        if (policy !== null && isEmptyPolicy(policy)) policy = null;
        await this.deps.store.setRetention(name, policy);
        await this.deps.events.record('info', `image ${name}: retention policy ${policy ? describePolicyText(policy) : 'cleared (keep-versions applies)'}`);
      }
      return { image: name, retention: (await this.deps.store.meta(name)).retention };
    });
  }

  async protectVersion(actor: Actor, name: string, version: number, on: boolean): Promise<VersionMeta & { image: string; version: number }> {
    this.allow(actor, on ? 'image.protect' : 'image.unprotect', { image: name });
    requireImageName(name);
    const v = requireVersion(version);
    return retentionRefusal(async () => {
      const meta = await this.deps.store.setVersionMeta(name, v, { protected: on });
      await this.deps.events.record('info', `image ${name} version ${v} ${on ? 'protected' : 'unprotected'}`);
      return { image: name, version: v, ...meta };
    });
  }

  async noteVersion(actor: Actor, name: string, version: number, note: string): Promise<VersionMeta & { image: string; version: number }> {
    this.allow(actor, 'image.note', { image: name });
    requireImageName(name);
    const v = requireVersion(version);
    return retentionRefusal(async () => ({ image: name, version: v, ...(await this.deps.store.setVersionMeta(name, v, { note })) }));
  }

  /** What the whole store holds against all versions' data (store-space.ts); for the dashboard and the images list. */
  async storeSpace(actor: Actor): Promise<StoreSpace> {
    this.allow(actor, 'image.list');
    return this.deps.store.space();
  }

  // ---- administration ----

  async setAdminPassword(actor: Actor, password: string): Promise<{ ok: true }> {
    this.allow(actor, 'admin.passwd');
    const user = await setAdminPassword(this.deps.db, password);
    // A password is changed because it may have leaked: whoever logged in with the old one is out.
    for (const listener of this.passwordListeners) listener(user.username);
    await this.deps.events.record('info', 'admin password changed');
    return { ok: true };
  }

  async createApiToken(actor: Actor, name: string): Promise<NewApiToken> {
    this.allow(actor, 'admin.token.create');
    const created = await createApiToken(this.deps.db, name);
    await this.deps.events.record('info', `API token "${created.record.name}" created`);
    return created;
  }

  listApiTokens(actor: Actor): ApiTokenRecord[] {
    this.allow(actor, 'admin.token.list');
    return listApiTokens(this.deps.db);
  }

  async revokeApiToken(actor: Actor, idOrName: string): Promise<ApiTokenRecord> {
    this.allow(actor, 'admin.token.revoke');
    const record = await revokeApiToken(this.deps.db, idOrName);
    await this.deps.events.record('info', `API token "${record.name}" revoked`);
    return record;
  }
}

export interface WakeReport {
  readonly mac: string;
  readonly sent: boolean;
  readonly detail: string;
}

export interface GroupTaskInput {
  readonly kind: TaskKind;
  /** Capture: the image name or template (required). Deploy: the image, else each host's assigned image. */
  readonly image?: string;
  readonly after?: 'reboot' | 'poweroff';
  readonly wake?: boolean;
}

export interface GroupTaskResult {
  readonly mac: string;
  readonly name: string;
  readonly ok: boolean;
  readonly task: TaskRecord | null;
  readonly wake: StartTaskResult['wake'];
  /** Why this host got no task (the others still did). */
  readonly error: string | null;
}

function requireImageTemplate(image: string | undefined): string {
  if (!image) throw new CommandError(400, 'a group capture needs the image name to store under ("{host}" stands for each host\'s name)');
  return image;
}

/** Schedule and group input errors are the person's to fix: 400/404 like any command's. */
function scheduleInput<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ScheduleInputError) throw new CommandError(e.status, e.message);
    throw e;
  }
}

function requireVersion(version: unknown): number {
  const n = typeof version === 'string' && /^\d{1,9}$/.test(version.trim()) ? Number(version.trim()) : version;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 1) throw new CommandError(400, `"${String(version).slice(0, 40)}" is not a version number (1, 2, …)`);
  return n;
}

function describePolicyText(p: RetentionPolicy): string {
  return `set to ${describePolicy(p)}`;
}

/** The store's and the policy's refusals as the person's 4xx. */
async function retentionRefusal<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof RetentionPolicyError || e instanceof ImageMetaError) throw new CommandError(400, e.message);
    if (e instanceof ImageNotFoundError) throw new CommandError(404, e.message);
    if (e instanceof VersionProtectedError) throw new CommandError(409, e.message);
    throw e;
  }
}

/** The store reports "in use" conflicts as plain errors; they are the person's 409, not a 500. */
async function storeConflict<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof Error && /is being captured|already exists/.test(e.message) && !('status' in e)) throw new CommandError(409, e.message);
    if (e instanceof VersionProtectedError) throw new CommandError(409, e.message);
    throw e;
  }
}
