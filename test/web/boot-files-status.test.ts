/**
 * Missing or outdated boot files reach the technician before a PC does: the dashboard shows a
 * warning card with the command that fixes them, and GET /api/v1/status carries the same list.
 * On the running appliance the check runs again on each view, so a build run while the server
 * is up clears the warning.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import request from 'supertest';
import { createApiToken } from '../../src/domain/users.js';
import type { BootFileProblem } from '../../src/domain/running-server.js';
import { PACKAGE_ROOT } from '../../src/domain/config.js';
import { nullLogger } from '../../src/lib/log.js';
import { CLIENT_FILES, expectedStamps, LOADER_FILES, loadersManifest } from '../../src/serve/boot-files.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { loopbackConfig } from '../lib/appliance-config.js';
import { login, makeHarness, type Harness } from './helpers.js';

const PROBLEMS: readonly BootFileProblem[] = [
  { files: 'loaders', state: 'outdated', message: 'the iPXE loaders in /b/loaders are out of date: set up by netclone 0.0.9; this server is 0.1.0', fix: 'cd /opt/netclone && npm run setup:boot' },
  { files: 'client', state: 'missing', message: 'the imaging client is missing from /b/dist: initrd.img; a PC that starts a capture or deploy stops at "could not load the imaging client"', fix: 'cd /opt/netclone && npm run build:client' },
];

let h: Harness | undefined;
let appliance: RunningAppliance | undefined;
let dir: string | undefined;
afterEach(async () => {
  await h?.close();
  await appliance?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
  h = undefined;
  appliance = undefined;
  dir = undefined;
});

describe('boot file problems on the dashboard and in the API', () => {
  it('shows a warning card naming each problem and its fix, and lists them in /api/v1/status', async () => {
    h = await makeHarness({ bootFiles: PROBLEMS });
    const { agent } = await login(h.app);
    const page = await agent.get('/').expect(200);
    const card = /<section class="card error" role="alert" id="boot-files">([\s\S]*?)<\/section>/.exec(page.text)?.[1];
    expect(card, page.text).toBeDefined();
    expect(card).toContain('<h2>Boot files missing</h2>');
    expect(card).toContain('<strong>iPXE loaders:</strong> the iPXE loaders in /b/loaders are out of date: set up by netclone 0.0.9; this server is 0.1.0.');
    expect(card).toContain('<code>cd /opt/netclone &amp;&amp; npm run setup:boot</code>');
    expect(card).toContain('<strong>Imaging client:</strong> the imaging client is missing from /b/dist: initrd.img; a PC that starts a capture or deploy stops at &quot;could not load the imaging client&quot;.');
    expect(card).toContain('<code>cd /opt/netclone &amp;&amp; npm run build:client</code>');
    // Before the services, so it is the first thing seen.
    expect(page.text.indexOf('id="boot-files"')).toBeLessThan(page.text.indexOf('<h2>Services</h2>'));

    const auth = { Authorization: `Bearer ${(await createApiToken(h.ctx.db, 'tests')).token}` };
    const st = await request(h.app.server).get('/api/v1/status').set(auth).expect(200);
    expect(st.body.bootFiles).toEqual(PROBLEMS);
  });

  it('shows an outdated-only card under its own title', async () => {
    h = await makeHarness({ bootFiles: [PROBLEMS[0]] });
    const { agent } = await login(h.app);
    const page = await agent.get('/').expect(200);
    expect(page.text).toContain('<h2>Boot files out of date</h2>');
  });

  it('shows no card and an empty list when the boot files are in place', async () => {
    h = await makeHarness();
    const { agent } = await login(h.app);
    const page = await agent.get('/').expect(200);
    expect(page.text).toContain('<h2>Services</h2>');
    expect(page.text).not.toContain('id="boot-files"');
    const auth = { Authorization: `Bearer ${(await createApiToken(h.ctx.db, 'tests')).token}` };
    const st = await request(h.app.server).get('/api/v1/status').set(auth).expect(200);
    expect(st.body.bootFiles).toEqual([]);
  });

  it('on the running appliance: reports an empty boot directory, and nothing once the files are built, without a restart', async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'nc-bootfiles-web-'));
    const bootDir = path.join(dir, 'boot');
    appliance = await startAppliance(loopbackConfig(path.join(dir, 'data'), bootDir), nullLogger());
    const auth = { Authorization: `Bearer ${(await createApiToken(appliance.core.db, 'tests')).token}` };
    const status = async (): Promise<BootFileProblem[]> =>
      (await request(`http://127.0.0.1:${appliance?.ports.http}`).get('/api/v1/status').set(auth).expect(200)).body.bootFiles as BootFileProblem[];

    const before = await status();
    expect(before.map((p) => [p.files, p.state])).toEqual([['loaders', 'missing'], ['client', 'missing']]);
    expect(before[0].fix).toBe(`bash ${path.join(PACKAGE_ROOT, 'boot', 'setup-loaders.sh')} ${path.join(bootDir, 'loaders')}`);
    expect(before[1].fix).toContain(`cd ${PACKAGE_ROOT} && npm run build:client && mkdir -p ${path.join(bootDir, 'dist')}`);

    const stamps = await expectedStamps(PACKAGE_ROOT);
    for (const [sub, names, sources] of [['loaders', LOADER_FILES, stamps.loaders], ['dist', CLIENT_FILES, stamps.client]] as const) {
      await mkdir(path.join(bootDir, sub), { recursive: true });
      for (const n of names) await writeFile(path.join(bootDir, sub, n), 'boot file');
      const manifest = sub === 'loaders' ? loadersManifest(path.join(bootDir, sub)) : path.join(bootDir, sub, 'manifest.txt');
      await writeFile(manifest, `netclone-version: ${stamps.version}\nsources: ${sources}\n`);
    }
    expect(await status()).toEqual([]);
  });
});
