/**
 * Maps a TFTP filename onto a file inside the boot directory, refusing anything that could
 * reach outside it. Lexical checks first (cheap, clear errors), then realpath so symlinks
 * cannot escape either.
 */
import { realpath } from 'node:fs/promises';
import path from 'node:path';

export type ResolveResult =
  | { ok: true; path: string }
  | { ok: false; reason: 'not-found' | 'forbidden' | 'bad-name'; detail: string };

const MAX_NAME_BYTES = 1024;

/**
 * Lexical part, pure. Leading slashes are taken relative to the root (as tftp-hpa's --secure does),
 * so "/undionly.kpxe" works and "/etc/passwd" means ROOT/etc/passwd. Backslashes are separators
 * because some PXE ROM configurations send DOS-style names.
 */
export function splitRequestName(name: string): { ok: true; segments: string[] } | { ok: false; reason: 'forbidden' | 'bad-name'; detail: string } {
  if (name.length === 0 || name.length > MAX_NAME_BYTES) return { ok: false, reason: 'bad-name', detail: `name length ${name.length} outside 1..${MAX_NAME_BYTES}` };
  // Printable ASCII only: control bytes, DEL and 8-bit bytes have no business in a boot file name.
  if (!/^[\x20-\x7e]+$/.test(name)) return { ok: false, reason: 'bad-name', detail: 'name contains control or non-ASCII bytes' };
  const segments = name.split(/[/\\]+/).filter((s) => s.length > 0 && s !== '.');
  if (segments.some((s) => s === '..')) return { ok: false, reason: 'forbidden', detail: 'name contains a ".." segment' };
  if (segments.length === 0) return { ok: false, reason: 'bad-name', detail: 'name has no file component' };
  return { ok: true, segments };
}

/** `realRoot` must already be a realpath (the server resolves it once at start). */
export async function resolveInRoot(realRoot: string, name: string): Promise<ResolveResult> {
  const split = splitRequestName(name);
  if (!split.ok) return split;
  const candidate = path.join(realRoot, ...split.segments);
  let real: string;
  try {
    real = await realpath(candidate);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { ok: false, reason: 'not-found', detail: `${candidate} does not exist` };
    if (code === 'EACCES' || code === 'ELOOP') return { ok: false, reason: 'forbidden', detail: `${candidate}: ${code}` };
    return { ok: false, reason: 'not-found', detail: `${candidate}: ${code ?? String(err)}` };
  }
  const prefix = realRoot.endsWith(path.sep) ? realRoot : realRoot + path.sep;
  if (!real.startsWith(prefix)) return { ok: false, reason: 'forbidden', detail: `${candidate} resolves to ${real}, outside the boot directory` };
  return { ok: true, path: real };
}
