/**
 * The agent as the initramfs ships it: compiled to .js (its workers then start as .js files, with no
 * tsx in the way), into a directory of the bench's own, from the working tree's source.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** Compiles src/agent into `outDir` and returns the path of its main.js. */
export async function buildAgent(outDir: string): Promise<string> {
  const entries = ['src/agent/main.ts', 'src/agent/codec-worker.ts', 'src/agent/hash-worker.ts'].map((e) => join(ROOT, e));
  const tsc = join(ROOT, 'node_modules/typescript/bin/tsc');
  const flags = ['--ignoreConfig', '--outDir', outDir, '--rootDir', ROOT, '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--target', 'ES2022', '--strict', '--skipLibCheck', '--esModuleInterop', '--types', 'node'];
  let complaint = '';
  try {
    execFileSync(process.execPath, [tsc, ...flags, ...entries], { cwd: ROOT, stdio: 'pipe' });
  } catch (err) {
    // tsc still emits on type errors (someone's work in progress); only a missing output is fatal.
    complaint = String((err as { stdout?: Buffer }).stdout ?? (err as Error).message).trim();
  }
  const main = join(outDir, 'src/agent/main.js');
  if (!existsSync(main)) throw new Error(`compiling the agent produced no ${main}: ${complaint}`);
  if (complaint) console.warn(`agent bench: tsc complained while compiling the agent (emitted anyway):\n${complaint}`);
  await symlink(join(ROOT, 'node_modules'), join(outDir, 'node_modules'));
  await writeFile(join(outDir, 'package.json'), '{"type":"module"}');
  return main;
}
