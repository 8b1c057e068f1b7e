/**
 * The admin page in a real headless Chromium: log in, see a PC that network-booted, assign an
 * image, deploy, and watch the progress bar advance without a page reload.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { makeHarness, PASSWORD, type Harness } from './helpers.js';

const ARTIFACTS = join(process.cwd(), 'test-artifacts', 'web');
const MAC = '52:54:00:ab:cd:01';

let h: Harness;
let browser: BrowserContext;
let page: Page;
let base: string;
let profile: string;

beforeAll(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  h = await makeHarness({ images: ['win11-office'] });
  await h.app.listen({ host: '127.0.0.1', port: 0 });
  const addr = h.app.server.address();
  if (!addr || typeof addr === 'string') throw new Error('no address');
  base = `http://127.0.0.1:${addr.port}`;
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
  await h?.close();
  if (profile) await rm(profile, { recursive: true, force: true });
});

async function shot(name: string, p: Page = page): Promise<void> {
  await p.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

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
    await h.ctx.hosts.sighted({ mac: MAC, ip: '192.168.50.23', firmware: 'uefi', arch: 'x86_64' });
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
    expect(h.ctx.hosts.get(MAC)).toMatchObject({ name: 'Reception 2', assignedImage: 'win11-office' });
    await shot('03-host');
    await page.click('button:has-text("Deploy now")');
    await expect.poll(() => page.textContent('#flash')).toContain('Deploy of win11-office queued');
    const task = h.ctx.tasks.activeFor(MAC);
    expect(task?.state).toBe('queued');
    expect(await page.textContent('.progress')).toContain('queued');
    await shot('04-deploy-queued');
  });

  it('shows progress advancing without a reload, then done', async () => {
    const task = h.ctx.tasks.activeFor(MAC);
    if (!task) throw new Error('no task');
    await page.goto(`${base}/tasks`);
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 7));
    await h.ctx.tasks.beginBoot(task);
    const total = 8 * 1024 ** 3;
    await h.ctx.tasks.markRunning(task, { name: 'nvme0n1', size: total, logicalSectorSize: 512, serial: 'S4EWNX0R' }, '192.168.50.23', total);
    const bar = page.locator(`#progress-${task.id} progress`);
    await bar.waitFor({ timeout: 15_000 });
    const seen: number[] = [];
    for (const fraction of [0.1, 0.35, 0.6]) {
      const want = h.ctx.tasks.progress(task, Math.floor(total * fraction)).percent;
      await expect.poll(async () => Number(await bar.getAttribute('value')), { timeout: 15_000 }).toBe(want);
      seen.push(Number(await bar.getAttribute('value')));
      await new Promise((r) => setTimeout(r, 1100)); // lets the service measure a transfer rate between samples
    }
    expect(seen[0]).toBeGreaterThan(0);
    expect(seen[1]).toBeGreaterThan(seen[0]);
    expect(seen[2]).toBeGreaterThan(seen[1]);
    h.ctx.tasks.progress(task, Math.floor(total * 0.75));
    await expect.poll(() => page.textContent(`#progress-${task.id}`), { timeout: 15_000 }).toMatch(/MB\/s/);
    expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(7);
    await shot('05-tasks-running');
    await page.setViewportSize({ width: 390, height: 844 });
    await shot('06-tasks-phone');
    await page.setViewportSize({ width: 1280, height: 860 });
    await h.ctx.tasks.succeed(task, { version: null, digest: null, bytesOnWire: total }, 'deploy verified');
    await expect.poll(() => page.locator('#active-tasks').textContent(), { timeout: 15_000 }).toContain('Nothing is running');
    await page.goto(`${base}/tasks/${task.id}`);
    expect(await page.textContent('.progress')).toContain('done');
    await shot('07-task-done');
  });

  it('renders the dashboard and the image page', async () => {
    await page.goto(`${base}/`);
    await shot('08-dashboard');
    await page.goto(`${base}/images/win11-office`);
    await page.click('button:has-text("Verify now")');
    await expect.poll(() => page.textContent('#verify-box'), { timeout: 15_000 }).toContain('verified');
    await page.click('button:has-text("Get nbd:// URL")');
    await expect.poll(() => page.textContent('#url-box')).toContain('nbd://');
    await shot('09-image');
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${base}/hosts/${MAC}`);
    await shot('10-host-phone');
  });
});
