/**
 * What a deploy is checked against before it is queued (issue 13): the version it restores, the PC
 * model that version was captured from against the PC's, and the PC's disk against the image's
 * size. The command layer refuses a model mismatch without confirmation; the host page shows all of
 * it before the technician presses "Deploy".
 */
import type { HostRecord } from './database.js';
import type { ImageStore } from '../imaging/image-store.js';
import { readVersionOrigin, type PcModel } from '../imaging/version-origin.js';
import { minDiskBytes } from '../imaging/layout-plan.js';

export type { PcModel } from '../imaging/version-origin.js';

/**
 * DMI strings firmware vendors leave in place of a real name: two PCs both saying "System Product
 * Name" are not known to be the same model.
 */
const PLACEHOLDERS = new Set([
  '', 'to be filled by o.e.m.', 'to be filled by oem', 'system product name', 'system manufacturer', 'default string',
  'not specified', 'not applicable', 'n/a', 'none', 'unknown', 'o.e.m.', 'oem', 'invalid', 'empty', 'x.x', 'xxxx',
]);

function known(text: string): boolean {
  return !PLACEHOLDERS.has(text.trim().toLowerCase());
}

/** The PC's model as its imaging client reported it, or null when it has not reported one. */
export function pcModelOf(host: Pick<HostRecord, 'hardware'> | undefined): PcModel | null {
  const dmi = host?.hardware?.dmi;
  if (!dmi) return null;
  return { vendor: dmi.vendor.trim(), model: dmi.model.trim() };
}

/** "LENOVO 20XW", for messages. */
export function modelName(m: PcModel): string {
  return `${m.vendor} ${m.model}`.trim() || '(no name)';
}

/**
 * True when both models are known and differ. A side whose model is unknown (not reported, or a
 * firmware placeholder) never mismatches: there is nothing to warn about. A missing vendor on one
 * side only compares the models.
 */
export function modelsDiffer(from: PcModel | null, to: PcModel | null): boolean {
  if (!from || !to || !known(from.model) || !known(to.model)) return false;
  const same = (a: string, b: string): boolean => a.trim().toLowerCase() === b.trim().toLowerCase();
  if (!same(from.model, to.model)) return true;
  return known(from.vendor) && known(to.vendor) && !same(from.vendor, to.vendor);
}

/** The sentence a refused deploy shows: which model the image came from, which the PC is, and how to go on. */
export function mismatchMessage(image: string, version: number, from: PcModel, mac: string, to: PcModel): string {
  return `image ${image} version ${version} was captured from a ${modelName(from)}, but PC ${mac} is a ${modelName(to)}: `
    + 'drivers and firmware settings may not fit it. To deploy it anyway, confirm: --force on the command line, "force": true in the API, or tick "Deploy anyway" on the page';
}

/** One committed version, for the version picker. */
export interface VersionChoice {
  readonly version: number;
  readonly created: string;
  readonly size: number;
  readonly dataBytes: number;
  readonly source: string;
}

/** How the PC's disk takes the image. */
export type DiskVerdict =
  | { readonly kind: 'fits' }
  | { readonly kind: 'shrink'; readonly minBytes: number }
  | { readonly kind: 'too-small'; readonly shortBytes: number; readonly minBytes: number }
  | { readonly kind: 'unknown' };

export interface DiskCheck {
  /** The disk the deploy would write, as the PC reported it; null when it reported none (or not that serial). */
  readonly disk: { readonly name: string; readonly size: number; readonly serial: string; readonly model: string } | null;
  readonly verdict: DiskVerdict;
}

/** Everything the deploy form shows for one image (and version) on one PC. */
export interface DeployPreview {
  readonly image: string;
  /** Newest first. */
  readonly versions: readonly VersionChoice[];
  /** The version checked: the one asked for, else the newest. */
  readonly version: number;
  readonly origin: PcModel | null;
  readonly pc: PcModel | null;
  readonly mismatch: boolean;
  readonly disk: DiskCheck;
}

/** The reported disk a deploy would write: the one with `serial`, else the only (or first) one. */
export function targetDisk(host: Pick<HostRecord, 'hardware'> | undefined, serial: string | null | undefined): DiskCheck['disk'] {
  const disks = host?.hardware?.disks ?? [];
  const d = serial ? disks.find((x) => x.serial === serial) : disks[0];
  return d ? { name: d.name, size: d.size, serial: d.serial, model: d.model } : null;
}

/**
 * How a disk of `diskSize` bytes takes a version of `imageSize` bytes whose smallest disk is
 * `minBytes` (the image size for a version without a layout: it cannot shrink).
 */
export function diskVerdict(diskSize: number, imageSize: number, minBytes: number): DiskVerdict {
  if (diskSize >= imageSize) return { kind: 'fits' };
  if (diskSize >= minBytes) return { kind: 'shrink', minBytes };
  return { kind: 'too-small', shortBytes: minBytes - diskSize, minBytes };
}

/** The versions of `image`, newest first ([] when it has none). */
export async function versionChoices(store: Pick<ImageStore, 'versions' | 'versionInfo'>, image: string): Promise<VersionChoice[]> {
  const out: VersionChoice[] = [];
  for (const v of (await store.versions(image)).reverse()) {
    const i = await store.versionInfo(image, v);
    out.push({ version: v, created: i.created, size: i.size, dataBytes: i.dataBytes, source: i.source });
  }
  return out;
}

/** The version's PC model, or null; a damaged or foreign origin file reads as unknown. */
export async function versionOrigin(store: Pick<ImageStore, 'dir' | 'versionInfo'>, image: string, version: number): Promise<PcModel | null> {
  return readVersionOrigin(store, image, version);
}

/**
 * The checks of a deploy of `image` (version `version`, default the newest) onto `host`'s disk
 * `diskSerial`. The image must have a committed version; a `version` it lacks throws RangeError.
 */
export async function previewDeploy(
  store: Pick<ImageStore, 'dir' | 'versions' | 'versionInfo' | 'layout'>,
  host: HostRecord | undefined,
  image: string,
  version: number | undefined,
  diskSerial: string | null | undefined,
  main?: number,
): Promise<DeployPreview> {
  const versions = await versionChoices(store, image);
  const chosen = version === undefined ? versions[0] : versions.find((v) => v.version === version);
  if (!chosen) throw new RangeError(`image ${image} has no version ${version ?? ''}`.trim());
  const origin = await versionOrigin(store, image, chosen.version);
  const pc = pcModelOf(host);
  const disk = targetDisk(host, diskSerial);
  let verdict: DiskVerdict = { kind: 'unknown' };
  if (disk) {
    let minBytes = chosen.size;
    if (disk.size < chosen.size) {
      try {
        const layout = await store.layout(image, chosen.version);
        if (layout) minBytes = minDiskBytes(layout, main);
      } catch {
        // A damaged layout, or a partition that cannot shrink: the image restores at its own size only.
      }
    }
    verdict = diskVerdict(disk.size, chosen.size, minBytes);
  }
  return { image, versions, version: chosen.version, origin, pc, mismatch: modelsDiffer(origin, pc), disk: { disk, verdict } };
}
