/** JSON schemas of the API; they validate requests and document the API at /docs. */
import { Type, type Static } from '@sinclair/typebox';

export const MAC_PATTERN = '^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$';
export const IMAGE_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$';
export const HOST_NAME_PATTERN = '^[\\p{L}\\p{N} ._()-]{0,64}$';

export const Mac = Type.String({ pattern: MAC_PATTERN, description: 'MAC address, aa:bb:cc:dd:ee:ff', examples: ['52:54:00:12:34:56'] });
export const ImageName = Type.String({ pattern: IMAGE_PATTERN, description: "1-64 letters, digits, '.', '_' or '-'", examples: ['win11-office'] });
export const HostName = Type.String({ maxLength: 64, description: 'Free text: letters, digits, spaces, ._()-' });

export const MacParams = Type.Object({ mac: Mac });
export const ImageParams = Type.Object({ name: ImageName });
export const VersionParams = Type.Object({ name: ImageName, n: Type.Integer({ minimum: 1, maximum: 1_000_000 }) });
export const TaskParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9-]+$' }) });

export const ErrorBody = Type.Object({ statusCode: Type.Integer(), error: Type.String(), message: Type.String() });

const Disk = Type.Object({
  name: Type.String(), size: Type.Number(), model: Type.String(), serial: Type.String(), logicalSectorSize: Type.Number(),
  physicalSectorSize: Type.Number(), rotational: Type.Boolean(), removable: Type.Boolean(), transport: Type.String(),
});

const Hardware = Type.Object({
  dmi: Type.Object({ vendor: Type.String(), model: Type.String(), serial: Type.String(), uuid: Type.String() }),
  disks: Type.Array(Disk),
  nics: Type.Array(Type.Object({ name: Type.String(), mac: Type.String(), driver: Type.String(), speed: Type.String() })),
  secureBoot: Type.Optional(Type.Union([Type.Literal('on'), Type.Literal('off'), Type.Literal('bios')], { description: "the firmware's SecureBoot variable as the imaging client read it; absent when not reported" })),
  reportedAt: Type.String(),
});

export const Host = Type.Object({
  mac: Type.String(), name: Type.String(), ip: Type.Union([Type.String(), Type.Null()]),
  firmware: Type.String(), arch: Type.Union([Type.String(), Type.Null()]), vendorClass: Type.Union([Type.String(), Type.Null()]),
  firstSeen: Type.String(), lastSeen: Type.String(), registered: Type.Boolean(),
  hardware: Type.Union([Hardware, Type.Null()]), assignedImage: Type.Union([Type.String(), Type.Null()]),
  localBoot: Type.Union([Type.Literal('exit'), Type.Literal('sanboot'), Type.Null()]),
  efiLoader: Type.String(),
  uefiBoot: Type.Optional(Type.Union([Type.Literal('ipxe'), Type.Literal('signed'), Type.Null()], { description: 'x86-64 UEFI network boot: iPXE or the signed shim and GRUB (Secure Boot); null or absent: the appliance default (uefi-boot)' })),
  group: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: 'the group the PC belongs to; null or absent: none' })),
  state: Type.Union([Type.Literal('idle'), Type.Literal('task pending'), Type.Literal('imaging'), Type.Literal('failed')]),
});

export const NewHost = Type.Object({ mac: Mac, name: Type.Optional(HostName) }, { additionalProperties: false });
export const HostPatch = Type.Object({
  name: Type.Optional(HostName),
  assignedImage: Type.Optional(Type.Union([ImageName, Type.Null()])),
  localBoot: Type.Optional(Type.Union([Type.Literal('exit'), Type.Literal('sanboot'), Type.Null()])),
  efiLoader: Type.Optional(Type.Union([Type.Literal('snponly.efi'), Type.Literal('ipxe.efi')])),
  uefiBoot: Type.Optional(Type.Union([Type.Literal('ipxe'), Type.Literal('signed'), Type.Null()], { description: 'null: the appliance default (uefi-boot)' })),
}, { additionalProperties: false });

export const Progress = Type.Object({
  bytes: Type.Number({ description: 'bytes of the disk covered (nbd) or examined by the imaging agent (chunks)' }),
  total: Type.Number(), percent: Type.Number(), mbps: Type.Number(), etaSeconds: Type.Union([Type.Number(), Type.Null()]),
  wireBytes: Type.Optional(Type.Number({ description: 'chunk transport: bytes on the wire, as the server counted them' })),
  chunks: Type.Optional(Type.Object({ reused: Type.Number(), sent: Type.Number(), zero: Type.Number(), total: Type.Number() }, { description: 'chunk transport: the agent\'s chunk counters' })),
  summary: Type.Optional(Type.String({ description: 'chunk transport: e.g. "examined 120 GB, sent 1.3 GB, 98.9 % reused"' })),
});

export const Task = Type.Object({
  id: Type.String(), kind: Type.String(), mac: Type.String(), image: Type.String(), state: Type.String(),
  createdAt: Type.String(), updatedAt: Type.String(), startedAt: Type.Union([Type.String(), Type.Null()]), finishedAt: Type.Union([Type.String(), Type.Null()]),
  reason: Type.Union([Type.String(), Type.Null()]), diskSerial: Type.Union([Type.String(), Type.Null()]), after: Type.String(),
  transport: Type.Optional(Type.Union([Type.Literal('chunks'), Type.Literal('nbd')], { description: 'how the PC moves its disk (absent in records older than the chunk transport: nbd)' })),
  mainPartition: Type.Optional(Type.Integer({ description: 'deploy: the partition (table index) that grows or shrinks to the disk; absent: the largest ntfs/ext2/3/4/xfs/btrfs partition' })),
  version: Type.Optional(Type.Integer({ description: 'deploy: the image version it restores; absent: the newest when the PC starts' })),
  clientIp: Type.Union([Type.String(), Type.Null()]),
  disk: Type.Union([Type.Object({ name: Type.String(), size: Type.Number(), logicalSectorSize: Type.Number(), serial: Type.String() }), Type.Null()]),
  progress: Progress,
  result: Type.Union([Type.Object({ version: Type.Union([Type.Number(), Type.Null()]), digest: Type.Union([Type.String(), Type.Null()]), bytesOnWire: Type.Number() }), Type.Null()]),
  log: Type.Array(Type.Object({ at: Type.String(), message: Type.String() })),
});

export const NewTask = Type.Object({
  kind: Type.Union([Type.Literal('capture'), Type.Literal('deploy')]),
  mac: Mac,
  image: Type.Optional(ImageName),
  wake: Type.Optional(Type.Boolean({ description: 'send a Wake-on-LAN magic packet' })),
  after: Type.Optional(Type.Union([Type.Literal('reboot'), Type.Literal('poweroff')])),
  diskSerial: Type.Optional(Type.String({ maxLength: 128 })),
  transport: Type.Optional(Type.Union([Type.Literal('chunks'), Type.Literal('nbd')], { description: 'chunk files over HTTP (the imaging agent) or raw bytes over NBD; the server\'s configured default when absent' })),
  mainPartition: Type.Optional(Type.Integer({ minimum: 1, description: 'deploy over chunks: the partition (its number in the image\'s partition table) that grows onto a larger disk or shrinks onto a smaller one; the largest ntfs/ext2/3/4/xfs/btrfs partition when absent' })),
  version: Type.Optional(Type.Integer({ minimum: 1, description: 'deploy: the image version to restore (GET /api/v1/images/{name} lists them); the newest when absent. 404 when the image has no such version' })),
  force: Type.Optional(Type.Boolean({ description: 'deploy: go ahead although the version was captured from another PC model (DMI vendor and model) than this PC; without it such a deploy is refused with 409' })),
}, { additionalProperties: false });

export const TaskQuery = Type.Object({
  mac: Type.Optional(Mac),
  active: Type.Optional(Type.Boolean()),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
});

export const StartedTask = Type.Object({ task: Task, wake: Type.Union([Type.Object({ sent: Type.Boolean(), detail: Type.String() }), Type.Null()]) });

export const VerifyStatus = Type.Object({
  state: Type.Union([Type.Literal('running'), Type.Literal('ok'), Type.Literal('failed')]),
  version: Type.Union([Type.Integer(), Type.Null()]), message: Type.String(), startedAt: Type.String(), finishedAt: Type.Union([Type.String(), Type.Null()]),
});

export const ImageSummary = Type.Object({
  name: Type.String(), latestVersion: Type.Integer(), size: Type.Number(), storedBytes: Type.Number({ description: "the image's share of the store: chunks other images name too are split between them, so the list adds up to the store's total" }), versions: Type.Integer(), created: Type.String(),
  exclusiveBytes: Type.Number({ description: 'chunk bytes no other image names: what removing the image frees' }),
  lastVerify: Type.Union([VerifyStatus, Type.Null()]),
});

export const ImageVersion = Type.Object({
  version: Type.Integer(), size: Type.Number(), created: Type.String(), source: Type.String(), digest: Type.String(),
  dataBytes: Type.Number({ description: 'bytes in chunks holding data (holes excluded)' }),
  storedBytes: Type.Number({ description: 'compressed bytes of the distinct chunks this version names' }),
  previousVersion: Type.Union([Type.Integer(), Type.Null()], { description: 'the version before it; null for the first' }),
  changedBytes: Type.Number({ description: 'disk bytes in chunks the previous version does not hold (all data for the first)' }),
  changedStoredBytes: Type.Number({ description: 'stored bytes of those new chunks, each once' }),
  protected: Type.Boolean({ description: 'a protected version is never pruned or deleted' }),
  note: Type.String(),
  sourceMac: Type.Union([Type.String(), Type.Null()], { description: 'the MAC of the PC it was captured from, when known' }),
  sourceName: Type.Union([Type.String(), Type.Null()], { description: "that PC's name, when it has one" }),
});

export const Partition = Type.Object({ index: Type.Integer(), typeName: Type.String(), name: Type.String(), sizeBytes: Type.Number(), filesystem: Type.Union([Type.String(), Type.Null()]) });

const NullableString = Type.Union([Type.String(), Type.Null()]);

export const LayoutPartition = Type.Object({
  index: Type.Integer({ description: 'slot in the table, 1-based (MBR logical partitions from 5)' }),
  typeId: Type.String({ description: 'GPT type GUID (upper case) or MBR type byte as "0x83"' }),
  guid: Type.Union([Type.String(), Type.Null()], { description: 'GPT unique partition GUID; null on MBR' }),
  name: Type.String({ description: "GPT partition name; '' on MBR" }),
  filesystem: Type.Union([Type.String(), Type.Null()], { description: 'ntfs, ext4, vfat, swap, bitlocker, …; null when not recognised' }),
  label: NullableString, uuid: NullableString,
  startBytes: Type.Number(), sizeBytes: Type.Number(),
  usedBytes: Type.Union([Type.Number(), Type.Null()], { description: 'bytes the filesystem uses; null when not known (partitions captured whole)' }),
  minSizeBytes: Type.Union([Type.Number(), Type.Null()], { description: 'the smallest size the filesystem can shrink to; null when it cannot be resized' }),
  mode: Type.Union([Type.Literal('used-blocks'), Type.Literal('whole'), Type.Literal('swap')], { description: 'used-blocks: only used blocks captured; whole: every byte captured (see note); swap: nothing captured, recreated on restore' }),
  note: Type.Union([Type.String(), Type.Null()], { description: 'why the partition was captured whole, or what a restore needs (BitLocker recovery key)' }),
});

export const DiskLayoutView = Type.Object({
  scheme: Type.Union([Type.Literal('gpt'), Type.Literal('mbr')]),
  diskGuid: Type.Union([Type.String(), Type.Null()], { description: 'GPT disk GUID, or the MBR disk signature as 8 hex digits' }),
  partitions: Type.Array(LayoutPartition),
  freeBytes: Type.Number({ description: 'bytes of the disk the capture found free (neither stored nor written on restore)' }),
}, { description: 'what the imaging agent learnt of the disk when it captured the newest version' });

export const RetentionPolicyBody = Type.Object({
  keepLast: Type.Optional(Type.Integer({ minimum: 0, maximum: 100000, description: 'keep the N newest versions' })),
  keepHourly: Type.Optional(Type.Integer({ minimum: 0, maximum: 100000, description: 'newest version of each of the last N hours that have one' })),
  keepDaily: Type.Optional(Type.Integer({ minimum: 0, maximum: 100000, description: 'newest version of each of the last N days that have one' })),
  keepWeekly: Type.Optional(Type.Integer({ minimum: 0, maximum: 100000, description: 'newest version of each of the last N ISO weeks that have one' })),
  keepMonthly: Type.Optional(Type.Integer({ minimum: 0, maximum: 100000, description: 'newest version of each of the last N months that have one' })),
}, { additionalProperties: false, description: "restic forget's --keep-* rules; periods in the server's local time" });

export const ImageDetail = Type.Object({
  name: Type.String(), latestVersion: Type.Integer(), size: Type.Number(), dataBytes: Type.Number(),
  storedBytes: Type.Number({ description: "the image's share of the store's chunk bytes over all versions (chunks shared with other images split between them)" }),
  exclusiveBytes: Type.Number({ description: 'chunk bytes no other image names' }),
  sharedBytes: Type.Number({ description: 'chunk bytes this image names that other images name too' }),
  compressionRatio: Type.Number({ description: 'data bytes / stored bytes of the latest version' }),
  dedupSavings: Type.Number({ description: 'bytes saved by sharing chunks within and across versions and with other images' }),
  retention: Type.Union([RetentionPolicyBody, Type.Null()], { description: 'the stored retention policy; null: keep-versions applies' }),
  versions: Type.Array(ImageVersion),
  partitionTable: Type.Union([Type.Object({ scheme: Type.String(), partitions: Type.Array(Partition) }), Type.Null()]),
  partitionError: Type.Union([Type.String(), Type.Null()]),
  layout: Type.Union([DiskLayoutView, Type.Null()], { description: 'null when the newest version was captured without a layout (imported, over NBD, or its layout file is damaged: see layoutError)' }),
  layoutError: Type.Union([Type.String(), Type.Null()], { description: "why the newest version's layout file could not be read, or null" }),
  fitsDiskBytes: Type.Number({ description: 'the smallest disk the newest version deploys onto; without a layout, the image size' }),
  lastVerify: Type.Union([VerifyStatus, Type.Null()]),
});

export const VerifyBody = Type.Object({ version: Type.Optional(Type.Integer({ minimum: 1 })) }, { additionalProperties: false });
export const RenameBody = Type.Object({ to: ImageName }, { additionalProperties: false });
export const UrlBody = Type.Object({ ttlSeconds: Type.Optional(Type.Integer({ minimum: 60, maximum: 7 * 86400 })) }, { additionalProperties: false });
export const NbdUrlBody = Type.Object({ uri: Type.String(), exportName: Type.String(), expiresAt: Type.String() });

export const EventQuery = Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 2000 })), mac: Type.Optional(Mac) });
export const Event = Type.Object({ at: Type.String(), level: Type.String(), mac: Type.Union([Type.String(), Type.Null()]), message: Type.String() });

export const BootFileProblem = Type.Object({
  files: Type.Union([Type.Literal('loaders'), Type.Literal('client')]),
  state: Type.Union([Type.Literal('missing'), Type.Literal('outdated')], { description: 'missing: PCs cannot boot (loaders) or be imaged (client); outdated: not built from this server\'s version' }),
  message: Type.String(),
  fix: Type.String({ description: 'the shell command that fixes it, run as root on the server' }),
});

export const Status = Type.Object({
  services: Type.Array(Type.Object({ name: Type.String(), state: Type.String(), detail: Type.String() })),
  bootFiles: Type.Array(BootFileProblem, { description: 'the iPXE loaders or imaging client that are missing or out of date; empty when all are in place' }),
  store: Type.Object({ path: Type.String(), totalBytes: Type.Union([Type.Number(), Type.Null()]), freeBytes: Type.Union([Type.Number(), Type.Null()]) }),
  hosts: Type.Integer(), images: Type.Integer(), activeTasks: Type.Integer(),
});

export const TokenBody = Type.Object({ name: Type.String({ minLength: 1, maxLength: 64 }) }, { additionalProperties: false });
export const TokenRecord = Type.Object({ id: Type.String(), name: Type.String(), createdAt: Type.String(), lastUsed: Type.Union([Type.String(), Type.Null()]) });

export type NewHostBody = Static<typeof NewHost>;
export type HostPatchBody = Static<typeof HostPatch>;
export type NewTaskBody = Static<typeof NewTask>;
