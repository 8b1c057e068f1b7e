// Issue 14 on the pages and the API: the host page shows the Secure Boot state the client reported,
// and the per-host choice between iPXE and the signed chain is saved from the page and the API and
// reaches the boot policy (DHCP offers the shim).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { booterOptions, policyBooter, serviceFacts } from '../../src/domain/boot-policy.js';
import type { HardwareReport } from '../../src/domain/database.js';
import { login, makeHarness, type Harness } from './helpers.js';

let h: Harness;
let agent: Awaited<ReturnType<typeof login>>['agent'];
let csrf: string;

const MAC = '52:54:00:00:5b:01';
const hardware = (secureBoot?: HardwareReport['secureBoot']): HardwareReport => ({
  dmi: { vendor: 'LENOVO', model: 'ThinkCentre M70q', serial: 'S1', uuid: 'u' },
  disks: [],
  nics: [],
  ...(secureBoot ? { secureBoot } : {}),
  reportedAt: new Date().toISOString(),
});

beforeAll(async () => {
  h = await makeHarness();
  ({ agent, csrf } = await login(h.app));
  await h.ctx.hosts.register(MAC);
});
afterAll(async () => {
  await h.close();
});

describe('Secure Boot on the host page', () => {
  it('shows the state the client reported, and says when it was not reported', async () => {
    for (const [state, shown] of [['on', 'on'], ['off', 'off'], ['bios', 'none (BIOS)'], [undefined, 'not reported']] as const) {
      await h.ctx.hosts.setHardware(MAC, hardware(state));
      const page = await agent.get(`/hosts/${MAC}`).expect(200);
      expect(page.text, String(state)).toContain(`<dt>Secure Boot</dt><dd>${shown}</dd>`);
    }
  });

  it('saves the host\'s UEFI network boot from the page, and the boot policy follows it', async () => {
    const booter = policyBooter(serviceFacts(h.ctx.hosts, h.ctx.tasks), booterOptions({ ...h.ctx.config, uefiBoot: 'ipxe' }));
    expect(booter.firstStage({ mac: MAC, arch: 7, isIpxe: false })).toMatchObject({ loader: 'snponly.efi' });

    await agent.post(`/hosts/${MAC}`).type('form').send({ _csrf: csrf, uefiBoot: 'signed' }).expect(303);
    expect(h.ctx.hosts.get(MAC)?.uefiBoot).toBe('signed');
    expect(booter.firstStage({ mac: MAC, arch: 7, isIpxe: false })).toMatchObject({ kind: 'signed-loader', loader: 'shimx64.efi' });
    expect((await agent.get(`/hosts/${MAC}`).expect(200)).text).toMatch(/<option value="signed" selected>signed shim and GRUB/);

    await agent.post(`/hosts/${MAC}`).type('form').send({ _csrf: csrf, uefiBoot: '' }).expect(303);
    expect(h.ctx.hosts.get(MAC)?.uefiBoot).toBeNull();
    expect(booter.firstStage({ mac: MAC, arch: 7, isIpxe: false })).toMatchObject({ loader: 'snponly.efi' });
  });

  it('takes the same choice through the API, and refuses anything else', async () => {
    const token = (await h.ctx.commands.createApiToken({ kind: 'operator', name: 't', via: 'cli' }, 'sb-test')).token;
    const api = (body: object) => request(h.app.server).patch(`/api/v1/hosts/${MAC}`).set('authorization', `Bearer ${token}`).send(body);
    const ok = await api({ uefiBoot: 'signed' });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.body.uefiBoot).toBe('signed');
    expect((await api({ uefiBoot: 'grub' })).status).toBe(400);
    expect(h.ctx.hosts.get(MAC)?.uefiBoot).toBe('signed');
    expect((await api({ uefiBoot: null })).body.uefiBoot).toBeNull();
  });
});
