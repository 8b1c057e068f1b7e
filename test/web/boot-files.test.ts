/**
 * UEFI HTTP boot: every loader the boot policy hands out over HTTP is one the /boot/ route serves,
 * and nothing else is (no path from a request reaches the file system).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { booterOptions, ClientArch, policyBooter } from '../../src/domain/boot-policy.js';
import { resolveConfig } from '../../src/domain/config.js';
import { makeBootHarness, type BootHarness } from './boot-harness.js';

let b: BootHarness | undefined;
afterEach(async () => {
  await b?.close();
  b = undefined;
});

describe('loaders over HTTP', () => {
  it('serves each file the policy sends an HTTP-booting PC to, the arm64 loader included, and refuses other names', async () => {
    b = await makeBootHarness();
    const config = resolveConfig({ data: '/nonexistent' });
    const booter = policyBooter({ host: () => undefined, activeTask: () => undefined, lastStartedDeploy: () => undefined }, booterOptions(config));
    const httpLoaders = new Set<string>();
    for (const arch of Object.values(ClientArch)) {
      const stage = booter.firstStage({ mac: '52:54:00:00:00:01', arch, isIpxe: false });
      if (stage.ok && stage.kind !== 'ipxe-script' && stage.via === 'http') httpLoaders.add(stage.loader);
    }
    expect([...httpLoaders].sort()).toEqual(['ipxe-arm64.efi', 'ipxe.efi']);
    for (const file of httpLoaders) {
      const r = await b.app.inject({ method: 'GET', url: `/boot/${file}`, remoteAddress: '10.0.0.5' });
      // Served, or (in a checkout without loaders) missing on disk: never "no such boot file".
      expect(r.body, file).not.toContain('no such boot file');
      expect([200, 404]).toContain(r.statusCode);
    }
    for (const file of ['grub.cfg', '..%2Fpackage.json', 'vmlinuz', '__proto__']) {
      const r = await b.app.inject({ method: 'GET', url: `/boot/${file}`, remoteAddress: '10.0.0.5' });
      expect(r.statusCode, file).toBe(404);
      expect(r.body, file).toContain('no such boot file');
    }
  });
});
