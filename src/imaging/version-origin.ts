/**
 * Which PC model a version was captured from (issue 13, hardware mismatch): the DMI vendor and
 * model the capturing PC's imaging client reported, kept beside the version's manifest as
 * `<n>.origin.json`.
 *
 * The store neither writes nor removes this file: a version's number can be used again (removing
 * the newest version and capturing anew gives the new one the same number), so the file names the
 * digest and creation time of the version it describes, and a file that does not match its
 * version's manifest is read as "unknown".
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileDurably } from '../lib/durable-write.js';
import type { ImageStore } from './image-store.js';
import { assertValidImageName } from './names.js';

export interface PcModel {
  readonly vendor: string;
  readonly model: string;
}

interface OriginFile {
  readonly digest: string;
  readonly created: string;
  readonly dmi: PcModel;
}

const MAX_FIELD = 128;

function originPath(store: Pick<ImageStore, 'dir'>, name: string, version: number): string {
  assertValidImageName(name);
  if (!Number.isSafeInteger(version) || version < 1) throw new RangeError(`version ${version} is not a version number`);
  return join(store.dir, 'images', name, 'versions', `${version}.origin.json`);
}

/** Records the PC model of a committed version (`name` version `version`, which must exist). */
export async function writeVersionOrigin(store: Pick<ImageStore, 'dir' | 'tmpDir' | 'versionInfo'>, name: string, version: number, dmi: PcModel): Promise<void> {
  const info = await store.versionInfo(name, version);
  const body: OriginFile = { digest: info.digest, created: info.created, dmi: { vendor: dmi.vendor.slice(0, MAX_FIELD), model: dmi.model.slice(0, MAX_FIELD) } };
  await writeFileDurably(originPath(store, name, version), JSON.stringify(body), { mode: 0o666, tempDir: store.tmpDir });
}

/** The PC model a version was captured from, or null when not recorded (imported, older, or another version's file). */
export async function readVersionOrigin(store: Pick<ImageStore, 'dir' | 'versionInfo'>, name: string, version: number): Promise<PcModel | null> {
  let text: string;
  try {
    text = await readFile(originPath(store, name, version), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return null;
  }
  const f = parsed as Partial<OriginFile> | null;
  if (!f || typeof f.digest !== 'string' || typeof f.created !== 'string' || !f.dmi || typeof f.dmi.vendor !== 'string' || typeof f.dmi.model !== 'string') return null;
  const info = await store.versionInfo(name, version);
  if (info.digest !== f.digest || info.created !== f.created) return null;
  return { vendor: f.dmi.vendor, model: f.dmi.model };
}
