import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const repoRoot = resolve(import.meta.dirname, '..', '..');
export const bootDir = join(repoRoot, 'boot');
export const distDir = join(bootDir, 'dist');
export const libDir = join(bootDir, 'client', 'lib');

function newestMtime(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  return readdirSync(path).reduce((m, n) => Math.max(m, newestMtime(join(path, n))), st.mtimeMs);
}

/**
 * Builds the client unless boot/dist holds a build newer than boot/build.sh and boot/client/ whose
 * stamp names today's sources (that covers the agent's sources in src/ too: build.sh --print-stamp).
 */
export function ensureClientBuild(): void {
  const outputs = ['vmlinuz', 'initrd.img', 'manifest.txt'].map((f) => join(distDir, f));
  const sources = Math.max(newestMtime(join(bootDir, 'build.sh')), newestMtime(join(bootDir, 'client')));
  const stamp = (text: string): string | undefined => /^sources: (\S+)$/m.exec(text)?.[1];
  const current = (): boolean => {
    const want = stamp(spawnSync('bash', [join(bootDir, 'build.sh'), '--print-stamp'], { encoding: 'utf8' }).stdout ?? '');
    return want !== undefined && stamp(readFileSync(join(distDir, 'manifest.txt'), 'utf8')) === want;
  };
  if (outputs.every((f) => existsSync(f) && statSync(f).mtimeMs > sources) && current()) return;
  const r = spawnSync('bash', [join(bootDir, 'build.sh')], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`boot/build.sh failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
}

export interface ShellResult { status: number | null; stdout: string; stderr: string }

/** Runs SCRIPT under busybox ash (the initramfs shell) with the client helper libraries sourced. */
export function runLib(script: string, env: Record<string, string> = {}): ShellResult {
  const prelude = ['log', 'json', 'api', 'disks', 'hw', 'net', 'transfer'].map((f) => `. ${join(libDir, f)}.sh`).join('\n');
  const r = spawnSync('busybox', ['sh', '-c', `${prelude}\n${script}`], {
    encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, maxBuffer: 16 << 20,
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
