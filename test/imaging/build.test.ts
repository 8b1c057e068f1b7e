import { describe, it, expect, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileImaging } from './helpers.js';

describe('codec workers from compiled output', () => {
  let dir = '';
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('spawns the .js worker sibling when run from tsc output', async () => {
    dir = await mkdtemp(join(tmpdir(), 'netclone-build-'));
    await compileImaging(dir);
    const script = join(dir, 'smoke.mjs');
    await writeFile(
      script,
      `import { ImageStore, importStream } from './src/imaging/index.js';
import { nullLogger } from './src/lib/log.js';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
const s = await ImageStore.open(${JSON.stringify(join(dir, 'store'))}, { logger: nullLogger(), workers: 2 });
const d = randomBytes(3 * 1024 * 1024 + 5);
const v = await importStream(s, 'x', Readable.from([d]), d.length, { source: 'smoke' });
const r = await s.openVersion('x');
const back = Buffer.concat((await r.read(0, d.length)).map((p) => p.data));
r.close();
await s.close();
console.log(JSON.stringify({ version: v.version, same: back.equals(d) }));
`,
    );
    const res = execFileSync(process.execPath, [script], { cwd: dir, encoding: 'utf8' });
    expect(JSON.parse(res.trim())).toEqual({ version: 1, same: true });
  });
});
