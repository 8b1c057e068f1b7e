/**
 * Starting a worker thread from a module that may run as compiled .js (npm run build) or as its .ts
 * source (vitest, tsx). From the build the worker is the compiled .js sibling. From source it must be
 * the .ts sibling compiled on the fly: on Node 20.20, `execArgv: ['--import', 'tsx']` does not reach a
 * worker's module loader (the worker still fails with "Unknown file extension .ts"), so a tiny eval'd
 * bootstrap registers tsx's ESM hooks inside the worker first. tsx's CommonJS build of its API resolves
 * its own files wrongly, hence the .mjs entry.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';

/** The worker `name` (no extension) beside the module at `fromUrl` (pass `import.meta.url`). */
export function startWorker(fromUrl: string, name: string): Worker {
  if (!fromUrl.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, fromUrl));
  const target = new URL(`./${name}.ts`, fromUrl).href;
  const from = fileURLToPath(fromUrl);
  const code = [
    "const { createRequire } = require('node:module');",
    "const { pathToFileURL } = require('node:url');",
    `const api = createRequire(${JSON.stringify(from)}).resolve('tsx/esm/api').replace(/\\.cjs$/, '.mjs');`,
    `import(pathToFileURL(api).href).then((m) => { m.register(); return import(${JSON.stringify(target)}); });`,
  ].join('\n');
  return new Worker(code, { eval: true });
}
