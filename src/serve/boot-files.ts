/**
 * Whether the files PCs boot from are in place and were made for this server: the iPXE loaders
 * (`<boot-dir>/loaders/`, copied by boot/setup-loaders.sh) and the imaging client
 * (`<boot-dir>/dist/`, built by boot/build.sh). Without this check a missing client shows up only
 * when a PC that picked "Capture" prints "could not load the imaging client".
 *
 * What counts as outdated. Each script writes a stamp into its manifest.txt: the netclone version
 * from package.json and a sha256 over the sources that define what it makes (its own script, and
 * for the client also boot/client/ and the imaging agent's sources with the lock file that pins its
 * zstd addon, documentation left out). The files are current
 * only when both equal this server's. The version alone would not do: the client's shell code and
 * its use of the client API change between commits without a version bump, and a client built
 * before such a change fails at the PC, not here. The hash alone would not do where the sources
 * are not shipped. A stamp that differs in either is reported, newer or older, because either way
 * the files were not made for this server. A manifest without a stamp (made by hand, or by a
 * netclone before stamps) cannot be vouched for and is reported as outdated too.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { BIOS_LOADER, HTTP_EFI_LOADER, SIGNED_GRUB, SIGNED_SHIM, type EfiLoader } from '../domain/boot-policy.js';
import type { BootFileProblem } from '../domain/running-server.js';

/** A host's UEFI loader is one of these (the second is the per-host fallback). */
const EFI_LOADERS: readonly EfiLoader[] = ['snponly.efi', 'ipxe.efi'];
/** What the boot policy hands out by TFTP or HTTP on x86, all of which setup-loaders.sh copies. */
export const LOADER_FILES: readonly string[] = [...new Set([BIOS_LOADER, ...EFI_LOADERS, HTTP_EFI_LOADER, SIGNED_SHIM, SIGNED_GRUB])];
/** What the boot scripts load (`/boot/client/…`); the build's stamp is in MANIFEST beside them. */
export const CLIENT_FILES: readonly string[] = ['vmlinuz', 'initrd.img'];
export const MANIFEST = 'manifest.txt';

/**
 * The sources each stamp hashes, relative to the package root. boot/build.sh and
 * boot/setup-loaders.sh name the same lists and print their stamp with `--print-stamp`;
 * test/serve/boot-files.test.ts checks that both sides agree.
 */
export const CLIENT_SOURCES: readonly string[] = [
  'boot/build.sh', 'boot/client', 'src/agent', 'src/imaging/chunk-format.ts', 'src/imaging/disk-layout.ts', 'src/imaging/partitions.ts',
  'src/imaging/layout-plan.ts', 'src/imaging/partition-write.ts', 'src/imaging/domain-map.ts', 'src/transport/chunk-wire.ts', 'src/lib', 'package-lock.json',
];
export const LOADER_SOURCES: readonly string[] = ['boot/setup-loaders.sh'];

export interface Stamp {
  readonly version: string | null;
  /** `sha256:<hex>` over the sources; null when the manifest has none. */
  readonly sources: string | null;
}

/** This server's stamps. `sources` is null where this installation ships no sources to hash. */
export interface ExpectedStamps {
  readonly version: string;
  readonly client: string | null;
  readonly loaders: string | null;
}

/** Shell commands that fix each file set (run as root: the client build may apt-get its tools). */
export interface BootFixes {
  readonly loaders: string;
  readonly client: string;
}

async function filesUnder(root: string, rel: string): Promise<string[] | null> {
  const full = path.join(root, rel);
  const st = await stat(full).catch(() => null);
  if (!st) return null;
  if (st.isFile()) return [rel];
  if (!st.isDirectory()) return [];
  const out: string[] = [];
  for (const e of await readdir(full, { withFileTypes: true, recursive: true })) {
    // Documentation never reaches the PC; editing it must not make a client outdated.
    if (e.isFile() && !e.name.endsWith('.md')) out.push(path.relative(root, path.join(e.parentPath, e.name)));
  }
  return out;
}

/**
 * sha256 over the listed files and directories, computed as the shell scripts compute it:
 * `find INPUTS -type f ! -name '*.md' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum`,
 * run in the package root. Names here are plain (no backslash or newline, which sha256sum would
 * escape). Null when an input does not exist.
 */
export async function sourcesHash(packageRoot: string, inputs: readonly string[]): Promise<string | null> {
  const files: string[] = [];
  for (const input of inputs) {
    const found = await filesUnder(packageRoot, input);
    if (!found) return null;
    files.push(...found);
  }
  // `LC_ALL=C sort` orders by bytes.
  files.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const listing = createHash('sha256');
  for (const file of files) {
    const digest = createHash('sha256').update(await readFile(path.join(packageRoot, file))).digest('hex');
    listing.update(`${digest}  ${file}\n`);
  }
  return `sha256:${listing.digest('hex')}`;
}

export async function expectedStamps(packageRoot: string): Promise<ExpectedStamps> {
  const pkg = JSON.parse(await readFile(path.join(packageRoot, 'package.json'), 'utf8')) as { version?: unknown };
  if (typeof pkg.version !== 'string') throw new Error(`${path.join(packageRoot, 'package.json')} has no "version"; reinstall netclone`);
  return {
    version: pkg.version,
    client: await sourcesHash(packageRoot, CLIENT_SOURCES),
    loaders: await sourcesHash(packageRoot, LOADER_SOURCES),
  };
}

/** The stamp lines of a manifest: `netclone-version: X` and `sources: sha256:…`. */
export function parseStamp(manifest: string): Stamp {
  const field = (key: string): string | null => new RegExp(`^${key}: (\\S+)$`, 'm').exec(manifest)?.[1] ?? null;
  return { version: field('netclone-version'), sources: field('sources') };
}

export function bootFixes(bootDir: string, packageRoot: string): BootFixes {
  const inPackage = path.resolve(bootDir) === path.join(packageRoot, 'boot');
  const cd = `cd ${packageRoot} && `;
  return {
    loaders: inPackage ? `${cd}npm run setup:boot` : `bash ${path.join(packageRoot, 'boot', 'setup-loaders.sh')} ${path.join(bootDir, 'loaders')}`,
    client: inPackage
      ? `${cd}npm run build:client`
      : `${cd}npm run build:client && mkdir -p ${path.join(bootDir, 'dist')} && cp boot/dist/vmlinuz boot/dist/initrd.img boot/dist/manifest.txt ${path.join(bootDir, 'dist')}/`,
  };
}

interface Made {
  /** "built" or "set up". */
  readonly verb: string;
  readonly sources: readonly string[];
}

/** Why `stamp` is not `expected`, or null when it is current. */
function staleness(stamp: Stamp | null, expected: { version: string; sources: string | null }, made: Made): string | null {
  if (!stamp) return `no ${MANIFEST} says which netclone made them`;
  if (!stamp.version || !stamp.sources) return `their ${MANIFEST} has no netclone stamp (${made.verb} by hand, or by a netclone from before stamps)`;
  if (stamp.version !== expected.version) return `${made.verb} by netclone ${stamp.version}; this server is ${expected.version}`;
  if (expected.sources && stamp.sources !== expected.sources) return `${made.verb} from sources other than this server's ${made.sources.join(' and ')}`;
  return null;
}

async function missingFiles(dir: string, names: readonly string[]): Promise<string[]> {
  const missing: string[] = [];
  for (const name of names) {
    const st = await stat(path.join(dir, name)).catch(() => null);
    // An empty file is what an interrupted copy leaves; a PC cannot boot it either.
    if (!st?.isFile() || st.size === 0) missing.push(name);
  }
  return missing;
}

/**
 * The loaders' manifest sits beside their folder, not in it: the TFTP server serves every file in
 * that folder to anyone, and versions are no business of a stranger's.
 */
export function loadersManifest(loadersDir: string): string {
  return `${loadersDir.replace(/\/+$/, '')}.${MANIFEST}`;
}

async function readStamp(manifestPath: string): Promise<Stamp | null> {
  const text = await readFile(manifestPath, 'utf8').catch(() => null);
  return text === null ? null : parseStamp(text);
}

/** The problems with the boot files under `bootDir`, at most one per file set; empty when all are in place and current. */
export async function checkBootFiles(bootDir: string, expected: ExpectedStamps, fixes: BootFixes): Promise<BootFileProblem[]> {
  const problems: BootFileProblem[] = [];

  const loaders = path.join(bootDir, 'loaders');
  const missingLoaders = await missingFiles(loaders, LOADER_FILES);
  if (missingLoaders.length > 0) {
    problems.push({
      files: 'loaders', state: 'missing', fix: fixes.loaders,
      message: `the network boot loaders are missing from ${loaders}: ${missingLoaders.join(', ')}; PCs cannot network-boot (TFTP and UEFI HTTP boot have nothing to send them)`,
    });
  } else {
    const why = staleness(await readStamp(loadersManifest(loaders)), { version: expected.version, sources: expected.loaders }, { verb: 'set up', sources: LOADER_SOURCES });
    if (why) problems.push({ files: 'loaders', state: 'outdated', fix: fixes.loaders, message: `the iPXE loaders in ${loaders} are out of date: ${why}` });
  }

  const dist = path.join(bootDir, 'dist');
  const missingClient = await missingFiles(dist, CLIENT_FILES);
  if (missingClient.length > 0) {
    problems.push({
      files: 'client', state: 'missing', fix: fixes.client,
      message: `the imaging client is missing from ${dist}: ${missingClient.join(', ')}; a PC that starts a capture or deploy stops at "could not load the imaging client"`,
    });
  } else {
    const why = staleness(await readStamp(path.join(dist, MANIFEST)), { version: expected.version, sources: expected.client }, { verb: 'built', sources: CLIENT_SOURCES });
    if (why) {
      problems.push({
        files: 'client', state: 'outdated', fix: fixes.client,
        message: `the imaging client files in ${dist} are out of date: ${why}; PCs may fail mid-capture or mid-deploy where the client and this server disagree`,
      });
    }
  }
  return problems;
}
