/**
 * What a person records about an image beside its versions (issue 13): its retention policy, and per
 * version a protect flag and a note. Kept in `images/<name>/image.json`, written durably, so it moves
 * with a rename and goes with a removal. Pure: parsing, validation and the source's MAC; the store
 * does the I/O.
 */
import { parsePolicy, type RetentionPolicy } from './retention.js';

export interface VersionMeta {
  readonly protected: boolean;
  readonly note: string;
}

export interface ImageMeta {
  /** null: no policy; the store's keep-versions applies at each commit. */
  readonly retention: RetentionPolicy | null;
  /** By version number; a version without an entry is unprotected and has no note. */
  readonly versions: Readonly<Record<string, VersionMeta>>;
}

export const EMPTY_META: ImageMeta = { retention: null, versions: {} };
export const NO_VERSION_META: VersionMeta = { protected: false, note: '' };

export const MAX_NOTE_CHARS = 500;

export class ImageMetaError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ImageMetaError';
  }
}

/** A note as stored: one line of printable text, at most MAX_NOTE_CHARS. Control characters become spaces. */
export function cleanNote(raw: unknown): string {
  if (typeof raw !== 'string') throw new ImageMetaError('a note is text');
  const note = raw.replace(/[\p{Cc}]+/gu, ' ').trim();
  if (note.length > MAX_NOTE_CHARS) throw new ImageMetaError(`a note is at most ${MAX_NOTE_CHARS} characters; this one has ${note.length}`);
  return note;
}

export function parseImageMeta(raw: unknown): ImageMeta {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ImageMetaError('not a JSON object');
  const r = raw as Record<string, unknown>;
  const retention = r.retention === null || r.retention === undefined ? null : parsePolicy(r.retention);
  const versions: Record<string, VersionMeta> = {};
  if (r.versions !== undefined) {
    if (r.versions === null || typeof r.versions !== 'object' || Array.isArray(r.versions)) throw new ImageMetaError('"versions" is not an object');
    for (const [k, v] of Object.entries(r.versions as Record<string, unknown>)) {
      if (!/^[1-9]\d{0,9}$/.test(k)) throw new ImageMetaError(`"${k.slice(0, 20)}" is not a version number`);
      if (v === null || typeof v !== 'object') throw new ImageMetaError(`version ${k}: not an object`);
      const e = v as Record<string, unknown>;
      if (e.protected !== undefined && typeof e.protected !== 'boolean') throw new ImageMetaError(`version ${k}: "protected" is not true or false`);
      versions[k] = { protected: e.protected === true, note: e.note === undefined ? '' : cleanNote(e.note) };
    }
  }
  return { retention, versions };
}

export function versionMeta(meta: ImageMeta, version: number): VersionMeta {
  return meta.versions[String(version)] ?? NO_VERSION_META;
}

/** The meta with one version's entry changed (the note cleaned, or refused when too long); an entry back to the defaults is dropped. */
export function withVersionMeta(meta: ImageMeta, version: number, patch: Partial<VersionMeta>): ImageMeta {
  const next = { ...versionMeta(meta, version), ...patch, ...(patch.note !== undefined ? { note: cleanNote(patch.note) } : {}) };
  const versions = { ...meta.versions };
  if (!next.protected && next.note === '') delete versions[String(version)];
  else versions[String(version)] = next;
  return { ...meta, versions };
}

export function withoutVersions(meta: ImageMeta, gone: Iterable<number>): ImageMeta {
  const versions = { ...meta.versions };
  let changed = false;
  for (const v of gone) {
    if (String(v) in versions) {
      delete versions[String(v)];
      changed = true;
    }
  }
  return changed ? { ...meta, versions } : meta;
}

/**
 * The PC a version came from, when its source says: captures record "capture of <mac> disk <name>"
 * (src/domain/transfers.ts), so the MAC is in every version a PC made, old ones included.
 */
export function sourceMacOf(source: string): string | null {
  const m = /\bcapture of ((?:[0-9a-f]{2}:){5}[0-9a-f]{2})\b/i.exec(source);
  return m ? m[1].toLowerCase() : null;
}
