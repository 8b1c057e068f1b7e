/**
 * A technician's morning in a real Chromium (issue 13): log in, read the dashboard's protection
 * view, open a PC from it, pick an older version in the restore form, deploy it, and follow the
 * task. Then the page's own promises: a refused form leaves the address bar on its page, and
 * Cancel returns to the page it was pressed on.
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
import { nullLogger } from '../../src/lib/log.js';

const ARTIFACTS = join(process.cwd(), 'test-artifacts', 'web');
const GOOD = '52:54:00:ab:ee:01';
const FAILING = '52:54:00:ab:ee:02';

let app: RunningAppliance;
let dir: string;
let profile: string;
let browser: BrowserContext;
let page: Page;
let base: string;
const dialogs: string[] = [];

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `walk-${name}.png`), fullPage: true });
}

/** A capture that ran and ended the way a PC's client would have made it end. */
async function finishedCapture(mac: string, image: string, outcome: { version: number } | { reason: string }): Promise<void> {
  const task = await app.core.tasks.create({ kind: 'capture', mac, image });
  await app.core.tasks.beginBoot(task, '10.0.0.50');
  await app.core.tasks.markRunning(task, { name: 'sda', size: 3 << 20, logicalSectorSize: 512, serial: 'S' }, '10.0.0.50', 3 << 20);
  if ('version' in outcome) await app.core.tasks.succeed(task, { version: outcome.version, digest: null, bytesOnWire: 1 << 20 }, 'captured');
  else await app.core.tasks.fail(task, outcome.reason);
}

beforeAll(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  dir = await mkdtemp(join(tmpdir(), 'netclone-walk-'));
  app = await startAppliance(loopbackConfig(dir), nullLogger());
  await setAdminPassword(app.core.db, PASSWORD);
  // Two versions of one image: the walk restores the older one.
  for (const fill of [1, 2]) {
    const disk = tinyDisk();
    disk.fill(fill, 2 << 20, (2 << 20) + 4096);
    await writeFile(join(dir, `v${fill}.raw`), disk);
    await app.core.commands.importImage(TEST_OPERATOR, 'reception', createReadStream(join(dir, `v${fill}.raw`)), disk.length, `test v${fill}`, () => undefined);
  }
  await app.core.commands.addHost(TEST_OPERATOR, GOOD, 'Reception 2');
  await app.core.commands.addHost(TEST_OPERATOR, FAILING, 'Back office');
  for (const mac of [GOOD, FAILING]) await app.core.commands.addSchedule(TEST_OPERATOR, { mac, capture: 'reception', daily: '02:00' });
  await finishedCapture(GOOD, 'reception', { version: 2 });
  await finishedCapture(FAILING, 'reception', { reason: 'the PC stopped responding during the transfer' });
  base = `http://127.0.0.1:${app.ports.http}`;
  profile = await mkdtemp(join(tmpdir(), 'netclone-walk-chromium-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
  });
  page = browser.pages()[0] ?? (await browser.newPage());
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    void d.accept();
  });
});

afterAll(async () => {
  await browser?.close();
  await app?.stop();
  if (profile) await rm(profile, { recursive: true, force: true });
  if (dir) await rm(dir, { recursive: true, force: true });
});

/**
 * One session, in order: each step starts on the page the one before left (the login, then the
 * dashboard, the host page it links to, the task the deploy made).
 */
describe('a technician restores an older version, in Chromium', () => {
  it('logs in and lands on the dashboard', async () => {
    await page.goto(`${base}/`);
    expect(page.url()).toContain('/login');
    await page.fill('input[name=password]', PASSWORD);
    await page.click('button:has-text("Log in")');
    await page.waitForURL(`${base}/`);
    expect(await page.textContent('h1')).toBe('Dashboard');
  });

  it('reads each PC\'s protection on the dashboard', async () => {
    const view = page.locator('#protection');
    await view.waitFor();
    const good = view.locator(`tr[data-mac="${GOOD}"]`);
    expect(await good.textContent()).toContain('Protected');
    expect((await good.textContent())?.replace(/\s+/g, ' ')).toContain('reception v2');
    const failing = (await view.locator(`tr[data-mac="${FAILING}"]`).textContent())?.replace(/\s+/g, ' ');
    expect(failing).toContain('No backup yet');
    expect(failing).toContain('the PC stopped responding during the transfer');
    await shot('01-protection');
  });

  it('opens the PC from the protection view and picks version 1 in the restore form', async () => {
    await page.click(`#protection tr[data-mac="${GOOD}"] a[href="/hosts/${GOOD}"]`);
    await page.waitForURL(`${base}/hosts/${GOOD}`);
    expect(await page.textContent('h1')).toContain('Reception 2');
    const form = page.locator('#deploy-form');
    // Choosing the image re-renders the form with that image's versions, newest first and preselected.
    await form.locator('select[name=image]').selectOption('reception');
    await expect.poll(() => form.locator('select[name=version] option').count()).toBe(2);
    const versions = await form.locator('select[name=version] option').allTextContents();
    expect(versions[0]).toMatch(/^newest: v2 · /);
    expect(versions[1]).toMatch(/^v1 · /);
    await form.locator('select[name=version]').selectOption('1');
    await expect.poll(() => page.locator('#deploy-form select[name=version]').inputValue()).toBe('1');
    // The re-render keeps the page where it was.
    expect(page.url()).toBe(`${base}/hosts/${GOOD}`);
    await shot('02-version-picker');
  });

  it('deploys version 1 and sees the task', async () => {
    await page.locator('#deploy-form button:has-text("Deploy now")').click();
    await expect.poll(() => page.textContent('#flash')).toContain('Deploy of reception queued');
    expect(dialogs.at(-1)).toContain('Deploy onto Reception 2?');
    expect(page.url()).toBe(`${base}/hosts/${GOOD}`);
    const task = app.core.tasks.activeFor(GOOD);
    expect(task).toMatchObject({ kind: 'deploy', image: 'reception', version: 1, state: 'queued' });
    if (!task) throw new Error('no task');
    await page.click('section.card a:has-text("details")');
    await page.waitForURL(`${base}/tasks/${task.id}`);
    expect(await page.textContent('h1')).toBe('Deploy of reception');
    expect(await page.locator('dl.facts dt:has-text("Version") + dd').textContent()).toBe('version 1');
    expect(await page.textContent('.progress')).toContain('queued');
    await shot('03-task');
  });

  it('Cancel on the host page returns to the host page (not to the task)', async () => {
    const task = app.core.tasks.activeFor(GOOD);
    if (!task) throw new Error('no task');
    await page.goto(`${base}/hosts/${GOOD}`);
    await page.click('section.card button:has-text("Cancel")');
    await expect.poll(() => page.textContent('#flash')).toContain('cancelled');
    expect(page.url()).toBe(`${base}/hosts/${GOOD}`);
    expect(app.core.tasks.get(task.id)?.state).toBe('cancelled');
  });

  it('searches the hosts list as it types; the address bar keeps the search for a reload', async () => {
    await page.goto(`${base}/hosts`);
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 5));
    expect(await page.locator('tr[data-mac]').count()).toBe(2);
    await page.fill('input[name=q]', 'recep');
    await expect.poll(() => page.locator('tr[data-mac]').count()).toBe(1);
    expect(await page.locator('tr[data-mac]').getAttribute('data-mac')).toBe(GOOD);
    await expect.poll(() => page.url()).toBe(`${base}/hosts?q=recep&model=&group=&state=`);
    // Swapped in place, not a new page.
    expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(5);
    await page.reload();
    expect(await page.locator('tr[data-mac]').count()).toBe(1);
    expect(await page.inputValue('input[name=q]')).toBe('recep');
    await shot('04-search');
  });

  it('a refused form leaves the address bar on its page, and a reload shows that page', async () => {
    await page.goto(`${base}/groups`);
    await page.selectOption('form[action="/groups/assign"] select[name=mac]', GOOD);
    await page.fill('form[action="/groups/assign"] input[name=group]', '!! not a group');
    await page.click('form[action="/groups/assign"] button');
    await expect.poll(() => page.textContent('#flash')).toContain('is not a group name');
    expect(page.url()).toBe(`${base}/groups`);
    const again = await page.reload();
    expect(again?.status()).toBe(200);
    expect(await page.textContent('h1')).toBe('Groups');
    await shot('05-refused-form');
  });
});
