/**
 * The embedded database (lowdb). Exactly one instance per data directory per process:
 * two lowdb instances on one file overwrite each other's writes, so `openDatabase`
 * hands out the same instance for the same file.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Low } from 'lowdb';
import { DurableJsonFile } from './durable-json-file.js';
import type { ScheduleSpec } from './schedule-time.js';
import type { AlertPageSettings, AlertState } from './alert-config.js';

export const SCHEMA_VERSION = 2;

export type Firmware = 'bios' | 'uefi' | 'uefi-http' | 'arm64' | 'unknown';
export type LocalBoot = 'exit' | 'sanboot';

export interface DiskInfo {
  readonly name: string;
  readonly size: number;
  readonly model: string;
  readonly serial: string;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly rotational: boolean;
  readonly removable: boolean;
  readonly transport: string;
}

export interface HardwareReport {
  readonly dmi: { readonly vendor: string; readonly model: string; readonly serial: string; readonly uuid: string };
  readonly disks: readonly DiskInfo[];
  readonly nics: ReadonlyArray<{ readonly name: string; readonly mac: string; readonly driver: string; readonly speed: string }>;
  /**
   * The firmware's SecureBoot EFI variable as the client read it: 'on', 'off', or 'bios' (no EFI, so
   * no Secure Boot). Absent in reports from clients older than the signed chain, or when unreadable.
   */
  readonly secureBoot?: 'on' | 'off' | 'bios';
  readonly reportedAt: string;
}

export interface HostRecord {
  mac: string;
  name: string;
  ip: string | null;
  firmware: Firmware;
  arch: string | null;
  vendorClass: string | null;
  firstSeen: string;
  lastSeen: string;
  registered: boolean;
  hardware: HardwareReport | null;
  assignedImage: string | null;
  localBoot: LocalBoot | null;
  efiLoader: 'snponly.efi' | 'ipxe.efi';
  /**
   * How this PC boots from the network when it is x86-64 UEFI: iPXE or the signed shim → GRUB chain
   * (Secure Boot). null or absent (every record older than the signed chain): the appliance's `uefi-boot`.
   */
  uefiBoot?: 'ipxe' | 'signed' | null;
  /** The group the PC belongs to ("Front office", "Lab 2"); null or absent: none (issue 13). */
  group?: string | null;
}

export type TaskKind = 'capture' | 'deploy';
export type TaskState = 'queued' | 'booting' | 'running' | 'verifying' | 'done' | 'failed' | 'cancelled';

export interface TaskProgress {
  /** Bytes of the disk covered (NBD) or examined by the agent (chunks). */
  bytes: number;
  total: number;
  percent: number;
  mbps: number;
  etaSeconds: number | null;
  /** Bytes on the wire so far, as the server counted them (chunk transport; absent in older records). */
  wireBytes?: number;
  /** The agent's chunk counters (chunk transport only). */
  chunks?: ChunkCounters;
  /** The chunk transport's progress in one line, e.g. "examined 120 GB, sent 1.3 GB, 98.9 % reused" (tasks.ts progressLine). */
  summary?: string;
}

export interface ChunkCounters {
  /** Chunks the other side already held: not sent. */
  reused: number;
  /** Chunks that crossed the wire. */
  sent: number;
  /** All-zero chunks (holes): never sent. */
  zero: number;
  /** Chunks of the disk (or image) in all. */
  total: number;
}

/** How a task moves its disk: chunk files over HTTP (the imaging agent) or raw bytes over NBD. */
export type TaskTransport = 'chunks' | 'nbd';

export interface TaskRecord {
  id: string;
  kind: TaskKind;
  mac: string;
  image: string;
  state: TaskState;
  createdAt: string;
  updatedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  reason: string | null;
  diskSerial: string | null;
  after: 'reboot' | 'poweroff';
  /**
   * Records written before the chunk transport existed have none (migrate() fills in 'nbd'); code
   * reads a missing one as 'nbd' too (see transportOf).
   */
  transport?: TaskTransport;
  /**
   * A deploy's partition (its table index) that grows or shrinks to the target disk (issue 12).
   * Absent: the largest ntfs/ext2/3/4/xfs/btrfs partition (and in every record older than it).
   */
  mainPartition?: number;
  /**
   * A deploy's image version (issue 13: restore any version). Absent: the newest version when the
   * PC starts the transfer (and in every record older than it).
   */
  version?: number;
  /** sha256 of the client token; the token itself is only ever on the PC's kernel command line. */
  tokenHash: string;
  clientIp: string | null;
  disk: { name: string; size: number; logicalSectorSize: number; serial: string } | null;
  progress: TaskProgress;
  result: { version: number | null; digest: string | null; bytesOnWire: number } | null;
  log: Array<{ at: string; message: string }>;
}

/** The task's transport; a record without one moved its disk over NBD. */
export function transportOf(task: Pick<TaskRecord, 'transport'>): TaskTransport {
  return task.transport === 'chunks' ? 'chunks' : 'nbd';
}

export interface EventRecord {
  at: string;
  level: 'info' | 'warn' | 'error';
  mac: string | null;
  message: string;
}

export interface UserRecord {
  username: string;
  passwordHash: string;
  createdAt: string;
}

export interface ApiTokenRecord {
  id: string;
  name: string;
  tokenHash: string;
  createdAt: string;
  lastUsed: string | null;
}

/** A schedule's hosts: one PC, or every host of a group at the time it runs. */
export type ScheduleTarget = { readonly mac: string } | { readonly group: string };

/** A backup that runs itself (issue 13): a capture of each target host when `spec` says so. */
export interface ScheduleRecord {
  id: string;
  target: ScheduleTarget;
  /**
   * The image name to capture into. "{host}" stands for the host's name as an image name (or
   * pc-<mac digits>); a group schedule without "{host}" captures into "<image>-{host}".
   */
  image: string;
  spec: ScheduleSpec;
  /** Send Wake-on-LAN at the start (and the PC powers off afterwards unless `after` is reboot). */
  wake: boolean;
  after: 'reboot' | 'poweroff';
  /** Minutes after the due time the PC may still start; a run not started by then is missed. */
  windowMinutes: number;
  createdAt: string;
  /** The due time of the last run started or marked (ISO); null before the first. */
  lastRunAt: string | null;
}

export type ScheduleRunState = 'pending' | 'running' | 'done' | 'failed' | 'missed';

/** One host's run of a schedule at one due time. */
export interface ScheduleRunRecord {
  id: string;
  scheduleId: string;
  mac: string;
  /** The due time (ISO); (scheduleId, mac, dueAt) is unique: a run is never made twice. */
  dueAt: string;
  state: ScheduleRunState;
  taskId: string | null;
  reason: string | null;
  /** When it reached done/failed/missed (ISO). */
  endedAt: string | null;
}

export interface DbData {
  schemaVersion: number;
  hosts: HostRecord[];
  tasks: TaskRecord[];
  events: EventRecord[];
  users: UserRecord[];
  apiTokens: ApiTokenRecord[];
  schedules: ScheduleRecord[];
  scheduleRuns: ScheduleRunRecord[];
  /** `alerts`: the settings page's alert values (issue 13); absent until saved there, and in older files. */
  settings: { sessionSecret: string | null; setupToken: string | null; alerts?: AlertPageSettings };
  /** Which hosts alerts already reported overdue (issue 13); absent until the first check. */
  alertState?: AlertState;
}

export type Database = Low<DbData>;

function emptyData(): DbData {
  return {
    schemaVersion: SCHEMA_VERSION,
    hosts: [],
    tasks: [],
    events: [],
    users: [],
    apiTokens: [],
    schedules: [],
    scheduleRuns: [],
    settings: { sessionSecret: null, setupToken: null },
  };
}

/**
 * Migrations from version N to N+1, applied in order on open. Version 0 is a file
 * written before the schema had a version (or an empty object).
 */
const MIGRATIONS: Record<number, (data: Record<string, unknown>) => void> = {
  0: (data) => {
    const base = emptyData() as unknown as Record<string, unknown>;
    for (const key of Object.keys(base)) if (data[key] === undefined) data[key] = base[key];
  },
  // Issue 13: schedules and their runs; hosts' `group` is optional and stays absent until set.
  1: (data) => {
    if (data.schedules === undefined) data.schedules = [];
    if (data.scheduleRuns === undefined) data.scheduleRuns = [];
  },
};

export function migrate(raw: unknown, file = 'database'): DbData {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new Error(`${file}: top level is not an object; restore it from a backup or move it aside`);
  }
  const data = raw as Record<string, unknown>;
  let version = typeof data.schemaVersion === 'number' ? data.schemaVersion : 0;
  if (version > SCHEMA_VERSION) {
    throw new Error(`${file}: schema version ${version} is newer than this netclone (${SCHEMA_VERSION}); upgrade netclone`);
  }
  while (version < SCHEMA_VERSION) {
    MIGRATIONS[version](data);
    version += 1;
    data.schemaVersion = version;
  }
  for (const key of ['hosts', 'tasks', 'events', 'users', 'apiTokens', 'schedules', 'scheduleRuns'] as const) {
    if (!Array.isArray(data[key])) throw new Error(`${file}: "${key}" is not a list; the file is damaged`);
  }
  // Tasks from before the chunk transport moved their disks over NBD.
  for (const t of data.tasks as Array<Record<string, unknown>>) {
    if (t !== null && typeof t === 'object' && t.transport !== 'chunks' && t.transport !== 'nbd') t.transport = 'nbd';
  }
  return data as unknown as DbData;
}

const instances = new Map<string, Promise<Database>>();
const adapters = new Map<string, DurableJsonFile<DbData>>();

export function databasePath(dataDir: string): string {
  return path.join(dataDir, 'state', 'netclone.json');
}

export function openDatabase(dataDir: string): Promise<Database> {
  const file = databasePath(dataDir);
  let db = instances.get(file);
  if (!db) {
    db = (async () => {
      await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      const adapter = new DurableJsonFile<DbData>(file);
      adapters.set(file, adapter);
      const low = new Low<DbData>(adapter, emptyData());
      await low.read();
      low.data = migrate(low.data ?? emptyData(), file);
      await low.write();
      return low;
    })();
    instances.set(file, db);
    const opening = db;
    opening.catch(() => {
      if (instances.get(file) === opening) forgetDatabase(dataDir);
    });
  }
  return db;
}

/** Forget the instance (after the owner stops) so a later open re-reads the file. */
export function forgetDatabase(dataDir: string): void {
  const file = databasePath(dataDir);
  instances.delete(file);
  // A forgotten instance must not go on retrying a failed write behind the next owner's back.
  adapters.get(file)?.stopRetrying();
  adapters.delete(file);
}
