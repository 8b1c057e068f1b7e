/**
 * The host page's deploy ("restore") and capture forms (issue 13): the version picker (newest
 * preselected, each version with its date and size), the target disk from the PC's reported disks,
 * "power off afterwards", the smaller-disk warning, and the hardware-mismatch confirmation.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { HardwareReport } from '../../src/domain/database.js';
import { importFile } from '../../src/imaging/image-import.js';
import { writeVersionOrigin } from '../../src/imaging/version-origin.js';
import { login, makeHarness, tinyDisk, type Harness } from './helpers.js';

let h: Harness;
let agent: Awaited<ReturnType<typeof login>>['agent'];
let csrf: string;

const MAC = '52:54:00:00:9d:01';
const MiB = 1024 * 1024;

function hardware(vendor: string, model: string): HardwareReport {
  const disk = (name: string, size: number, serial: string) => ({ name, size, model: 'SSD', serial, logicalSectorSize: 512, physicalSectorSize: 512, rotational: false, removable: false, transport: 'nvme' });
  return { dmi: { vendor, model, serial: 'X', uuid: 'u' }, disks: [disk('nvme0n1', 64 * MiB, 'BIG-1'), disk('sda', MiB, 'SMALL-2')], nics: [], reportedAt: new Date().toISOString() };
}

/** The deploy form of a host page. */
function deployFormOf(page: string): string {
  const m = /<form method="post" action="\/hosts\/[^"]+\/deploy"[\s\S]*?<\/form>/.exec(page);
  if (!m) throw new Error('no deploy form on the page');
  return m[0];
}

beforeAll(async () => {
  h = await makeHarness({ images: ['office'] });
  ({ agent, csrf } = await login(h.app));
  // A second version of "office", captured from a Lenovo.
  const file = join(h.dir, 'office-2.raw');
  const disk = tinyDisk();
  disk.fill(9, 2 * MiB, 2 * MiB + 1000);
  await writeFile(file, disk);
  await importFile(h.store, 'office', file, { source: 'second' });
  await writeVersionOrigin(h.store, 'office', 2, { vendor: 'LENOVO', model: '20XW' });
  await h.ctx.hosts.register(MAC);
  await h.ctx.hosts.setHardware(MAC, hardware('Dell Inc.', 'OptiPlex 7090'));
});
afterAll(async () => {
  await h.close();
});

describe('the deploy form', () => {
  it('offers every version with date and size, the newest preselected, and the PC\'s disks by serial', async () => {
    const form = deployFormOf((await agent.get(`/hosts/${MAC}?image=office`).expect(200)).text);
    expect(form).toMatch(/<select name="version"[^>]*>\s*<option value="" selected>newest: v2 · \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · [\d.]+ (KiB|MiB) of data on a 3\.0 MiB disk<\/option>\s*<option value="1">v1 · /);
    expect(form).toMatch(/<option value="">the first disk \(nvme0n1 · 64\.0 MiB · SSD \(S\/N BIG-1\)\)<\/option>/);
    expect(form).toContain('<option value="SMALL-2">sda · 1.0 MiB · SSD (S/N SMALL-2)</option>');
    expect(form).toContain('name="after" value="poweroff"');
    expect(form).toContain('data-disk="fits"');
  });

  it('warns of another PC model for the version that has one, not for the version without', async () => {
    const newest = deployFormOf((await agent.get(`/hosts/${MAC}?image=office`).expect(200)).text);
    expect(newest).toMatch(/captured from a <strong>LENOVO 20XW<\/strong>; this PC is a <strong>Dell Inc\. OptiPlex 7090<\/strong>/);
    expect(newest).toContain('name="force" value="on"');
    const v1 = deployFormOf((await agent.get(`/hosts/${MAC}?image=office&version=1`).expect(200)).text);
    expect(v1).toMatch(/<option value="1" selected>v1 · /);
    expect(v1).not.toContain('data-mismatch');
  });

  it('says a smaller disk is too small by how much (an image without a layout cannot shrink)', async () => {
    const form = deployFormOf((await agent.get(`/hosts/${MAC}?image=office&version=1&diskSerial=SMALL-2`).expect(200)).text);
    expect(form).toContain('<option value="SMALL-2" selected>');
    expect(form).toMatch(/data-disk="too-small">Disk sda \(1\.0 MiB\) is too small by 2\.0 MiB: the image needs a disk of at least 3\.0 MiB/);
  });

  it('queues the version, disk and power-off it was sent with', async () => {
    await agent.post(`/hosts/${MAC}/deploy`).type('form').send({ _csrf: csrf, image: 'office', version: '1', diskSerial: 'BIG-1', after: 'poweroff' }).expect(303);
    const task = h.ctx.tasks.activeFor(MAC);
    expect(task).toMatchObject({ kind: 'deploy', image: 'office', version: 1, diskSerial: 'BIG-1', after: 'poweroff' });
    if (task) await h.ctx.tasks.cancel(task.id);
  });

  it('sends a deploy onto another model back to the filled-in form with the warning; "Deploy anyway" queues it', async () => {
    const refused = await agent.post(`/hosts/${MAC}/deploy`).type('form').send({ _csrf: csrf, image: 'office', diskSerial: 'BIG-1', after: 'poweroff' }).expect(303);
    expect(h.ctx.tasks.activeFor(MAC)).toBeUndefined();
    const back = refused.headers.location as string;
    expect(back).toMatch(new RegExp(`^/hosts/${MAC}\\?image=office&diskSerial=BIG-1&after=poweroff#deploy-form$`));
    const page = (await agent.get(back.replace(/#.*/, '')).expect(200)).text;
    expect(page).toContain('another PC model');
    const form = deployFormOf(page);
    expect(form).toContain('data-mismatch="yes"');
    expect(form).toContain('<option value="BIG-1" selected>');
    expect(form).toMatch(/name="after" value="poweroff" checked/);

    await agent.post(`/hosts/${MAC}/deploy`).type('form').send({ _csrf: csrf, image: 'office', diskSerial: 'BIG-1', after: 'poweroff', force: 'on' }).expect(303);
    const task = h.ctx.tasks.activeFor(MAC);
    expect(task).toMatchObject({ kind: 'deploy', image: 'office', diskSerial: 'BIG-1' });
    expect(task?.version).toBeUndefined();
    if (task) await h.ctx.tasks.cancel(task.id);
  });
});

describe('the capture form', () => {
  it('takes the target disk and power-off', async () => {
    const page = (await agent.get(`/hosts/${MAC}`).expect(200)).text;
    const form = /<form method="post" action="\/hosts\/[^"]+\/capture"[\s\S]*?<\/form>/.exec(page)?.[0] ?? '';
    expect(form).toContain('<option value="SMALL-2">');
    await agent.post(`/hosts/${MAC}/capture`).type('form').send({ _csrf: csrf, image: 'fresh', diskSerial: 'SMALL-2', after: 'poweroff' }).expect(303);
    expect(h.ctx.tasks.activeFor(MAC)).toMatchObject({ kind: 'capture', image: 'fresh', diskSerial: 'SMALL-2', after: 'poweroff' });
  });
});
