/**
 * The imaging client's menu mode (boot/client/lib/menu.sh) under busybox ash, the initramfs shell,
 * against the real server routes listening on loopback: the technician's answers come on stdin as
 * they would from the PC's console, and the client must end up with a task id and token the client
 * API accepts, exactly as if they had come on the kernel command line.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { makeBootHarness, type BootHarness } from '../web/boot-harness.js';
import { PASSWORD } from '../web/helpers.js';
import { libDir } from './helpers.js';
import { run } from '../lib/run.js';

const MAC = '52:54:00:ab:cd:01';
const tmp = mkdtempSync(join(tmpdir(), 'ncclient-menu-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let h: BootHarness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

interface MenuRun {
  readonly rc: number;
  readonly task: string;
  readonly token: string;
  readonly err: string;
  /** What the technician saw on the console. */
  readonly screen: string;
  /** GET task with the token, made by the client's own api_get after the menu (empty when there was no task). */
  readonly fetched: string;
}

/** Starts the real app on loopback and runs menu_run in busybox ash with `answers` as its console input. */
const listening = new WeakMap<BootHarness, string>();

/** `idleSeconds`: NC_MENU_IDLE; `keepOpen`: the console stays open after the answers, as a real one does. */
async function runMenu(b: BootHarness, answers: string[], options: { idleSeconds?: number; keepOpen?: boolean } = {}): Promise<MenuRun> {
  const address = listening.get(b) ?? (await b.app.listen({ host: '127.0.0.1', port: 0 }));
  listening.set(b, address);
  const server = address.replace(/^http:\/\//, '');
  const libs = ['log', 'json', 'api', 'menu'].map((f) => `. ${join(libDir, f)}.sh`).join('\n');
  const script = `${libs}
menu_run; rc=$?
fetched=""
[ "$rc" = 0 ] && fetched=$(api_get "task?mac=$MAC")
printf '\\n@@rc=%s\\n@@task=%s\\n@@token=%s\\n@@err=%s\\n@@fetched=%s\\n' "$rc" "$NC_TASK" "$NC_TOKEN" "$MENU_ERR" "$fetched"
`;
  const { code, stdout: out, stderr: err } = await run('busybox', ['sh', '-c', script], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NC_SERVER: server, MAC, NC_API_ERR: join(tmp, 'api.err'), NC_API_TIMEOUT: '20', TMPDIR: tmp, NC_MENU_IDLE: String(options.idleSeconds ?? 600) },
    input: answers.map((a) => `${a}\n`).join(''),
    keepStdinOpen: options.keepOpen,
    timeoutMs: 60_000,
  });
  if (code !== 0) throw new Error(`the menu script exited ${code}:\n${out}\n${err}`);
  const field = (name: string): string => new RegExp(`^@@${name}=(.*)$`, 'm').exec(out)?.[1] ?? '';
  return { rc: Number(field('rc')), task: field('task'), token: field('token'), err: field('err'), fetched: field('fetched'), screen: out.slice(0, out.lastIndexOf('\n@@rc=')) };
}

describe('client menu mode (menu.sh) against the real server', () => {
  it('logs in, deploys the chosen image after YES, and ends with a task token the client API takes', async () => {
    h = await makeBootHarness({ images: ['golden-win11', 'lab'] });
    // The password has spaces: it must reach the server whole.
    const r = await runMenu(h, ['admin', PASSWORD, '2', '1', 'YES']);
    expect(r.rc, r.screen + r.err).toBe(0);
    expect(r.screen).toContain(`this PC is ${MAC}`);
    expect(r.screen).toContain('User: ');
    expect(r.screen).toContain('Password: ');
    expect(r.screen).not.toContain(PASSWORD);
    // The prompts end without a newline (a terminal's echo of the answer adds it): the list follows "Choice: ".
    const listed = / {2}1\) (\S+)$/m.exec(r.screen)?.[1];
    expect(['golden-win11', 'lab']).toContain(listed);
    const task = h.tasks.activeFor(MAC);
    expect(task).toMatchObject({ id: r.task, kind: 'deploy', image: listed, state: 'booting', clientIp: '127.0.0.1' });
    expect(h.tasks.byToken(r.token)).toBe(task);
    // The rest of init goes on with them as with kernel-line values: GET task answers this task.
    expect(JSON.parse(r.fetched)).toMatchObject({ id: r.task, kind: 'deploy', image: listed });
  });

  it('captures under the default name (from the PC) or the one typed', async () => {
    h = await makeBootHarness();
    const r = await runMenu(h, ['admin', PASSWORD, '1', '']);
    expect(r.rc, r.screen + r.err).toBe(0);
    expect(r.screen).toContain('Image name [pc-525400abcd01]: ');
    expect(h.tasks.get(r.task)).toMatchObject({ kind: 'capture', image: 'pc-525400abcd01', mac: MAC });
    expect(h.tasks.byToken(r.token)?.id).toBe(r.task);
    await h.tasks.cancel(r.task);

    await h.hosts.add(MAC, 'Front desk', { rename: true });
    const fromName = await runMenu(h, ['admin', PASSWORD, '1', '']);
    expect(fromName.rc, fromName.screen).toBe(0);
    expect(fromName.screen).toContain('Image name [Front-desk]: ');
    expect(h.tasks.get(fromName.task)).toMatchObject({ kind: 'capture', image: 'Front-desk' });
    await h.tasks.cancel(fromName.task);

    const typed = await runMenu(h, ['admin', PASSWORD, '1', 'desk-2026']);
    expect(typed.rc, typed.screen).toBe(0);
    expect(h.tasks.get(typed.task)).toMatchObject({ kind: 'capture', image: 'desk-2026' });
  });

  it('asks again after a wrong password and goes on with the right one', async () => {
    h = await makeBootHarness();
    const r = await runMenu(h, ['admin', 'not the password', 'admin', PASSWORD, '1', '']);
    expect(r.rc, r.screen + r.err).toBe(0);
    expect(r.screen.match(/Wrong username or password\./g)).toHaveLength(1);
    expect(h.tasks.get(r.task)).toMatchObject({ kind: 'capture', mac: MAC });
  });

  it('gives up cleanly after three wrong passwords: no task, nothing registered, the reason for the screen', async () => {
    h = await makeBootHarness({ images: ['golden-win11'] });
    const r = await runMenu(h, ['admin', 'wrong 1', 'admin', 'wrong 2', 'admin', 'wrong 3', 'admin', PASSWORD, '2', '1', 'YES']);
    expect(r.rc).toBe(1);
    expect(r.err).toBe('no valid login after 3 tries; nothing was changed');
    expect(r.screen.match(/Wrong username or password\./g)).toHaveLength(3);
    expect(r.task).toBe('');
    expect(r.token).toBe('');
    expect(r.screen).not.toContain('golden-win11');
    expect(h.tasks.list()).toEqual([]);
  });

  it('registers the PC and asks for a reboot', async () => {
    h = await makeBootHarness();
    const r = await runMenu(h, ['admin', PASSWORD, '3']);
    expect(r.rc, r.screen + r.err).toBe(2);
    expect(r.screen).toContain('This PC is registered.');
    expect(h.hosts.get(MAC)?.registered).toBe(true);
    expect(h.tasks.list()).toEqual([]);
  });

  it('offers the task that waits for the PC and starts it', async () => {
    h = await makeBootHarness();
    const queued = await h.tasks.create({ kind: 'capture', mac: MAC, image: 'from-the-page' });
    const r = await runMenu(h, ['admin', PASSWORD, '4']);
    expect(r.rc, r.screen + r.err).toBe(0);
    expect(r.screen).toContain('4) Start the waiting capture of image from-the-page');
    expect(r.task).toBe(queued.id);
    expect(h.tasks.byToken(r.token)).toBe(queued);
    expect(JSON.parse(r.fetched)).toMatchObject({ id: queued.id, image: 'from-the-page' });
  });

  it('changes nothing when the deploy is not confirmed with YES, then reboots on 0', async () => {
    h = await makeBootHarness({ images: ['golden-win11'] });
    const r = await runMenu(h, ['admin', PASSWORD, '2', '1', 'yes', '0']);
    expect(r.rc).toBe(2);
    expect(r.screen).toContain('Not confirmed; nothing was changed.');
    expect(h.tasks.list()).toEqual([]);
  });

  it('shows a refusal and lets the technician choose again with the same login', async () => {
    h = await makeBootHarness();
    const r = await runMenu(h, ['admin', PASSWORD, '1', 'bad/name', '1', 'good-name']);
    expect(r.rc, r.screen + r.err).toBe(0);
    expect(r.screen).toMatch(/Refused: .*not a valid image name/);
    expect(h.tasks.get(r.task)).toMatchObject({ kind: 'capture', image: 'good-name' });
  });

  it('asks for a reboot, with the reason, when the console closes', async () => {
    h = await makeBootHarness();
    const r = await runMenu(h, []);
    expect(r.rc).toBe(2);
    expect(r.err).toBe('no answer on the console for 600 s; nothing was changed');
    expect(h.tasks.list()).toEqual([]);
  });

  it('asks for a reboot when nobody answers a prompt within NC_MENU_IDLE, changing nothing', async () => {
    h = await makeBootHarness({ images: ['golden-win11'] });
    // Logged in and at the image list, then the technician walks away; the console stays open.
    const r = await runMenu(h, ['admin', PASSWORD, '2'], { idleSeconds: 1, keepOpen: true });
    expect(r.rc).toBe(2);
    expect(r.screen).toContain('Image number: ');
    expect(r.err).toBe('no answer on the console for 1 s; nothing was changed');
    expect(h.tasks.list()).toEqual([]);
  });
});
