import { mkdtemp, readdir, rm } from 'node:fs/promises';
import type { ImageStore } from '../../src/imaging/image-store.js';
import { readBytes } from '../../src/imaging/image-export.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';

export async function tempDir(tag: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), `netclone-${tag}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Deterministic text-like bytes that zstd shrinks a lot. */
export function compressible(n: number, seed = 1): Buffer {
  const words = ['kernel ', 'system32 ', 'config\n', 'libc.so.6 ', 'ntoskrnl ', '0000 ', 'user ', 'home/', 'etc/', 'usr/lib '];
  const b = Buffer.alloc(n);
  let o = 0;
  let s = seed;
  while (o < n) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    o += b.write(words[s % words.length] + (s % 1000).toString(), o);
  }
  return b;
}

/** A disk with random, zero and compressible stretches, `size` bytes (not a multiple of 1 MiB if asked). */
export function mixedDisk(size: number, seed = 7): Buffer {
  const b = Buffer.alloc(size);
  const MiB = 1024 * 1024;
  let o = 0;
  let k = seed;
  while (o < size) {
    const n = Math.min(size - o, MiB / 2 + ((k * 7919) % (3 * MiB)));
    const kind = k % 3;
    if (kind === 0) randomBytes(n).copy(b, o);
    else if (kind === 1) compressible(n, k).copy(b, o);
    o += n;
    k++;
  }
  return b;
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/**
 * Compiles the image store (and optional extra entry points, e.g. a fixture) with tsc into `outDir`,
 * laid out like the repository, with node_modules linked beside it: the same JS `npm run build` makes,
 * without depending on other modules' work in progress.
 */
export async function compileImaging(outDir: string, extraEntries: string[] = []): Promise<(repoPath: string) => string> {
  const { execFileSync } = await import('node:child_process');
  const { symlink, writeFile } = await import('node:fs/promises');
  const { fileURLToPath } = await import('node:url');
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const entries = ['src/imaging/index.ts', 'src/imaging/codec-worker.ts', ...extraEntries].map((e) => join(root, e));
  execFileSync(
    process.execPath,
    [join(root, 'node_modules/typescript/bin/tsc'), '--ignoreConfig', '--outDir', outDir, '--rootDir', root, '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--target', 'ES2022', '--strict', '--skipLibCheck', '--esModuleInterop', '--types', 'node', ...entries],
    { cwd: root, stdio: 'pipe' },
  );
  await symlink(join(root, 'node_modules'), join(outDir, 'node_modules'));
  await writeFile(join(outDir, 'package.json'), '{"type":"module"}');
  return (repoPath: string) => join(outDir, repoPath.replace(/\.ts$/, '.js'));
}

/** A whole version (newest if not given) read back into one buffer. */
export async function readAll(store: ImageStore, name: string, version?: number): Promise<Buffer> {
  const r = await store.openVersion(name, version);
  try {
    return await readBytes(r, 0, r.size);
  } finally {
    r.close();
  }
}

/** Paths of every chunk file in a store directory, sorted. */
export async function chunkPaths(storeDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const sub of await readdir(join(storeDir, 'chunks'))) for (const f of await readdir(join(storeDir, 'chunks', sub))) out.push(join(storeDir, 'chunks', sub, f));
  return out.sort();
}
