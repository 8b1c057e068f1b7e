/**
 * The admin page in a real headless Chromium, on the real running appliance: log in, see a PC
 * that network-booted (through the boot endpoint), assign an image, deploy, and watch the
 * progress bar advance without a page reload while an NBD client reads the deploy export.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { PASSWORD, tinyDisk } from './helpers.js';
import { loopbackConfig } from '../lib/appliance-config.js';
import { startAppliance, type RunningAppliance } from '../../src/serve/runtime.js';
import { TEST_OPERATOR } from '../lib/actor.js';
import { setAdminPassword } from '../../src/domain/users.js';
import { diskDigest } from '../lib/disk-digest.js';
import { nullLogger } from '../../src/lib/log.js';
import { rawGo, rawSimpleRead, type RawClient } from '../nbd/helpers.js';
import { sleep } from '../lib/wait.js';

const ARTIFACTS = join(process.cwd(), 'test-artifacts', 'web');
const MAC = '52:54:00:ab:cd:01';
const MAC2 = '52:54:00:ab:cd:02';

const MiB = 1024 * 1024;
/** 12 MiB: an MBR disk whose every chunk holds data, so each read advances the progress. */
const IMAGE = ((): Buffer => {
  const d = Buffer.alloc(12 * MiB);
  tinyDisk().copy(d);
  for (let off = 0; off < d.length; off += 4096) d.writeUInt32LE(off ^ 0x5a5a5a5a, off + 512);
  return d;
})();

let app: RunningAppliance;
let dir: string;
let browser: BrowserContext;
let page: Page;
let base: string;
let profile: string;

beforeAll(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  dir = await mkdtemp(join(tmpdir(), 'netclone-browser-'));
  app = await startAppliance(loopbackConfig(dir), nullLogger());
  await setAdminPassword(app.core.db, PASSWORD);
  await writeFile(join(dir, 'win11.raw'), IMAGE);
  await app.core.commands.importImage(TEST_OPERATOR, 'win11-office', createReadStream(join(dir, 'win11.raw')), IMAGE.length, 'test import', () => undefined);
  base = `http://127.0.0.1:${app.ports.http}`;
  profile = await mkdtemp(join(tmpdir(), 'netclone-web-chromium-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 860 },
  });
  page = browser.pages()[0] ?? (await browser.newPage());
  page.on('dialog', (d) => void d.accept());
});

afterAll(async () => {
  await browser?.close();
  await app?.stop();
  if (profile) await rm(profile, { recursive: true, force: true });
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function shot(name: string, p: Page = page): Promise<void> {
  await p.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/**
 * One browser session, one technician's story, in this order: log in (every later step uses that session
 * cookie and page), a PC network-boots and appears, it is registered as "Reception 2" with an image assigned
 * and a deploy queued, that deploy runs to done while the page shows its progress, the dashboard then counts
 * what the story left (two PCs, one image, a queued capture, the events), and last the image and host pages.
 * Each step checks the page state the one before made; starting Chromium, logging in and deploying again
 * for every step would repeat the whole story each time.
 */
describe('admin page in Chromium', () => {
  it('logs in', async () => {
    const errors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    await page.goto(`${base}/hosts`);
    expect(page.url()).toContain('/login');
    await shot('01-login');
    await page.fill('input[name=password]', 'wrong-password');
    await page.click('button:has-text("Log in")');
    await expect.poll(() => page.textContent('.error')).toContain('Wrong username or password');
    await page.fill('input[name=password]', PASSWORD);
    await page.click('button:has-text("Log in")');
    await page.waitForURL(`${base}/hosts`);
    expect(await page.textContent('h1')).toContain('Hosts');
    // htmx loaded under our CSP (no inline script needed) and no CSP violations were reported.
    expect(await page.evaluate(() => typeof (window as unknown as { htmx?: unknown }).htmx)).toBe('object');
    expect(errors.filter((e) => /Content Security Policy|Refused/.test(e))).toEqual([]);
  });

  it('shows a PC that network-booted without a reload', async () => {
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));
    // The PC network-boots: iPXE asks for its script, which registers the unknown MAC.
    const script = await fetch(`${base}/boot/ipxe?mac=${MAC.replace(/:/g, '-')}&platform=efi&arch=x86_64`);
    expect(await script.text()).toContain('menu netclone');
    await page.locator(`tr[data-mac="${MAC}"]`).waitFor({ timeout: 15_000 });
    expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(42);
    await shot('02-hosts');
  });

  it('assigns an image and starts a deploy', async () => {
    await page.click(`tr[data-mac="${MAC}"] a`);
    await page.waitForURL(`${base}/hosts/${MAC}`);
    await page.fill('input[name=name]', 'Reception 2');
    await page.selectOption('select[name=assignedImage]', 'win11-office');
    await page.click('button:has-text("Register")');
    await expect.poll(() => page.textContent('#flash')).toContain('Saved Reception 2');
    expect(app.core.hosts.get(MAC)).toMatchObject({ name: 'Reception 2', assignedImage: 'win11-office' });
    await shot('03-host');
    await page.click('button:has-text("Deploy now")');
    await expect.poll(() => page.textContent('#flash')).toContain('Deploy of win11-office queued');
    const task = app.core.tasks.activeFor(MAC);
    expect(task?.state).toBe('queued');
    expect(await page.textContent('.progress')).toContain('queued');
    await shot('04-deploy-queued');
  });

  it('shows progress advancing without a reload while an NBD client reads the deploy export, then done', async () => {
    const task = app.core.tasks.activeFor(MAC);
    if (!task) throw new Error('no task');
    await page.goto(`${base}/tasks`);
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 7));

    // The PC boots the imaging client, which starts the deploy through the client API. Its DHCP
    // exchange (what the DHCP service notes) ties the MAC to its address; only then does the boot
    // script carry the task token.
    app.core.hosts.bootAddresses.note(MAC, '127.0.0.1');
    const script = await (await fetch(`${base}/boot/ipxe?mac=${MAC}&platform=efi&arch=x86_64`)).text();
    const token = /netclone\.token=([A-Za-z0-9_-]+)/.exec(script)?.[1];
    if (!token) throw new Error(`no token in:\n${script}`);
    const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const info = (await (await fetch(`${base}/api/client/v1/task?mac=${MAC}`, { headers: auth })).json()) as { imageInfo: { digest: string } };
    const start = await fetch(`${base}/api/client/v1/start`, { method: 'POST', headers: auth, body: JSON.stringify({ disk: { name: 'nvme0n1', size: 64 * MiB, logicalSectorSize: 512, serial: 'S4EWNX0R' } }) });
    const uri = ((await start.json()) as { nbd: string }).nbd;
    const { c } = await rawGo(app.ports.nbd, uri.split('/').pop() as string);
    const bar = page.locator(`#progress-${task.id} progress`);
    await bar.waitFor({ timeout: 15_000 });

    // Read the export a third at a time; after each third the bar shows more.
    const disk = Buffer.alloc(IMAGE.length);
    const readRange = async (client: RawClient, from: number, to: number): Promise<void> => {
      for (let off = from; off < to; off += MiB) (await rawSimpleRead(client, off, MiB, BigInt(off + 1))).copy(disk, off);
    };
    const seen: number[] = [];
    for (const third of [1, 2, 3]) {
      await readRange(c, ((third - 1) * IMAGE.length) / 3, (third * IMAGE.length) / 3);
      const want = task.progress.percent;
      await expect.poll(async () => Number(await bar.getAttribute('value')), { timeout: 15_000 }).toBe(want);
      seen.push(want);
      await sleep(1100); // lets the service measure a transfer rate between samples
    }
    expect(seen[0]).toBeGreaterThan(0);
    expect(seen[1]).toBeGreaterThan(seen[0]);
    expect(seen[2]).toBeGreaterThan(seen[1]);
    expect(disk.equals(IMAGE)).toBe(true);
    // Every chunk of this image holds data: what crossed the wire is the whole image, and the page says so.
    expect(task.progress.wireBytes).toBe(IMAGE.length);
    await expect.poll(() => page.locator(`#progress-${task.id} .covered`).textContent(), { timeout: 15_000 }).toBe("read 12.0 MiB of 12.0 MiB of the image's data, 12.0 MiB on the wire");
    expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(7);
    await shot('05-tasks-running');
    await page.setViewportSize({ width: 390, height: 844 });
    await shot('06-tasks-phone');
    await page.setViewportSize({ width: 1280, height: 860 });
    c.destroy();

    // The client verified the disk and reports the digest; the task ends done.
    const digest = diskDigest(disk, disk.length, MiB);
    expect(digest).toBe(info.imageInfo.digest);
    const result = await fetch(`${base}/api/client/v1/result`, { method: 'POST', headers: auth, body: JSON.stringify({ ok: true, message: 'verified', digest }) });
    expect(await result.json()).toMatchObject({ state: 'done' });
    await expect.poll(() => page.locator('#active-tasks').textContent(), { timeout: 15_000 }).toContain('Nothing is running');
    await page.goto(`${base}/tasks/${task.id}`);
    expect(await page.textContent('.progress')).toContain('done');
    await shot('07-task-done');
  });

  it('renders the dashboard: services, store space, inventory counts, running tasks and recent events', async () => {
    // Beside the registered PC from the deploy above: a PC that only network-booted, and a task in the queue.
    await app.core.hosts.sighted({ mac: MAC2, ip: '10.0.0.52', firmware: 'bios' });
    const queued = await app.core.tasks.create({ kind: 'capture', mac: MAC, image: 'reception-2-backup' });
    await page.goto(`${base}/`);
    expect(await page.textContent('h1')).toBe('Dashboard');

    const services = (await page.locator('ul.services li').allTextContents()).map((t) => t.replace(/\s+/g, ' ').trim());
    expect(services).toEqual(expect.arrayContaining([
      expect.stringMatching(/^HTTP running admin page on http:\/\/127\.0\.0\.1:/),
      `NBD running 127.0.0.1:${app.ports.nbd}`,
      expect.stringMatching(/^DHCP off /),
    ]));

    const store = page.locator('section.card', { has: page.locator('h2', { hasText: 'Image store' }) });
    const used = Number(await store.locator('progress').getAttribute('value'));
    expect(Number.isInteger(used) && used >= 0 && used <= 100).toBe(true);
    expect(await store.textContent()).toContain(`free of`);
    expect(await store.textContent()).toContain(`(${used} % used)`);
    expect(await store.textContent()).toContain(app.core.config.imagesDir);

    const inventory = page.locator('section.card', { has: page.locator('h2', { hasText: 'Inventory' }) });
    const inventoryText = (await inventory.textContent())?.replace(/\s+/g, ' ');
    expect(inventoryText).toContain('2 PCs · 1 new, not registered');
    expect(inventoryText).toContain('1 image');
    expect(await inventory.locator('a[href="/hosts"]').textContent()).toBe('2 PCs');
    expect(await inventory.locator('a[href="/images"]').textContent()).toBe('1 image');

    // The queued capture, with the PC's name, and nothing else (the deploy above is done).
    const running = page.locator('#active-tasks');
    expect(await running.textContent()).toContain('reception-2-backup');
    expect(await running.textContent()).toContain('Reception 2');
    expect(await running.textContent()).not.toContain('win11-office');

    const events = (await page.locator('ol.events li').allTextContents()).map((t) => t.replace(/\s+/g, ' '));
    expect(events[0]).toContain(`capture task for ${MAC} with image reception-2-backup queued`);
    expect(events.some((e) => e.includes(`new PC ${MAC2} seen at network boot`))).toBe(true);
    expect(events.some((e) => e.includes(`deploy win11-office on ${MAC}`))).toBe(true);
    await shot('08-dashboard');
    await app.core.tasks.cancel(queued.id);
  });

  it('verifies an image and issues an nbd:// URL from its page; the host page fits a phone', async () => {
    await page.goto(`${base}/images/win11-office`);
    await page.click('button:has-text("Verify now")');
    await expect.poll(() => page.textContent('#verify-box'), { timeout: 15_000 }).toContain('verified');
    await page.click('button:has-text("Get nbd:// URL")');
    await expect.poll(() => page.textContent('#url-box')).toContain('nbd://');
    await shot('09-image');
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${base}/hosts/${MAC}`);
    expect(await page.textContent('h1')).toContain('Reception 2');
    // Nothing is wider than the phone's screen: no sideways scrolling.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await shot('10-host-phone');
  });
});
